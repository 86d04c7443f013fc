"""The register stage with `--method learned`: the learned registration network
(headcap.reconstruct.learned_registration) from every frame's calibrated images, no geometry
needed. Writes the same files as the classic route into SESSION/registration:

    meshes.npz     vertices [T, V, 3] float32 world metres, faces [F, 3], confidence [T, V] (fraction
                   of cameras seeing the vertex from the front), frames [T], registered [T] (all True)
    params.npz     identity [Ni] (mean over frames), expression [T, Ne], joint_rotations [T, J, 3],
                   world_from_head [T, 4, 4], expression_names, joint_names, head
    summary.json   method "learned", weights, per frame seconds and (synthetic sessions) the error
                   against ground truth over the outer surface (eyeballs excluded), mm
    overlays/, heatmaps/ as the classic route draws them
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext
from headcap.pipeline.stages.register import truth_and_model_files

CODE = ("headcap.reconstruct.learned_registration.model", "headcap.reconstruct.learned_registration.infer",
        "headcap.pipeline.stages.register_learned")


def _weights_path(config) -> Path:
    from headcap.reconstruct.learned_registration.model import DEFAULT_WEIGHTS

    return Path(config.weights) if config.weights else DEFAULT_WEIGHTS


def learned_register_stage(config, source: Path, name: str = "registration") -> Stage:
    from headcap.capture.session import read_session
    from headcap.reconstruct.learned_registration.model import load_weights

    session = read_session(source)
    if session.rig_path() is None:
        raise ValueError(f"{session.manifest_path}: field 'rig' is missing: registration needs the session's "
                         "calibrated cameras (run `headcap calibrate` or give the session a rig.json)")
    weights = _weights_path(config)
    load_weights(weights)  # a bad path or file fails here, before any work
    files = [*session.input_files(), weights, *truth_and_model_files(Path(session.root), config.head)]

    def run(ctx: StageContext) -> dict:
        return learned_register_into(ctx, Path(source))

    return Stage(name=name, run=run, config=config, files=tuple(files),
                 outputs=("meshes.npz", "params.npz", "summary.json"), code=CODE, resumable=False,
                 description="head-model template from the calibrated images (learned registration)")


def learned_register_into(ctx: StageContext, source: Path) -> dict:
    from headcap.capture.session import read_session
    from headcap.core.fileio import read_npz
    from headcap.pipeline.stages.register import _pictures, _write_npz
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.learned_registration.infer import LearnedRegistrar, read_view_images
    from headcap.reconstruct.learned_registration.train import surface_mask

    config = ctx.config
    session = read_session(source)
    root = Path(session.root)
    rig = session.load_rig()
    model = load_head_model(config.head)
    weights = _weights_path(config)
    registrar = LearnedRegistrar(model, weights, config.head)
    cam_ids = list(session.cameras)
    cameras = [rig[c] for c in cam_ids]
    frames = [f.index for f in session.frames]
    T = len(frames)
    results = []
    with ctx.progress("register (learned)", T) as update:
        for t in range(T):
            images, masks = read_view_images(session, t, cam_ids)
            results.append(registrar.predict(images, cameras, masks))
            update(t + 1)
    identity = np.mean([r.identity for r in results], axis=0)
    results = [registrar.with_identity(r, identity, cameras) for r in results]

    gt_path = root / "ground_truth" / "vertices.npz"
    gt = read_npz(gt_path)["vertices"] if gt_path.is_file() else None
    if gt is not None and (gt.ndim != 3 or gt.shape[1:] != results[0].vertices.shape):
        gt = None
    mask = surface_mask(model)
    for t, r in enumerate(results):
        if gt is not None and t < len(gt):
            err = np.linalg.norm(r.vertices - gt[t], axis=1)[mask] * 1e3
            r.stats.update(error_mm_median=float(np.median(err)), error_mm_p95=float(np.percentile(err, 95)),
                           evaluated_vertices=int(mask.sum()))

    work = ctx.work_dir
    faces = registrar.faces.astype(np.int32)
    _write_npz(work / "meshes.npz", vertices=np.stack([r.vertices for r in results]).astype(np.float32),
               faces=faces, confidence=np.stack([r.confidence for r in results]).astype(np.float32),
               frames=np.array(frames, np.int64), registered=np.ones(T, bool))
    _write_npz(work / "params.npz", identity=identity.astype(np.float32),
               expression=np.stack([r.expression for r in results]).astype(np.float32),
               joint_rotations=np.stack([r.joint_rotations for r in results]).astype(np.float32),
               world_from_head=np.stack([r.world_from_head for r in results]),
               expression_names=np.array(model.expression_names, dtype=str),
               joint_names=np.array(model.joint_names, dtype=str), head=np.array(config.head))
    pictures = _pictures(ctx, session, rig, results, frames, SimpleNamespace(faces=registrar.faces, model=model), config)
    per_frame = [{"frame": f, **r.stats} for f, r in zip(frames, results)]
    summary = {"frames": T, "head": config.head, "vertices": model.num_vertices, "method": "learned",
               "weights": str(weights), "trained": registrar.info, "per_frame": per_frame, "pictures": pictures,
               "skipped_frames": [],
               "seconds_per_frame": float(np.mean([r.stats["seconds"] for r in results]))}
    errs = [p["error_mm_median"] for p in per_frame if "error_mm_median" in p]
    if errs:
        summary["error_mm_median"] = float(np.median(errs))
        summary["error_mm_p95_max"] = float(max(p["error_mm_p95"] for p in per_frame))
    write_json(work / "summary.json", summary)
    keys = ("frames", "error_mm_median", "error_mm_p95_max")
    return {k: summary[k] for k in keys if k in summary}
