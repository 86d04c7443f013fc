"""The register stage: a head model's template registered to every frame's geometry
(SESSION/geometry/<t:06d>.ply from `headcap reconstruct`), written to SESSION/registration:

    meshes.npz     vertices [T, V, 3] float32 world metres, faces [F, 3], confidence [T, V], frames [T],
                   registered [T] bool (False: the frame's geometry had too few points; it was
                   skipped with a warning and holds a neighbouring frame's model fit, confidence 0)
    params.npz     identity [Ni], expression [T, Ne], joint_rotations [T, J, 3], world_from_head
                   [T, 4, 4], expression_names, joint_names, head (the model spec)
    summary.json   per frame: how the rigid pose was found, fit residual, observed fraction,
                   and on a synthetic session the error against ground truth (mm)
    overlays/<t:06d>_<cam>.png   the registered mesh over the image of the most frontal camera
    heatmaps/<t:06d>.png         per-vertex error against ground truth (synthetic sessions only)

Resumable: the shared identity and every finished frame are checkpoints in the work folder.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from headcap.core.fileio import atomic_write_bytes, write_json
from headcap.pipeline.runner import Stage, StageContext
from headcap.reconstruct.registration import RegistrationConfig

CODE = ("headcap.reconstruct.registration", "headcap.reconstruct.registration_rigid",
        "headcap.reconstruct.registration_fit", "headcap.reconstruct.registration_nonrigid",
        "headcap.pipeline.stages.register")
#: heat-map colour scale: this error (mm) and above is red
HEATMAP_MAX_MM = 2.0


@dataclass(frozen=True)
class RegisterStageConfig(RegistrationConfig):
    head: str = "default"
    """Head model spec: default | ict:PATH | flame:PATH | npz:PATH (as for `headcap synth --head`)."""
    overlays: int = 4
    """Frames (evenly spaced) that get an overlay PNG (and a heat-map on synthetic sessions)."""
    weights: str = ""
    """Learned method: network weights (.safetensors from `headcap train-registration`); empty: the shipped ones."""


def _write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _geometry_files(root: Path, frames: list[int]) -> tuple[Path, ...]:
    from headcap.reconstruct.registration import geometry_paths

    out = []
    for f in frames:
        points, surface = geometry_paths(root / "geometry", f)
        out.append(points if points.is_file() else surface)
    return tuple(out)


def check_inputs(source: Path):
    """The session, its rig and every frame's geometry, before any work (ValueError naming what
    is missing)."""
    from headcap.capture.session import read_session
    from headcap.reconstruct.registration import geometry_paths

    session = read_session(source)
    if session.rig_path() is None:
        raise ValueError(f"{session.manifest_path}: field 'rig' is missing: registration needs the session's "
                         "calibrated cameras (run `headcap calibrate` or give the session a rig.json)")
    from headcap.reconstruct.registration import MIN_POINTS

    folder = Path(session.root) / "geometry"
    few = []
    for entry in session.frames:
        points, surface = geometry_paths(folder, entry.index)
        if not points.is_file() and not surface.is_file():
            raise ValueError(f"{folder}: no geometry for frame {entry.index} (neither {points.name} nor "
                             f"{surface.name}); run `headcap reconstruct SESSION` first")
        path = points if points.is_file() else surface
        count = _ply_vertex_count(path)
        if count is not None and count < MIN_POINTS:
            few.append(f"{path}: frame {entry.index} has {count} points")
    if session.frames and len(few) == len(session.frames):
        raise ValueError(f"{folder}: no frame has enough geometry to register (at least {MIN_POINTS} points): "
                         + "; ".join(few))
    return session


def _ply_vertex_count(path: Path) -> int | None:
    """The vertex count in a PLY file's header (None when the header does not say)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    end = head.find(b"end_header")
    for line in head[:end if end >= 0 else len(head)].decode("ascii", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["element", "vertex"] and parts[2].isdigit():
            return int(parts[2])
    return None


def truth_and_model_files(root: Path, head: str) -> list[Path]:
    """Files a registration stage's key also covers: a synthetic session's ground-truth vertices
    (its errors are measured against them) and the head model's file (a SPEC with a path)."""
    files = []
    gt = root / "ground_truth" / "vertices.npz"
    if gt.is_file():
        files.append(gt)
    path = head.partition(":")[2]
    if path and Path(path).exists():
        files.append(Path(path))
    return files


def register_stage(config: RegisterStageConfig, source: Path, name: str = "registration") -> Stage:
    if config.method == "learned":
        from headcap.pipeline.stages.register_learned import learned_register_stage

        return learned_register_stage(config, source, name)
    session = check_inputs(source)
    root = Path(session.root)
    frames = [f.index for f in session.frames]
    files = [session.manifest_path, session.rig_path(), *_geometry_files(root, frames)]
    lm = root / "landmarks" / "landmarks3d.npz"
    if config.landmarks and lm.is_file():
        files.append(lm)
    files += truth_and_model_files(root, config.head)

    def run(ctx: StageContext) -> dict:
        return register_into(ctx, Path(source))

    return Stage(name=name, run=run, config=config, files=tuple(files),
                 outputs=("meshes.npz", "params.npz", "summary.json"), code=CODE, resumable=True,
                 description="head-model template registered to every frame's geometry")


def _registration_config(config: RegisterStageConfig) -> RegistrationConfig:
    names = {f.name for f in fields(RegistrationConfig)}
    return RegistrationConfig(**{k: v for k, v in asdict(config).items() if k in names})


def _frame_record(path: Path):
    from headcap.core.fileio import read_npz
    from headcap.reconstruct.registration import FrameRegistration

    d = read_npz(path)
    return FrameRegistration(d["vertices"], d["confidence"], d["fit_vertices"], d["expression"],
                             d["joint_rotations"], d["world_from_head"], json.loads(str(d["stats"])))


def register_into(ctx: StageContext, source: Path) -> dict:
    from headcap.core.fileio import read_npz
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.registration import Registrar, filled_frame, load_geometry, load_landmarks68

    config: RegisterStageConfig = ctx.config
    session = check_inputs(source)
    root = Path(session.root)
    rig = session.load_rig()
    model = load_head_model(config.head)
    registrar = Registrar(model, _registration_config(config))
    frames = [f.index for f in session.frames]
    T = len(frames)
    lm_path = root / "landmarks" / "landmarks3d.npz"
    landmarks = load_landmarks68(lm_path) if config.landmarks and lm_path.is_file() else {}
    if landmarks:
        ctx.console.print(f"  using triangulated landmarks from {lm_path}")
    geometry = root / "geometry"
    work = ctx.work_dir
    (work / "frames").mkdir(exist_ok=True)

    skipped = skipped_frames(geometry, frames)
    for f, reason in skipped.items():
        ctx.console.print(f"  [yellow]warning[/]: frame {f} skipped ({reason}); it gets a neighbouring frame's "
                          "model fit and confidence 0")
    good = [f for f in frames if f not in skipped]

    ident_path = work / "identity.npz"
    if ident_path.is_file():
        identity = read_npz(ident_path)["identity"]
    else:
        picks = np.linspace(0, len(good) - 1, min(config.keyframes, len(good))).round().astype(int).tolist()
        keys = [good[k] for k in sorted(set(picks))]
        with ctx.progress("identity", len(keys)) as update:
            clouds = []
            for i, k in enumerate(keys):
                clouds.append(load_geometry(geometry, k))
                update(i + 1)
            fit = registrar.estimate_identity(clouds, [landmarks.get(k) for k in keys])
        identity = fit.identity
        _write_npz(ident_path, identity=identity, keyframes=np.array(keys), world_from_head=fit.world_from_head)
    ident_data = read_npz(ident_path)
    key_poses = dict(zip(ident_data["keyframes"].tolist(), ident_data["world_from_head"]))

    results = []
    done = 0
    with ctx.progress("register", T) as update:
        previous = None
        for t, f in enumerate(frames):
            path = work / "frames" / f"{f:06d}.npz"
            if f in skipped:
                results.append(None)
            elif path.is_file():
                previous = _frame_record(path)
                done += 1
            else:
                cloud = load_geometry(geometry, f)
                previous = registrar.register_frame(cloud, landmarks.get(f), identity, previous, key_poses.get(f))
                stats = dict(previous.stats)
                stats.update(_ground_truth_errors(root, t, previous, cloud, registrar))
                previous.stats = stats
                _write_npz(path, vertices=previous.vertices, confidence=previous.confidence,
                           fit_vertices=previous.fit_vertices, expression=previous.expression,
                           joint_rotations=previous.joint_rotations, world_from_head=previous.world_from_head,
                           stats=np.array(json.dumps(stats)))
            if f not in skipped:
                results.append(previous)
            update(t + 1, description=f"register {f:06d}")
    if done:
        ctx.console.print(f"  {done} of {T} frames taken from checkpoints")
    registered = np.array([r is not None for r in results])
    for t in np.flatnonzero(~registered):
        # the nearest registered frame before it, else the nearest after it
        before = [s for s in range(t) if registered[s]]
        source = before[-1] if before else next(s for s in range(t + 1, T) if registered[s])
        results[t] = filled_frame(results[source], skipped[frames[t]], frames[source])

    faces = registrar.faces.astype(np.int32)
    _write_npz(work / "meshes.npz", vertices=np.stack([r.vertices for r in results]).astype(np.float32),
               faces=faces, confidence=np.stack([r.confidence for r in results]).astype(np.float32),
               frames=np.array(frames, np.int64), registered=registered)
    _write_npz(work / "params.npz", identity=identity, expression=np.stack([r.expression for r in results]),
               joint_rotations=np.stack([r.joint_rotations for r in results]),
               world_from_head=np.stack([r.world_from_head for r in results]),
               expression_names=np.array(model.expression_names, dtype=str),
               joint_names=np.array(model.joint_names, dtype=str), head=np.array(config.head))
    pictures = _pictures(ctx, session, rig, results, frames, registrar, config)
    per_frame = [{"frame": f, **r.stats} for f, r in zip(frames, results)]
    summary = {"frames": T, "head": config.head, "vertices": model.num_vertices, "method": config.method,
               "landmarks": bool(landmarks), "per_frame": per_frame, "pictures": pictures,
               "skipped_frames": sorted(skipped)}
    errs = [p["error_mm_median"] for p in per_frame if p.get("error_mm_median") is not None]
    if errs:
        summary["error_mm_median"] = float(np.median(errs))
        summary["error_mm_p95_max"] = float(max(p["error_mm_p95"] for p in per_frame if "error_mm_p95" in p))
    write_json(work / "summary.json", summary)
    keys = ("frames", "error_mm_median", "error_mm_p95_max", "skipped_frames")
    return {k: summary[k] for k in keys if k in summary}


def skipped_frames(geometry: Path, frames: list[int]) -> dict[int, str]:
    """{frame: why} for the frames whose geometry has too few usable points (registration skips
    them); ValueError when that is every frame (naming each), or when a file cannot be read."""
    from headcap.reconstruct.registration import TooFewPoints, load_geometry

    out = {}
    for f in frames:
        try:
            load_geometry(geometry, f)
        except TooFewPoints as exc:
            out[f] = str(exc)
    if len(out) == len(frames):
        raise ValueError(f"{geometry}: no frame has enough geometry to register: " + "; ".join(out.values()))
    return out


def _ground_truth_errors(root: Path, t: int, reg, cloud, registrar) -> dict:
    """On a synthetic session of the same model: vertex error (mm) over the observed outer surface
    (vertices with a cloud point within 1.5 mm of their true position; eyeballs left out: their
    rotation about their centre is not visible in geometry)."""
    from headcap.core.fileio import read_npz

    gt_path = root / "ground_truth" / "vertices.npz"
    if not gt_path.is_file():
        return {}
    gt = read_npz(gt_path)["vertices"]
    if gt.ndim != 3 or gt.shape[1:] != reg.vertices.shape or t >= len(gt):
        return {}
    mask = evaluation_mask(registrar.model, gt[t], cloud.points)
    err = np.linalg.norm(reg.vertices - gt[t], axis=1) * 1e3
    fit_err = np.linalg.norm(reg.fit_vertices - gt[t], axis=1) * 1e3
    if not mask.any():
        return {}
    return {"error_mm_median": float(np.median(err[mask])), "error_mm_p95": float(np.percentile(err[mask], 95)),
            "fit_error_mm_median": float(np.median(fit_err[mask])), "evaluated_vertices": int(mask.sum())}


def evaluation_mask(model, gt_vertices: np.ndarray, points: np.ndarray, within: float = 0.0015) -> np.ndarray:
    """[V] bool: outer-surface vertices (no eyeballs) with a cloud point within `within` metres."""
    from scipy.spatial import cKDTree

    from headcap.reconstruct.registration_fit import fit_vertex_mask

    mask = fit_vertex_mask(model)
    for name in ("eyeball_left", "eyeball_right"):
        if name in model.region_masks:
            mask &= ~model.region_masks[name].cpu().numpy().astype(bool)
    d, _ = cKDTree(points).query(gt_vertices, distance_upper_bound=within)
    return mask & np.isfinite(d)


def _frontal_camera(rig, world_from_head: np.ndarray):
    forward = world_from_head[:3, 2]
    centre = world_from_head[:3, 3]
    best, score = None, -np.inf
    for cam in rig:
        cam_centre = -cam.cam_from_world[:3, :3].T @ cam.cam_from_world[:3, 3]
        d = cam_centre - centre
        s = float(forward @ d / max(np.linalg.norm(d), 1e-9))
        if s > score:
            best, score = cam, s
    return best


def _pictures(ctx, session, rig, results, frames, registrar, config) -> list[str]:
    import cv2
    import torch

    from headcap.core.fileio import read_npz
    from headcap.reconstruct.rasterize_mesh import render_mesh

    T = len(frames)
    if config.overlays <= 0:
        return []
    picks = sorted(set(np.linspace(0, T - 1, min(config.overlays, T)).round().astype(int).tolist()))
    root = Path(session.root)
    gt_path = root / "ground_truth" / "vertices.npz"
    gt = read_npz(gt_path)["vertices"] if gt_path.is_file() else None
    if gt is not None and gt.shape[1:] != results[0].vertices.shape:
        gt = None
    faces = torch.from_numpy(registrar.faces)
    written = []
    for t in picks:
        reg = results[t]
        cam = _frontal_camera(rig, reg.world_from_head)
        verts = torch.from_numpy(np.asarray(reg.vertices, np.float64))
        out = render_mesh(verts, faces, cam)
        image = cv2.imread(str(session.image_path(t, cam.id)), cv2.IMREAD_COLOR)
        if image is None or image.shape[:2] != (cam.height, cam.width):
            continue
        view = -torch.as_tensor(cam.cam_from_world[2, :3], dtype=torch.float64)
        shade = (out["normals"] @ view).abs().clamp(0.2, 1.0).numpy()
        mask = out["mask"].numpy() > 0
        conf = np.zeros(mask.shape)
        colours = torch.from_numpy(np.repeat(reg.confidence[:, None].astype(np.float64), 3, 1))
        conf = render_mesh(verts, faces, cam, vertex_colors=colours)["rgb"][..., 0].numpy()
        # BGR: green where the cloud confirms the vertex, red where it does not
        tint = np.stack([0.25 * shade, shade * (0.25 + 0.75 * conf), shade * (0.25 + 0.75 * (1 - conf))], -1) * 255
        blend = image.astype(np.float64)
        blend[mask] = 0.5 * blend[mask] + 0.5 * tint[mask]
        rel = f"overlays/{frames[t]:06d}_{cam.id}.png"
        _write_png(ctx.work_dir / rel, blend)
        written.append(rel)
        if gt is not None and t < len(gt):
            err = np.linalg.norm(reg.vertices - gt[t], axis=1) * 1e3
            level = np.clip(err / HEATMAP_MAX_MM, 0, 1)
            lut = cv2.applyColorMap((level * 255).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1] / 255.0
            out = render_mesh(verts, faces, cam, vertex_colors=torch.from_numpy(lut.astype(np.float64)))
            heat = np.full((cam.height, cam.width, 3), 255.0)
            m = out["mask"].numpy() > 0
            heat[m] = (out["rgb"].numpy()[..., ::-1] * 255 * (0.6 + 0.4 * shade[..., None]))[m]
            heat = np.clip(heat, 0, 255).astype(np.uint8)
            _colour_bar(heat)
            rel = f"heatmaps/{frames[t]:06d}.png"
            _write_png(ctx.work_dir / rel, heat)
            written.append(rel)
    return written


def _colour_bar(image: np.ndarray) -> None:
    """A 0..HEATMAP_MAX_MM jet bar down the right edge, with its end labels."""
    import cv2

    h, w = image.shape[:2]
    top, bottom, x0, x1 = int(0.1 * h), int(0.9 * h), w - max(8, w // 24) - 4, w - 4
    ramp = np.linspace(1, 0, bottom - top)
    bar = cv2.applyColorMap((ramp * 255).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    image[top:bottom, x0:x1] = bar[:, None, :]
    scale = max(h / 512, 0.3)
    cv2.putText(image, f"{HEATMAP_MAX_MM:g} mm", (max(0, x0 - int(60 * scale)), top + int(10 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "0", (max(0, x0 - int(14 * scale)), bottom), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale,
                (0, 0, 0), 1, cv2.LINE_AA)


def _write_png(path: Path, bgr: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.clip(bgr, 0, 255).astype(np.uint8))
    if not ok:
        raise RuntimeError(f"{path}: cv2 could not encode the PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.tobytes())
