"""`synthesize_session`: the synthetic studio end to end (what `headcap synth` runs).

Session folder written (all paths relative, read back by capture.session.read_session):

    session.json, rig.json, contact_sheet.png
    images/<cam>/<frame:06d>.png          RGB renders (+ optional seeded Gaussian noise)
    masks/<cam>/<frame:06d>.png           0/255: pixel centres covered by the head (before noise)
    calibration/<cam>/<k:03d>.png         the ChArUco board held in `calib_frames` poses
    ground_truth/params.npz               identity [Ni], expression [T, Ne], joint_rotations
                                          [T, J, 3], world_from_head [T, 4, 4], names, times
    ground_truth/vertices.npz             vertices float32 [T, V, 3] (world), faces [F, 3],
                                          render_faces [F', 3] (the triangles drawn)
    ground_truth/landmarks.npz            landmarks float32 [T, L, 3] (world), landmark_ids [L]
    ground_truth/cameras.npz              cam_from_world [T, C, 4, 4], K [C, 3, 3], distortion
    ground_truth/calibration.npz          world_from_board [K, 4, 4] + every visible corner
    ground_truth/appearance.npz           sh_coeffs [9, 3], vertex albedo, backdrops

Every random draw comes from a generator seeded by (seed, stream name), so the same seed gives
bit-identical files and adding a stream never shifts another.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from headcap.calib.boards import BoardSpec, ray_directions, render_board_view
from headcap.calib.camera import Camera, Rig
from headcap.core.faults import kill_point
from headcap.core.fileio import claim_work_dir, fsync_dir, read_json, swap_into_place, write_json
from headcap.core.threads import torch_threads
from headcap.calib.rig_io import write_rig
from headcap.calib.synthetic_boards import board_poses_facing
from headcap.capture.session import FrameEntry, Session
from headcap.studio import motion as motion_mod
from headcap.studio.appearance import procedural_appearance, textured_appearance
from headcap.studio.render import backdrop, frame_normals, render_view, to_uint8
from headcap.studio.rig_layout import MonocularPathConfig, RigLayoutConfig, monocular_path, studio_rig
from headcap.studio.writer import add_noise, contact_sheet, write_npz, write_png

__all__ = ["StudioConfig", "SynthResult", "synthesize_session", "default_board", "board_texture_pps", "stream"]

GENERATOR = "headcap synth"
_PARTIAL_MARKER = ".headcap_synth_partial"
Progress = Callable[[str, int, int], None]


def check_counts(config) -> None:
    """Upper bounds: a thread count or size libraries would crash or run out of memory on."""
    from headcap.core.limits import check_count, check_threads

    check_threads(config.threads, "synth: field 'threads'")
    for name, high in (("cameras", 1024), ("frames", 100_000), ("calib_frames", 10_000), ("seed", 2**63 - 1)):
        check_count(getattr(config, name), f"synth: field '{name}'", 0, high)


@dataclass(frozen=True)
class StudioConfig:
    cameras: int = 16
    """Number of rig cameras (ignored with `monocular`)."""
    frames: int = 30
    """Number of frames."""
    resolution: int = 256
    """Image width and height in pixels."""
    noise: float = 0.0
    """Standard deviation of the Gaussian image noise, in units of full scale (0.01 = 2.55 levels)."""
    seed: int = 0
    """Random seed (same seed, bit-identical files)."""
    monocular: bool = False
    """One moving camera instead of the rig."""
    scan: str | None = None
    """Folder of the Lee Perry-Smith scan (or its .glb): render the rigid scan instead of a head model."""
    head: str = "default"
    """Head model spec for reconstruct.head_loaders.load_head_model: default | ict:PATH | flame:PATH | npz:PATH."""
    calib_frames: int = 10
    """ChArUco board poses filmed per camera."""
    fps: float = 30.0
    """Frame rate."""
    board: str = "auto"
    """ChArUco spec 'charuco:COLSxROWS:SQUARE:MARKER:DICT', or 'auto' (sized to the field of view)."""
    threads: int = 1
    """Torch/OpenMP threads while rendering (views are small; 1 avoids oversubscription)."""
    name: str = ""
    """Session name recorded in session.json (default: synth_seed<SEED>)."""
    lens_distortion: bool = True
    """Give the rig cameras OpenCV lens distortion (False: ideal pinhole cameras, as undistorted
    datasets such as NeRSemble ship; the random draws are the same either way)."""

    def __post_init__(self):
        for field_name, low in (("cameras", 1), ("frames", 1), ("resolution", 16), ("calib_frames", 0), ("threads", 1)):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"synth: field '{field_name}' must be an integer >= {low}, got {value!r}")
        check_counts(self)
        if self.resolution > 4096:
            raise ValueError(f"synth: field 'resolution' must be <= 4096, got {self.resolution}")
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and 0 <= self.noise <= 0.5):
            raise ValueError(f"synth: field 'noise' must be in [0, 0.5], got {self.noise!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"synth: field 'seed' must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"synth: field 'fps' must be positive, got {self.fps!r}")
        if self.board != "auto":
            spec = BoardSpec.parse(self.board)  # fail before rendering, not after
            if spec.kind != "charuco":
                raise ValueError(f"synth: field 'board' must be a ChArUco board, got {self.board!r}")


@dataclass
class SynthResult:
    root: Path
    session: Session
    rig: Rig
    timings: dict[str, float]


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator of one named random stream of a seed (crc32 of the name as spawn key)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def default_board(camera: Camera) -> BoardSpec:
    """A ChArUco board that fills ~70% of the view at the head's distance with >= ~2.5 px per
    marker bit: fewer, larger squares at low resolution."""
    distance = float(np.linalg.norm(camera.centre))
    extent = camera.width / camera.K[0, 0] * distance
    cols = int(np.clip(round(camera.width / 45), 4, 9))
    rows = cols - 1
    square = math.floor(0.7 * extent / cols * 1000) / 1000
    marker = math.floor(0.78 * square * 1000) / 1000
    return BoardSpec.parse(f"charuco:{cols}x{rows}:{square:g}:{marker:g}:DICT_4X4_50")


def board_texture_pps(spec: BoardSpec, camera: Camera, supersample: int = 2) -> int:
    """Texels per board square for `camera`: about two per sub-pixel sample of a square seen
    face-on at the head's distance, and one that cv2's board drawing accepts (OpenCV 5's
    CharucoBoard.generateImage rejects some sizes, e.g. 49 px per square on a 4x3 board)."""
    import cv2

    distance = float(np.linalg.norm(camera.centre))
    want = int(np.clip(round(2 * supersample * spec.square * camera.K[0, 0] / distance), spec.min_texture_pps, 320))
    for pps in range(want, want + 16):
        try:
            spec.board_image(pps)
        except cv2.error:
            continue
        return pps
    raise ValueError(f"synth: board {spec} cannot be drawn at {want}..{want + 15} px per square")


def _load_head(config: StudioConfig):
    if config.scan:
        from headcap.studio.scan import SCAN_CREDIT, load_scan

        model, texture = load_scan(config.scan)
        return model, texture, [SCAN_CREDIT]
    from headcap.reconstruct.head_loaders import load_head_model

    model = load_head_model(config.head)
    return model, None, [model.licence] if model.licence else []


def _rotation_centre(neutral_vertices: np.ndarray, neutral_landmarks: np.ndarray) -> np.ndarray:
    """A point inside the skull about which the head turns and at which the cameras aim:
    8 cm behind the face landmarks' centroid, or the bounding-box centre of the mesh for models
    with too few landmarks."""
    if len(neutral_landmarks) < 5:
        return 0.5 * (neutral_vertices.min(axis=0) + neutral_vertices.max(axis=0))
    return neutral_landmarks.mean(axis=0) - np.array([0.0, 0.0, 0.08])


def _prepare_output(out: Path, overwrite: bool) -> Path:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        manifest = out / "session.json"
        ours = manifest.is_file() and _is_synth_session(manifest)
        if not overwrite:
            raise ValueError(f"synth: --out {out} already exists (pass --overwrite to replace a synthetic session)")
        if not ours:
            raise ValueError(f"synth: --out {out} exists and is not a session written by `{GENERATOR}`; refusing to replace it")
    partial = claim_work_dir(_partial_dir(out), lambda work: (work / _PARTIAL_MARKER).is_file(), GENERATOR)
    write_json(partial / _PARTIAL_MARKER, {"state": "in progress"})
    return partial


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _old_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _marker_state(folder: Path) -> dict | None:
    """The in-progress marker of a synth work folder (None: none or unreadable)."""
    try:
        data = read_json(folder / _PARTIAL_MARKER)
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _is_synth_session(manifest: Path) -> bool:
    try:
        data = read_json(manifest)
    except (ValueError, FileNotFoundError):
        return False
    return isinstance(data, dict) and isinstance(data.get("extra"), dict) and data["extra"].get("generator") == GENERATOR


def _commit(partial: Path, out: Path, config: StudioConfig) -> None:
    """Swap the finished work folder into place. Each step is a rename or an atomic write, so a
    crash at any line leaves either the old session or the new one (`_recover` finishes or undoes
    the half-done commit): 1. the marker in the work folder says "complete" (with the config),
    2. out -> .out.old, 3. work folder -> out, 4. remove .out.old, 5. remove the marker."""
    write_json(partial / _PARTIAL_MARKER, {"state": "complete", "config": _config_record(config)})
    kill_point("synth", "complete")
    swap_into_place(partial, out, _old_dir(out), on_step=lambda point: kill_point("synth", point))


def _finish(out: Path) -> None:
    """The last step of a commit: the session at `out` loses its marker."""
    (out / _PARTIAL_MARKER).unlink(missing_ok=True)
    fsync_dir(out)


def _config_record(config: StudioConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def _recover(out: Path, log: Callable[[str], None]) -> dict | None:
    """Finish or undo a commit that a crash interrupted (see _commit). Returns the config of a
    session whose commit this finished (None when there was none)."""
    partial, old = _partial_dir(out), _old_dir(out)
    if old.exists() and not out.exists():
        state = _marker_state(partial) if partial.is_dir() else None
        if state is not None and state.get("state") == "complete":
            os.replace(partial, out)
        else:
            os.replace(old, out)
            log(f"synth: an earlier run was interrupted while replacing {out}; restored the previous session")
    state = _marker_state(out) if out.is_dir() else None
    if old.exists():
        shutil.rmtree(old)
    if state is not None and state.get("state") == "complete":
        _finish(out)
        log(f"synth: an earlier run was interrupted while committing {out}; finished its commit")
        return state.get("config")
    return None




def synthesize_session(config: StudioConfig, out: str | os.PathLike, progress: Progress | None = None,
                       overwrite: bool = False, log: Callable[[str], None] | None = None) -> SynthResult:
    """Render and write a complete synthetic session to `out` (built in `out`.partial, renamed
    into place when complete), holding the output's lock (headcap.core.lock.OutputLock) throughout.

    A run interrupted during an earlier commit is finished (or undone) first; if that commit was
    of the same config, its session is the result and nothing is rendered again."""
    import sys
    import time

    from headcap.capture.session import read_session
    from headcap.calib.rig_io import read_rig
    from headcap.core.lock import OutputLock

    out = Path(out)
    report = progress or (lambda stage, done, total: None)
    log = log or (lambda message: print(message, file=sys.stderr))
    timings: dict[str, float] = {}
    with OutputLock(out, "headcap synth"):
        if _recover(out, log) == _config_record(config):
            timings.update(setup=0.0, render=0.0, calibration=0.0, write=0.0)
            return SynthResult(out, read_session(out), read_rig(out / "rig.json"), timings)
        with torch_threads(config.threads):
            tic = time.perf_counter()
            model, texture, credits = _load_head(config)
            scene = _build_scene(config, model, texture)
            timings["setup"] = time.perf_counter() - tic
            partial = _prepare_output(out, overwrite)
            try:
                _write_session(config, scene, partial, credits, report, timings)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        kill_point("synth", "rendered")
        _commit(partial, out, config)
        session = read_session(out)
        _finish(out)
    return SynthResult(out, session, scene["rig"], timings)


def render_session_into(config: StudioConfig, folder: str | os.PathLike,
                        progress: Progress | None = None) -> dict[str, float]:
    """Render the session into `folder`, an existing folder owned by the caller (a pipeline
    stage's work folder, committed by the runner); returns the timings. No commit step."""
    import time

    folder = Path(folder)
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    with torch_threads(config.threads):
        tic = time.perf_counter()
        model, texture, credits = _load_head(config)
        scene = _build_scene(config, model, texture)
        timings["setup"] = time.perf_counter() - tic
        _write_session(config, scene, folder, credits, report, timings)
    return timings


def _build_scene(config: StudioConfig, model, texture) -> dict:
    T = config.frames
    motion_cfg = motion_mod.MotionConfig(fps=config.fps)
    identity = motion_mod.sample_identity(model.num_identity, stream(config.seed, "identity"),
                                          motion_cfg.identity_scale, motion_cfg.identity_clip)
    with torch.no_grad():
        neutral_out = model.forward(identity=torch.from_numpy(identity)[None]) if model.num_identity else model.forward()
    neutral = neutral_out.vertices[0]
    rng_app = stream(config.seed, "appearance")
    if texture is not None:
        appearance = textured_appearance(model, texture, rng_app, description="Lee Perry-Smith scan texture (Map-COL.jpg)")
    else:
        appearance = procedural_appearance(model, neutral, rng_app)
    rng_motion = stream(config.seed, "motion")
    curves = motion_mod.expression_curves(T, rng_motion, motion_cfg)
    expression, used = motion_mod.map_expressions(curves, model.expression_names)
    joint_rotations = motion_mod.gaze_rotations(T, model.joint_names, rng_motion, motion_cfg)
    centre = _rotation_centre(neutral.double().numpy(), neutral_out.landmarks[0].double().numpy())
    world_from_head = motion_mod.head_motion(T, rng_motion, centre, motion_cfg)

    with torch.no_grad():
        kwargs = {"world_from_head": torch.from_numpy(world_from_head).to(model.dtype)}
        if model.num_identity:
            kwargs["identity"] = torch.from_numpy(identity)[None].expand(T, -1)
        if model.num_expression:
            kwargs["expression"] = torch.from_numpy(expression)
        if model.num_joints:
            kwargs["joint_rotations"] = torch.from_numpy(joint_rotations)
        posed = model.forward(**kwargs)
    vertices = posed.vertices.float().contiguous()
    landmarks = posed.landmarks.float().contiguous()

    rng_rig = stream(config.seed, "rig")
    if config.monocular:
        camera, poses = monocular_path(T, MonocularPathConfig(width=config.resolution, height=config.resolution, fps=config.fps), rng_rig)
        rig = Rig.from_list([camera])
        cam_from_world = poses[:, None]
    else:
        rig = studio_rig(RigLayoutConfig(num_cameras=config.cameras, width=config.resolution, height=config.resolution), rng_rig)
        if not config.lens_distortion:
            rig = Rig.from_list([c.undistorted() for c in rig], where="studio rig")
        cam_from_world = np.broadcast_to(np.stack([c.cam_from_world for c in rig]), (T, len(rig), 4, 4)).copy()
    rng_bg = stream(config.seed, "backdrop")
    backgrounds = {c.id: backdrop(c.height, c.width, rng_bg) for c in rig}
    return {"model": model, "identity": identity, "expression": expression, "used": used,
            "joint_rotations": joint_rotations, "world_from_head": world_from_head, "vertices": vertices,
            "landmarks": landmarks, "appearance": appearance, "rig": rig, "cam_from_world": cam_from_world,
            "backgrounds": backgrounds}


def _frame_camera(camera: Camera, cam_from_world: np.ndarray) -> Camera:
    if np.array_equal(camera.cam_from_world, cam_from_world):
        return camera
    return camera.replace(cam_from_world=cam_from_world)


def _write_session(config: StudioConfig, scene: dict, root: Path, credits: list[str], report: Progress,
                   timings: dict[str, float]) -> None:
    import time

    rig: Rig = scene["rig"]
    model = scene["model"]
    appearance = scene["appearance"]
    T, ids = config.frames, rig.ids
    sheet_frame = T // 2
    sheet_images: list[np.ndarray] = []
    frames: list[FrameEntry] = []
    tic = time.perf_counter()
    for t in range(T):
        verts = scene["vertices"][t]
        normals = frame_normals(verts, appearance.render_faces)
        entry = FrameEntry(index=t, timestamp=t / config.fps, images={}, masks={})
        for c, cam_id in enumerate(ids):
            camera = _frame_camera(rig[cam_id], scene["cam_from_world"][t, c])
            view = render_view(verts, normals, camera, appearance, scene["backgrounds"][cam_id])
            rgb = add_noise(view["rgb"], config.noise, stream(config.seed, f"noise/{t}/{cam_id}"))
            image = to_uint8(rgb)
            image_rel, mask_rel = f"images/{cam_id}/{t:06d}.png", f"masks/{cam_id}/{t:06d}.png"
            write_png(root / image_rel, image)
            write_png(root / mask_rel, view["mask"].astype(np.uint8) * 255)
            entry.images[cam_id], entry.masks[cam_id] = image_rel, mask_rel
            if t == sheet_frame and not config.monocular:
                sheet_images.append(image)
        if config.monocular and (t % max(1, T // 16) == 0) and len(sheet_images) < 16:
            sheet_images.append(image)
        frames.append(entry)
        report("frames", t + 1, T)
    timings["render"] = time.perf_counter() - tic

    tic = time.perf_counter()
    spec = BoardSpec.parse(config.board) if config.board != "auto" else default_board(rig[ids[0]])
    # held a little in front of the head's rotation centre, each pose facing another camera
    poses = board_poses_facing(rig, config.calib_frames, spec, stream(config.seed, "board"), centre=(0.0, 0.0, 0.035),
                               spread_m=0.03, tilt_deg=20.0, roll_deg=20.0)
    calibration: dict[str, list[str]] = {}
    corner_rows: list[tuple[int, int, int, float, float]] = []
    for c, cam_id in enumerate(ids):
        camera = rig[cam_id]
        directions = ray_directions(camera, 2)
        pps = board_texture_pps(spec, camera)
        plate = to_uint8(scene["backgrounds"][cam_id])
        calibration[cam_id] = []
        for k in range(config.calib_frames):
            image, visible = render_board_view(camera, spec, poses[k], image=plate, supersample=2, directions=directions,
                                               texture_pps=pps)
            if config.noise > 0:
                image = to_uint8(add_noise(image.astype(np.float32) / 255.0, config.noise,
                                           stream(config.seed, f"calib-noise/{k}/{cam_id}")))
            rel = f"calibration/{cam_id}/{k:03d}.png"
            write_png(root / rel, image)
            calibration[cam_id].append(rel)
            corner_rows.extend((c, k, i, float(p[0]), float(p[1])) for i, p in sorted(visible.items()))
        report("calibration", c + 1, len(ids))
    timings["calibration"] = time.perf_counter() - tic

    tic = time.perf_counter()
    write_rig(rig, root / "rig.json")
    gt = root / "ground_truth"
    write_npz(gt / "params.npz",
              identity=scene["identity"], expression=scene["expression"],
              joint_rotations=scene["joint_rotations"], world_from_head=scene["world_from_head"],
              expression_names=np.array(model.expression_names, dtype=np.str_),
              joint_names=np.array(model.joint_names, dtype=np.str_),
              animated_expressions=np.array(scene["used"], dtype=np.str_),
              timestamps=np.arange(T) / config.fps)
    write_npz(gt / "vertices.npz", vertices=scene["vertices"].numpy(),
              faces=model.faces.numpy().astype(np.int32),
              render_faces=appearance.render_faces.numpy().astype(np.int32))
    write_npz(gt / "landmarks.npz", landmarks=scene["landmarks"].numpy(),
              landmark_ids=model.landmark_ids.numpy().astype(np.int32),
              convention=np.array(model.landmark_convention, dtype=np.str_))
    write_npz(gt / "cameras.npz", camera_ids=np.array(ids, dtype=np.str_), cam_from_world=scene["cam_from_world"],
              K=np.stack([rig[i].K for i in ids]), distortion=np.stack([rig[i].distortion for i in ids]))
    corners = np.array(corner_rows, dtype=np.float64).reshape(-1, 5)
    write_npz(gt / "calibration.npz", world_from_board=poses, board=np.array(str(spec), dtype=np.str_),
              corner_camera=corners[:, 0].astype(np.int32), corner_pose=corners[:, 1].astype(np.int32),
              corner_id=corners[:, 2].astype(np.int32), corner_pixel=corners[:, 3:5])
    app_arrays = {"sh_coeffs": appearance.sh_coeffs.numpy(),
                  "backdrop": np.stack([scene["backgrounds"][i][:, 0, :] for i in ids])}
    if appearance.vertex_colors is not None:
        app_arrays["vertex_albedo"] = appearance.vertex_colors.numpy()
    write_npz(gt / "appearance.npz", compress=True, **app_arrays)

    labels = ids if not config.monocular else [f"frame {t}" for t in range(0, T, max(1, T // 16))][:len(sheet_images)]
    write_png(root / "contact_sheet.png", contact_sheet(sheet_images, labels))

    extra = {
        "generator": GENERATOR,
        "synthetic": True,
        "seed": config.seed,
        "monocular": config.monocular,
        "noise": config.noise,
        "board": str(spec),
        "ground_truth": "ground_truth",
        "head_model": model.name,
        "head_model_spec": "scan" if config.scan else config.head,
        "licence": model.licence,
        "credits": credits,
        "appearance": appearance.description,
        "animated_expressions": list(scene["used"]),
        "config": {k: v for k, v in asdict(config).items() if k not in ("scan",)},
        "rig_note": ("monocular: rig.json holds the frame-0 pose; ground_truth/cameras.npz holds every frame's"
                     if config.monocular else "static rig: cam_from_world is the same in every frame"),
    }
    session = Session(root=root, name=config.name or f"synth_seed{config.seed}", fps=float(config.fps),
                      cameras=list(ids), frames=frames, rig="rig.json", calibration=calibration, extra=extra)
    write_json(root / "session.json", session.to_dict())
    timings["write"] = time.perf_counter() - tic
