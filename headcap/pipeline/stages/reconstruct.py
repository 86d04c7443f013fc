"""The reconstruct stage: per-frame geometry of a rig session (multi-view stereo, depth fusion,
TSDF surface, visual hull fallback; headcap.reconstruct.geometry).

Files (in the stage folder, SESSION/geometry for `headcap reconstruct SESSION`):

    <t:06d>.ply            fused points: x y z nx ny nz confidence red green blue (world metres)
    <t:06d>_surface.ply    triangle mesh (world metres, normals facing the cameras)
    <t:06d>.json           the frame's stats (written last: a frame with it is done)
    depth/<t:06d>.npz      per-view depth [C, H, W], normals [C, H, W, 3] (camera frame),
                           confidence [C, H, W], cameras (with --save-depth)
    previews/<t:06d>_depth.png, _normal.png   per-view maps side by side
    previews/<t:06d>_error.png                surface-to-ground-truth heat-map (synthetic sessions)
    summary.json           every frame's stats and the medians over frames

Resumable: a run killed half-way keeps its finished frames (<t>.json) and continues after them.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.core.fileio import atomic_write_bytes, read_json, write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.reconstruct.mvs", "headcap.reconstruct.fusion", "headcap.reconstruct.surface",
        "headcap.reconstruct.geometry", "headcap.pipeline.stages.reconstruct")


@dataclass(frozen=True)
class ReconstructStageConfig:
    frames: str = ""
    """Frames to reconstruct, A:B (Python slice of frame indices, e.g. 0:10); empty: all."""
    neighbours: int = 4
    """Source views matched against each view."""
    window: int = 7
    """NCC window side in pixels (odd)."""
    depth_samples: int = 64
    """Depth hypotheses per pixel of the coarse plane sweep."""
    min_score: float = 0.4
    """Lowest aggregated NCC kept as a depth (0..1)."""
    hull_voxel: float = 0.003
    """Visual hull voxel size (metres)."""
    tsdf_voxel: float = 0.001
    """TSDF voxel size (metres)."""
    tsdf_min_weight: float = 1.0
    """Summed view weight a TSDF voxel needs to be meshed (higher: more accurate, less complete)."""
    min_coverage: float = 0.05
    """Fraction of masked pixels with a consistent depth under which a frame falls back to the visual hull."""
    save_depth: bool = False
    """Also write each frame's per-view depth, normal and confidence maps (depth/<t>.npz)."""


def parse_frames(text: str, count: int) -> list[int]:
    """Frame indices of 'A:B' (either side may be empty) within range(count)."""
    if not text:
        return list(range(count))
    parts = text.split(":")
    try:
        if len(parts) == 1:
            a = int(parts[0])
            b = a + 1
        elif len(parts) == 2:
            a = int(parts[0]) if parts[0] else 0
            b = int(parts[1]) if parts[1] else count
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"--frames: expected A:B (frame indices), got {text!r}") from None
    frames = list(range(count))[slice(a, b)]
    if not frames:
        raise ValueError(f"--frames: {text!r} selects no frame of the session's {count}")
    return frames


def geometry_config(config: ReconstructStageConfig):
    from headcap.reconstruct.fusion import HullConfig
    from headcap.reconstruct.geometry import GeometryConfig
    from headcap.reconstruct.mvs import MVSConfig
    from headcap.reconstruct.surface import SurfaceConfig

    return GeometryConfig(
        mvs=MVSConfig(neighbours=config.neighbours, window=config.window, depth_samples=config.depth_samples,
                      min_score=config.min_score),
        hull=HullConfig(voxel=config.hull_voxel), surface=SurfaceConfig(voxel=config.tsdf_voxel, min_weight=config.tsdf_min_weight),
        min_coverage=config.min_coverage)


def _session_files(source: Path) -> tuple[Path, ...]:
    from headcap.capture.session import read_session

    return read_session(source).input_files()


def check_session(source: Path):
    """The session and its rig; a clear ValueError when there is no rig."""
    from headcap.capture.session import read_session

    session = read_session(source)
    if session.rig_path() is None:
        raise ValueError(f"{session.manifest_path}: field 'rig' is missing: this session has no calibration; "
                         "run `headcap calibrate` first (reconstruction needs calibrated cameras)")
    return session, session.load_rig()


def reconstruct_stage(config: ReconstructStageConfig, source: Path | None = None, name: str = "geometry",
                      session_stage: str = "session") -> Stage:
    files: tuple[Path, ...] = ()
    if source is not None:
        session, _ = check_session(source)  # a session without a rig fails before any work
        parse_frames(config.frames, session.frame_count)
        files = _session_files(source)

    def run(ctx: StageContext) -> dict:
        src = source if source is not None else ctx.input_dir(session_stage)
        return reconstruct_into(ctx, Path(src))

    return Stage(name=name, run=run, config=config, inputs=() if source is not None else (session_stage,),
                 files=files, outputs=("summary.json",), code=CODE, resumable=True,
                 description="multi-view stereo, depth fusion and a TSDF surface per frame")


def reconstruct_into(ctx: StageContext, source: Path) -> dict:
    config: ReconstructStageConfig = ctx.config
    session, rig = check_session(source)
    frames = parse_frames(config.frames, session.frame_count)
    work = ctx.work_dir
    done = [t for t in frames if (work / f"{t:06d}.json").is_file()]
    if done:
        ctx.console.print(f"  {len(done)} of {len(frames)} frames already done (resuming)")
    todo = [t for t in frames if t not in done]
    # one job per frame on the pipeline's executor (serial, local processes or Ray): each job
    # reads the session, reconstructs its frame and writes its files, <t>.json last; a synthetic
    # session's truth is read here once and each job gets its own frame of it
    truth = _ground_truth(session)
    jobs = [(str(source), str(work), t, config,
             None if truth is None or t >= len(truth[0]) else (truth[0][t], truth[1])) for t in todo]
    for stats in ctx.map(reconstruct_one_frame, jobs, "reconstruct", labels=[f"frame {t}" for t in todo]):
        for w in stats["warnings"]:
            ctx.console.print(f"  [yellow]{w}[/]")
        line = (f"  frame {stats['frame']}: {stats['method']}, {stats['points']} points, {stats['surface_faces']} "
                f"triangles, coverage {stats['coverage']:.0%}, {stats['seconds_total']:.1f} s")
        if "surface_error_median_mm" in stats:
            line += f"; surface to truth median {stats['surface_error_median_mm']:.3f} mm"
        ctx.console.print(line)
    per_frame = [read_json(work / f"{t:06d}.json") for t in frames]
    summary = {"frames": per_frame, "cameras": list(session.cameras), "session": str(session.manifest_path)}
    for key in ("seconds_total", "coverage", "surface_error_median_mm", "surface_error_p95_mm",
                "points_error_median_mm"):
        values = [f[key] for f in per_frame if f.get(key) is not None]
        if values:
            summary[f"median_{key}"] = float(np.median(values))
    summary["fallback_frames"] = [f["frame"] for f in per_frame if f["method"] != "mvs"]
    write_json(work / "summary.json", summary)
    return {k: v for k, v in summary.items() if k.startswith("median_")} | {"frames": len(per_frame)}


def reconstruct_one_frame(job: tuple) -> dict:
    """One frame's geometry into the work folder (a job of ctx.map: (session folder, work folder,
    frame, config, the frame's true (vertices, faces) or None); its own files only, <t>.json
    written last to mark the frame done); returns the frame's stats."""
    from headcap.reconstruct.geometry import reconstruct_frame
    from headcap.reconstruct.mvs import load_views

    source, work, t, config, truth = job
    session, rig = check_session(Path(source))
    warnings: list[str] = []
    views = load_views(session, rig, t, warn=warnings.append)
    geo = reconstruct_frame(views, geometry_config(config))
    stats = write_frame(Path(work), t, views, geo, truth, config.save_depth)
    stats["warnings"] = warnings
    write_json(Path(work) / f"{t:06d}.json", stats)  # last: marks the frame done
    return stats


def _ground_truth(session):
    """(vertices [T, V, 3], faces) of a synthetic session, else None."""
    from headcap.core.fileio import read_npz

    gt = session.extra.get("ground_truth") if isinstance(session.extra, dict) else None
    if not isinstance(gt, str):
        return None
    path = session.path(gt, "extra.ground_truth") / "vertices.npz"
    if not path.is_file():
        return None
    data = read_npz(path)
    faces = data.get("render_faces", data["faces"])
    return np.asarray(data["vertices"], np.float64), np.asarray(faces, np.int64)


def write_frame(work: Path, t: int, views, geo, truth, save_depth: bool) -> dict:
    """Frame t's files and stats; truth: the frame's true (vertices [V, 3], faces) or None."""
    from headcap.core.ply import write_points
    from headcap.reconstruct.surface import distance_to_mesh

    write_points(work / f"{t:06d}.ply", geo.points, geo.normals, geo.confidence, geo.colors)
    write_points(work / f"{t:06d}_surface.ply", geo.surface_vertices, faces=geo.surface_faces)
    stats = {"frame": t, "method": geo.method, "points": int(len(geo.points)),
             "surface_vertices": int(len(geo.surface_vertices)), "surface_faces": int(len(geo.surface_faces)),
             "coverage": float(geo.coverage), "seconds": {k: float(v) for k, v in geo.seconds.items()},
             "seconds_total": float(sum(geo.seconds.values())),
             "depth_valid_fraction": {m.view: float((m.depth > 0).float().mean()) for m in geo.maps}}
    errors = None
    if truth is not None and len(geo.surface_vertices):
        verts, faces = truth
        errors = distance_to_mesh(geo.surface_vertices, verts, faces)
        stats["surface_error_median_mm"] = float(np.median(errors) * 1e3)
        stats["surface_error_p95_mm"] = float(np.percentile(errors, 95) * 1e3)
        if len(geo.points):
            pe = distance_to_mesh(geo.points, verts, faces)
            stats["points_error_median_mm"] = float(np.median(pe) * 1e3)
            stats["points_error_p95_mm"] = float(np.percentile(pe, 95) * 1e3)
    previews = work / "previews"
    previews.mkdir(exist_ok=True)
    depth_img, normal_img = map_previews(geo.maps)
    _write_png(previews / f"{t:06d}_depth.png", depth_img)
    _write_png(previews / f"{t:06d}_normal.png", normal_img)
    if errors is not None:
        _write_png(previews / f"{t:06d}_error.png", error_heatmap(views, geo.surface_vertices, geo.surface_faces, errors))
    if save_depth:
        (work / "depth").mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, depth=np.stack([m.depth.numpy() for m in geo.maps]),
                 normals=np.stack([m.normals.numpy() for m in geo.maps]),
                 confidence=np.stack([m.confidence.numpy() for m in geo.maps]),
                 cameras=np.array([m.view for m in geo.maps]))
        atomic_write_bytes(work / "depth" / f"{t:06d}.npz", buf.getvalue())
    return stats


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def _tile(images: list[np.ndarray], columns: int | None = None, side: int = 192) -> np.ndarray:
    import cv2

    n = len(images)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * side, cols * side, 3), np.uint8)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        s = side / max(h, w)
        small = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        out[r * side:r * side + small.shape[0], c * side:c * side + small.shape[1]] = small
    return out


def map_previews(maps) -> tuple[np.ndarray, np.ndarray]:
    """(depth, normal) RGB uint8 contact sheets of the per-view maps."""
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    depths, normals = [], []
    for m in maps:
        d = m.depth.numpy()
        valid = d > 0
        img = np.zeros(d.shape + (3,), np.uint8)
        if valid.any():
            lo, hi = np.percentile(d[valid], [1, 99])
            x = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
            img[valid] = (cmap(x[valid])[:, :3] * 255).astype(np.uint8)
        depths.append(img)
        n = m.normals.numpy()
        # camera frame (x right, y down, z forward) shown as the usual normal map: x right, y up, z to the viewer
        rgb = np.stack([n[..., 0], -n[..., 1], -n[..., 2]], -1) * 0.5 + 0.5
        rgb[~valid] = 0
        normals.append((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    return _tile(depths), _tile(normals)


def error_heatmap(views, vertices: np.ndarray, faces: np.ndarray, errors: np.ndarray,
                  max_mm: float = 3.0, count: int = 4) -> np.ndarray:
    """The surface's vertices drawn into a few views, coloured by their distance to the truth
    (0 to max_mm, turbo), with a colour bar."""
    import cv2
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    picks = np.linspace(0, len(views) - 1, min(count, len(views))).round().astype(int)
    tiles = []
    order = None
    for i in picks:
        v = views[i]
        img = (v.rgb.astype(np.float32) * 0.35).astype(np.uint8)
        T, K = v.camera.cam_from_world, v.camera.K
        p = vertices @ T[:3, :3].T + T[:3, 3]
        z = p[:, 2]
        uv = (p[:, :2] / np.maximum(z, 1e-6)[:, None]) @ K[:2, :2].T + K[:2, 2]
        order = np.argsort(-z)  # far first, near drawn last
        colors = (cmap(np.clip(errors * 1e3 / max_mm, 0, 1))[:, :3] * 255).astype(np.uint8)
        u = np.round(uv[order, 0]).astype(int)
        w = np.round(uv[order, 1]).astype(int)
        ok = (z[order] > 0) & (u >= 0) & (u < v.width) & (w >= 0) & (w < v.height)
        img[w[ok], u[ok]] = colors[order][ok]
        cv2.putText(img, v.id, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    sheet = _tile(tiles, columns=len(tiles), side=256)
    bar = np.zeros((28, sheet.shape[1], 3), np.uint8)
    ramp = (cmap(np.linspace(0, 1, sheet.shape[1] - 120))[:, :3] * 255).astype(np.uint8)
    bar[4:14, 60:60 + ramp.shape[0]] = ramp[None]
    cv2.putText(bar, "0 mm", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, f"{max_mm:g} mm", (sheet.shape[1] - 56, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                cv2.LINE_AA)
    cv2.putText(bar, f"surface to truth: median {np.median(errors) * 1e3:.2f} mm", (60, 26),
                cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([sheet, bar], 0)
