"""The stabilize stage: the skull's pose per frame from a session's registered or tracked meshes
(reconstruct.stabilize), the meshes with that rigid motion removed, and the comparison with
plain all-vertex Procrustes.

Input (first found): SESSION/tracking/meshes.npz (+ tracking/params.npz: its head model gives
the rigidity prior and the head frame), else SESSION/registration/meshes.npz.
Output SESSION/stabilize/:
    params.npz    world_from_head [T, 4, 4], plain_world_from_head [T, 4, 4] (baseline),
                  residual_m [T], rigidity [V], reference [V, 3] (head frame)
    meshes.npz    vertices [T, V, 3] in the head frame (stabilized), faces
    jitter.png    skull motion per frame: ours vs plain Procrustes (and the truth when known)
    summary.json  frames, source, residuals, and errors against ground_truth/ when present
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.reconstruct.stabilize", "headcap.reconstruct.sequence_plots", "headcap.pipeline.stages.stabilize")
SOURCES = ("tracking", "registration")


@dataclass(frozen=True)
class StabilizeStageConfig:
    irls_iterations: int = 12
    """Reweighting iterations of the per-frame robust Procrustes."""
    rounds: int = 3
    """Sequence rounds (reference and per-vertex rigidity re-estimated between rounds)."""
    robust_scale: float = 2.0
    """Geman-McClure scale in units of the robust residual scale."""
    smooth_frames: float = 0.0
    """Temporal Gaussian on the poses (standard deviation in frames; 0: none)."""
    source: str = "auto"
    """Meshes to stabilize: auto (tracking, else registration) | tracking | registration."""


def find_source(session_root: Path, source: str = "auto") -> Path:
    """The meshes.npz the stage reads; ValueError naming what is missing."""
    names = SOURCES if source == "auto" else (source,)
    if source not in ("auto",) + SOURCES:
        raise ValueError(f"stabilize: field 'source' must be auto, tracking or registration, got {source!r}")
    for name in names:
        path = Path(session_root) / name / "meshes.npz"
        if path.is_file():
            return path
    raise ValueError(f"stabilize: {session_root}: no meshes to stabilize (looked for "
                     + ", ".join(f"{n}/meshes.npz" for n in names) + "); run `headcap track` first")


def stabilize_stage(config: StabilizeStageConfig, session_root: Path, name: str = "stabilize") -> Stage:
    mesh_path = find_source(session_root, config.source)
    files = [mesh_path]
    params = mesh_path.parent / "params.npz"
    if params.is_file():
        files.append(params)
    gt = Path(session_root) / "ground_truth" / "params.npz"
    if gt.is_file():
        files.append(gt)

    def run(ctx: StageContext) -> dict:
        return stabilize_into(ctx, Path(session_root), mesh_path)

    return Stage(name=name, run=run, config=config, files=tuple(files),
                 outputs=("params.npz", "meshes.npz", "jitter.png", "summary.json"), code=CODE,
                 description="skull pose per frame (robust Procrustes), stabilized meshes")


def _head_prior(params_path: Path, num_vertices: int):
    """(rigidity prior [V], reference [V, 3] in the head frame) from a tracking params.npz, or
    (None, None) when there is none or its model does not match."""
    import torch

    from headcap.core.fileio import read_npz
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.stabilize import rigidity_prior

    if not params_path.is_file():
        return None, None
    params = read_npz(params_path)
    if "head_spec" not in params or "identity" not in params:
        return None, None
    model = load_head_model(str(np.asarray(params["head_spec"]).reshape(-1)[0]))
    if model.num_vertices != num_vertices:
        return None, None
    identity = torch.as_tensor(np.asarray(params["identity"], np.float64))[None]
    with torch.no_grad():
        neutral = model.forward(identity=identity if model.num_identity else None).vertices[0].double().numpy()
    return rigidity_prior(model), neutral


def stabilize_into(ctx: StageContext, session_root: Path, mesh_path: Path) -> dict:
    from headcap.core.fileio import read_npz, write_json
    from headcap.reconstruct.sequence_plots import jitter, plot_series
    from headcap.reconstruct.stabilize import (StabilizeConfig, plain_procrustes, skull_pose_errors,
                                               stabilize_sequence, stabilized_vertices)
    from headcap.studio.writer import write_npz

    config: StabilizeStageConfig = ctx.config
    meshes = read_npz(mesh_path)
    if "vertices" not in meshes:
        raise ValueError(f"{mesh_path}: field 'vertices' missing (expected [T, V, 3] world metres)")
    vertices = np.asarray(meshes["vertices"], np.float64)
    if vertices.ndim != 3 or vertices.shape[2] != 3:
        raise ValueError(f"{mesh_path}: field 'vertices': expected [T, V, 3], got {vertices.shape}")
    prior, reference = _head_prior(mesh_path.parent / "params.npz", vertices.shape[1])
    algo = StabilizeConfig(**{k: v for k, v in asdict(config).items() if k != "source"})
    result = stabilize_sequence(vertices, reference=reference, prior=prior, config=algo)
    plain = plain_procrustes(vertices, reference)
    stab = stabilized_vertices(vertices, result.world_from_head)
    write_npz(ctx.work_dir / "params.npz", world_from_head=result.world_from_head,
              plain_world_from_head=plain, residual_m=result.residual_m, rigidity=result.rigidity,
              reference=result.reference, source=np.array(str(mesh_path.relative_to(session_root)), dtype=np.str_))
    arrays = {"vertices": stab.astype(np.float32)}
    if "faces" in meshes:
        arrays["faces"] = np.asarray(meshes["faces"], np.int32)
    write_npz(ctx.work_dir / "meshes.npz", **arrays)

    summary = {"frames": int(len(vertices)), "vertices": int(vertices.shape[1]),
               "source": str(mesh_path.relative_to(session_root)), "head_prior": prior is not None,
               "residual_mm_median": float(1000 * np.median(result.residual_m))}
    centre = result.reference.mean(axis=0)
    motion = {"ours": skull_motion(result.world_from_head, centre), "plain Procrustes": skull_motion(plain, centre)}
    gt_path = session_root / "ground_truth" / "params.npz"
    panels = []
    if gt_path.is_file():
        truth = np.asarray(read_npz(gt_path)["world_from_head"], np.float64)
        if truth.shape == result.world_from_head.shape:
            errors = {}
            for label, poses in (("ours", result.world_from_head), ("plain", plain)):
                e = skull_pose_errors(poses, truth, result.reference, align=reference is None)
                errors[label] = e
                summary[f"{label}_rotation_deg_max"] = float(e["rotation_deg"].max())
                summary[f"{label}_translation_mm_max"] = float(1000 * e["translation_m"].max())
            motion["truth"] = skull_motion(truth, centre)
            panels.append(("rotation error (deg)", {k: v["rotation_deg"] for k, v in errors.items()}))
            panels.append(("translation error (mm)", {k: 1000 * v["translation_m"] for k, v in errors.items()}))
    panels.insert(0, ("skull speed (mm/frame)", motion))
    panels.append(("stabilized vertex speed (mm/frame)", {"ours": 1000 * jitter(stab)["speed"],
                                                          "plain Procrustes": 1000 * jitter(stabilized_vertices(vertices, plain))["speed"]}))
    plot_series(ctx.work_dir / "jitter.png", "stabilization", panels)
    write_json(ctx.work_dir / "summary.json", summary)
    ctx.console.print(f"  stabilized {len(vertices)} frames from {summary['source']}")
    return summary


def skull_motion(world_from_head: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Speed (mm per frame) of a head-frame point (the reference's centre) under the poses."""
    pts = world_from_head[:, :3, :3] @ centre + world_from_head[:, :3, 3]
    return 1000 * np.linalg.norm(np.diff(pts, axis=0), axis=1)
