"""The tracking stage: a head model fitted to a session (reconstruct.tracking) and its files.

Input: the session's images, masks and rig; SESSION/landmarks/landmarks2d.npz and
SESSION/registration/meshes.npz when present (used, and fingerprinted), and the registration's
params.npz, when it fitted the same model, as every frame's starting point.
Output SESSION/tracking/:
    params.npz       identity [Ni], expression [T, Ne], expression_names, joint_rotations [T, J, 3],
                     joint_names, world_from_head [T, 4, 4], head_spec, albedo [V, 3], sh_coeffs [9, 3],
                     K [T, C, 3, 3] and cam_from_world [T, C, 4, 4] (the cameras used; monocular:
                     the fitted focal length in every frame), focal_scale
    meshes.npz       vertices [T, V, 3] world metres, faces [F, 3]
    transforms.json  the NeRF-style layout VHAP exports and GaussianAvatars reads (OpenGL
                     camera-to-world transform_matrix, camera_angle_x, fl_x/fl_y/cx/cy/w/h,
                     timestep_index, camera_index, file_path, fg_mask_path and per-timestep
                     parameter files: flame_param_path with FLAME's names for a FLAME model,
                     head_param_path with ours otherwise)
    params/<t:05d>.npz   the per-timestep parameter files transforms.json names
    overlay.mp4      the fitted mesh drawn over the images (first camera; every camera in a grid)
    overlay.png      the middle frame of the overlay
    residuals.png, jitter.png   per-frame energies; vertex speed/acceleration (and the truth's)
    summary.json     timings, frames/s, residuals, errors against ground_truth/ when present
Resumable: the sequential pass checkpoints every frame into the work folder.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from headcap.core.threads import torch_threads
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.reconstruct.tracking", "headcap.reconstruct.tracking_terms", "headcap.reconstruct.tracking_io",
        "headcap.reconstruct.sequence_plots", "headcap.pipeline.stages.track")
CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class TrackStageConfig:
    head: str = "default"
    """Head model spec (reconstruct.head_loaders): default | ict:PATH | flame:PATH | npz:PATH."""
    monocular: bool = False
    """Track from the first camera only, estimating its focal length."""
    first_frame_iterations: int = 12
    """Gauss-Newton iterations per level on the first frame."""
    frame_iterations: int = 6
    """Gauss-Newton iterations per further frame (sequential pass)."""
    global_iterations: int = 4
    """Gauss-Newton iterations of the global pass over every frame."""
    photometric_weight: float = 0.5
    """Weight of the photometric term (0 turns it off)."""
    use_landmarks: bool = True
    """Use SESSION/landmarks/landmarks2d.npz when it exists."""
    use_registration: bool = True
    """Use SESSION/registration/meshes.npz when it exists (same topology as the head model)."""
    overlay: bool = True
    """Write overlay.mp4 / overlay.png."""


def _tracking_config(config: TrackStageConfig):
    from headcap.reconstruct.tracking import TrackingConfig

    names = {f.name for f in fields(TrackingConfig)}
    return TrackingConfig(**{k: v for k, v in asdict(config).items() if k in names})


def track_stage(config: TrackStageConfig, session_root: Path, name: str = "tracking") -> Stage:
    from headcap.capture.session import read_session

    _tracking_config(config)  # bad settings fail before any work
    session = read_session(Path(session_root).resolve())  # absolute paths: transforms.json names files relative to it
    if session.rig_path() is None:
        raise ValueError(f"track: {session.manifest_path}: field 'rig' missing: tracking needs calibrated cameras "
                         "(run `headcap calibrate`, or ingest with a calibration)")
    root = Path(session.root)
    files = list(session.input_files(cameras=session.cameras[:1] if config.monocular else None))
    extra = {"landmarks": root / "landmarks" / "landmarks2d.npz", "registration": root / "registration" / "meshes.npz"}
    if config.use_landmarks and extra["landmarks"].is_file():
        files.append(extra["landmarks"])
    if config.use_registration and extra["registration"].is_file():
        files.append(extra["registration"])
        if (extra["registration"].parent / "params.npz").is_file():
            files.append(extra["registration"].parent / "params.npz")
    spec_path = config.head.split(":", 1)[1] if ":" in config.head else None
    if spec_path and Path(spec_path).exists():
        files.append(Path(spec_path))

    def run(ctx: StageContext) -> dict:
        return track_into(ctx, root)

    return Stage(name=name, run=run, config=config, files=tuple(files), code=CODE, resumable=True,
                 outputs=("params.npz", "meshes.npz", "transforms.json", "residuals.png", "jitter.png", "summary.json"),
                 description="head-model tracking: identity, expression, joints, head pose per frame")


def track_into(ctx: StageContext, root: Path) -> dict:
    from headcap.capture.session import read_session
    from headcap.core.fileio import read_npz, write_json
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.tracking import track_sequence
    from headcap.reconstruct.tracking_io import (evaluate_against_truth, load_views, read_landmarks, read_registration,
                                                 read_registration_params)
    from headcap.studio.writer import write_npz

    config: TrackStageConfig = ctx.config
    session = read_session(root)
    model = load_head_model(config.head)
    cameras = [c for c in session.cameras if c in session.load_rig().ids]
    landmarks = None
    lm_path = root / "landmarks" / "landmarks2d.npz"
    if config.use_landmarks and lm_path.is_file():
        landmarks = read_landmarks(lm_path, model, session.cameras, session.frame_count)
    registration = init = None
    reg_path = root / "registration" / "meshes.npz"
    if config.use_registration and reg_path.is_file():
        registration = read_registration(reg_path, model, session.frame_count)
        if registration is None:
            ctx.console.print(f"  [yellow]{reg_path}: another topology than {model.name}'s; not used[/]")
        elif (reg_path.parent / "params.npz").is_file():
            # the registration fitted this model already: every frame starts from its fit
            init = read_registration_params(reg_path.parent / "params.npz", model, session.frame_count)
    views, cameras = load_views(session, landmarks=landmarks, monocular=config.monocular)
    ckpt = ctx.work_dir / CHECKPOINT
    resume = read_npz(ckpt) if ckpt.is_file() else None
    if resume is not None:
        ctx.console.print(f"  resuming after frame {int(resume['frames_done'])} of {session.frame_count}")
    tic = time.perf_counter()
    with ctx.progress("tracking", session.frame_count) as update, torch_threads(2):
        def progress(stage, done, total):
            update(done if stage == "sequential" else 0, description=f"tracking {stage}")

        result = track_sequence(model, views, _tracking_config(config),
                                meshes=None if registration is None else registration[0],
                                mesh_confidence=None if registration is None else registration[1],
                                progress=progress, resume=resume, init=init,
                                checkpoint=lambda state: write_npz(ckpt, **state))
    seconds = time.perf_counter() - tic
    rig = session.load_rig()
    T, C = session.frame_count, len(cameras)
    K = np.stack([rig[c].K for c in cameras]).astype(np.float64)
    K[:, 0, 0] *= result.focal_scale
    K[:, 1, 1] *= result.focal_scale
    K_t = np.broadcast_to(K, (T, C, 3, 3)).copy()
    cfw_t = np.broadcast_to(np.stack([rig[c].cam_from_world for c in cameras]), (T, C, 4, 4)).copy()
    write_npz(ctx.work_dir / "params.npz", identity=result.identity, expression=result.expression,
              expression_names=np.array(model.expression_names, dtype=np.str_),
              joint_rotations=result.joint_rotations, joint_names=np.array(model.joint_names, dtype=np.str_),
              world_from_head=result.world_from_head, head_spec=np.array(config.head, dtype=np.str_),
              albedo=result.albedo, sh_coeffs=result.sh_coeffs, K=K_t, cam_from_world=cfw_t,
              camera_ids=np.array(cameras, dtype=np.str_), focal_scale=np.array(result.focal_scale))
    write_npz(ctx.work_dir / "meshes.npz", vertices=result.vertices.astype(np.float32),
              faces=model.faces.numpy().astype(np.int32))
    write_transforms(ctx.work_dir, session, cameras, K, cfw_t[0], result, model)
    summary = {"frames": T, "cameras": C, "head": model.name, "monocular": config.monocular,
               "landmarks": landmarks is not None, "registration": registration is not None,
               "started_from_registration": init is not None,
               "seconds": round(seconds, 2), "frames_per_second": round(T / max(seconds, 1e-9), 4),
               "focal_scale": result.focal_scale,
               "residuals_median": {k: float(np.median(v)) for k, v in result.residuals.items()}}
    truth = None
    if (root / "ground_truth" / "vertices.npz").is_file():
        summary["ground_truth"] = evaluate_against_truth(result, root, cameras, monocular=config.monocular)
        gt = read_npz(root / "ground_truth" / "vertices.npz")["vertices"]
        truth = gt if gt.shape == result.vertices.shape else None
    _plots(ctx.work_dir, result, truth)
    if config.overlay:
        write_overlay(ctx.work_dir, session, cameras, K, cfw_t[0], result.vertices, model.faces.numpy())
    write_json(ctx.work_dir / "summary.json", summary)
    ckpt.unlink(missing_ok=True)
    return {k: summary[k] for k in ("frames", "cameras", "frames_per_second")}


def _plots(folder: Path, result, truth) -> None:
    from headcap.reconstruct.sequence_plots import jitter, plot_series

    plot_series(folder / "residuals.png", "tracking residuals per frame",
                [(name, {name: values}) for name, values in result.residuals.items() if np.any(values)])
    ours = jitter(result.vertices)
    acc = {"fit": 1000 * ours["acceleration"]}
    speed = {"fit": 1000 * ours["speed"]}
    if truth is not None:
        gt = jitter(truth)
        acc["truth"], speed["truth"] = 1000 * gt["acceleration"], 1000 * gt["speed"]
    plot_series(folder / "jitter.png", "vertex motion per frame",
                [("mean vertex speed (mm/frame)", speed), ("mean vertex acceleration (mm/frame^2)", acc)])


def write_transforms(folder: Path, session, cameras: list[str], K: np.ndarray, cam_from_world: np.ndarray,
                     result, model) -> None:
    """transforms.json + params/<t>.npz in VHAP's export layout (GaussianAvatars' reader)."""
    import math

    from headcap.calib.conventions import opencv_cam_from_world_to_opengl_world_from_cam
    from headcap.core.fileio import write_json
    from headcap.studio.writer import write_npz

    rig = session.load_rig()
    flame = model.name.lower().startswith("flame")
    frames = []
    for t in range(session.frame_count):
        rel = f"params/{t:05d}.npz"
        if flame:
            joints = {n: result.joint_rotations[t, i] for i, n in enumerate(model.joint_names)}
            rot = result.world_from_head[t]
            from scipy.spatial.transform import Rotation

            write_npz(folder / rel, translation=rot[:3, 3][None], rotation=Rotation.from_matrix(rot[:3, :3]).as_rotvec()[None],
                      neck_pose=joints.get("neck", np.zeros(3))[None], jaw_pose=joints.get("jaw", np.zeros(3))[None],
                      eyes_pose=np.concatenate([joints.get("eye_left", np.zeros(3)), joints.get("eye_right", np.zeros(3))])[None],
                      shape=result.identity, expr=result.expression[t][None])
        else:
            write_npz(folder / rel, identity=result.identity, expression=result.expression[t],
                      joint_rotations=result.joint_rotations[t], world_from_head=result.world_from_head[t])
        for c, cam in enumerate(cameras):
            w, h = rig[cam].width, rig[cam].height
            fx, fy, cx, cy = K[c, 0, 0], K[c, 1, 1], K[c, 0, 2], K[c, 1, 2]
            image = session.image_path(t, cam)
            mask = session.mask_path(t, cam)
            entry = {"timestep_index": t, "timestep_index_original": t, "timestep_id": f"frame_{t:05d}",
                     "camera_index": c, "camera_id": cam,
                     "file_path": str(Path("..") / image.relative_to(session.root)),
                     "transform_matrix": opencv_cam_from_world_to_opengl_world_from_cam(cam_from_world[c]).tolist(),
                     "fl_x": float(fx), "fl_y": float(fy), "cx": float(cx), "cy": float(cy), "w": int(w), "h": int(h),
                     "camera_angle_x": 2 * math.atan(w / (2 * fx)), "camera_angle_y": 2 * math.atan(h / (2 * fy)),
                     "flame_param_path" if flame else "head_param_path": rel}
            if mask is not None:
                entry["fg_mask_path"] = str(Path("..") / mask.relative_to(session.root))
            frames.append(entry)
    first = frames[0]
    doc = {key: first[key] for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")}
    doc.update({"convention": "OpenGL camera-to-world transform_matrix (x right, y up, z back), metres",
                "head_model": model.name, "timestep_indices": list(range(session.frame_count)),
                "camera_indices": list(range(len(cameras))), "frames": frames})
    write_json(folder / "transforms.json", doc)


def overlay_frame(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray,
                  camera=None) -> np.ndarray:
    """The image with the mesh's shaded render blended over it (60%) and its outline in green."""
    import cv2
    import torch

    from headcap.reconstruct.rasterize_mesh import render_mesh

    class _Cam:
        pass

    cam = _Cam()
    cam.K, cam.cam_from_world, cam.width, cam.height = K, cam_from_world, image.shape[1], image.shape[0]
    cam.distortion_model = camera.distortion_model if camera is not None else "none"
    cam.distortion = camera.distortion if camera is not None else np.zeros(0)
    v = torch.as_tensor(vertices, dtype=torch.float64)
    centre = -cam_from_world[:3, :3].T @ cam_from_world[:3, 3]
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = 2.0 * np.sqrt(np.pi) * 0.6
    view = torch.as_tensor((centre - vertices.mean(0)) / np.linalg.norm(centre - vertices.mean(0)))
    sh[[3, 1, 2], :] = (0.9 * view[[0, 1, 2]])[:, None]
    out = render_mesh(v, torch.as_tensor(faces, dtype=torch.int64), cam, sh_coeffs=sh)
    mask = out["mask"].numpy() > 0.5
    shaded = np.clip(out["rgb"].numpy() * 255.0, 0, 255).astype(np.uint8)
    blend = image.copy()
    blend[mask] = (0.4 * image[mask] + 0.6 * shaded[mask]).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(blend, contours, -1, (60, 255, 60), 1)
    return blend


def write_overlay(folder: Path, session, cameras: list[str], K: np.ndarray, cam_from_world: np.ndarray,
                  vertices: np.ndarray, faces: np.ndarray, max_cameras: int = 4) -> None:
    """overlay.mp4 (the first `max_cameras` cameras side by side, every frame) and overlay.png."""
    import cv2
    import imageio.v3 as iio

    from headcap.core.fileio import atomic_write_bytes

    rig = session.load_rig()
    shown = list(range(min(len(cameras), max_cameras)))
    frames = []
    for t in range(session.frame_count):
        tiles = []
        for c in shown:
            image = cv2.cvtColor(cv2.imread(str(session.image_path(t, cameras[c]))), cv2.COLOR_BGR2RGB)
            tiles.append(overlay_frame(image, vertices[t], faces, K[c], cam_from_world[c], rig[cameras[c]]))
        height = max(tile.shape[0] for tile in tiles)
        tiles = [cv2.resize(tile, (round(tile.shape[1] * height / tile.shape[0]), height)) for tile in tiles]
        row = np.concatenate(tiles, axis=1)
        frames.append(row[: row.shape[0] // 2 * 2, : row.shape[1] // 2 * 2])
    ok, png = cv2.imencode(".png", cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
    atomic_write_bytes(folder / "overlay.png", png.tobytes())
    data = iio.imwrite("<bytes>", np.stack(frames), extension=".mp4", fps=float(session.fps or 30.0), codec="libx264",
                       plugin="pyav")
    atomic_write_bytes(folder / "overlay.mp4", data)
