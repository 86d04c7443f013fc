"""`headcap ingest`: per-camera videos, image folders, NeRSemble, nerfstudio or a phone video ->
one session folder (session.json), synchronised, masked and colour-matched.

Stages (each result is checkpointed in `<out>.partial/.ingest/state.json`, so an interrupted run
resumes where it stopped):
1. analysis: decode every frame once (luma only); keep timestamps, mean brightness, frame-to-frame change
   and a few downscaled sample frames per camera (capture/ingest_analysis.py; the `--resize`
   syntax and the camera of a resized image are capture/frame_size.py, which both use);
2. sync: slots, drops, duplicates, offsets (capture/sync.py) and the output frame plan;
3. colour: 3x4 matrices to the reference camera (capture/colour.py);
4. write: frames, masks, rig.json, session.json into `<out>.partial/`, then the commit (`_commit`:
   renames only, under the output's lock; docs/reliability.md).
A failure on bad input removes `<out>.partial`; an interruption keeps it for the next run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from headcap.core.faults import kill_point
from headcap.core.fileio import claim_work_dir, read_json, swap_into_place, write_json
from headcap.capture import ingest_analysis as analysis_mod
from headcap.capture.adapters import Source, discover
from headcap.capture.colour import apply_colour
from headcap.capture.frame_size import parse_resize
from headcap.capture.masks import MatteConfig, matte
from headcap.capture.session import FrameEntry, Session, read_session
from headcap.capture.video import _upright, iter_video, read_image, write_image

STATE = ".ingest/state.json"


@dataclass
class IngestConfig:
    format: Literal["auto", "videos", "images", "nersemble", "nerfstudio", "monocular"] = "auto"
    """Source layout (auto: detected from SRC)."""
    start: int = 0
    """First synchronised frame to keep."""
    end: int | None = None
    """One past the last synchronised frame to keep (None: to the end)."""
    stride: int = 1
    """Keep every n-th frame."""
    resize: str | None = None
    """Long side in pixels ("512") or an exact size ("550x802"); None keeps the source size."""
    image_format: Literal["png", "jpg"] = "png"
    """Format of the written frames."""
    jpeg_quality: int = 95
    """JPEG quality with image_format jpg."""
    sync: Literal["auto", "timestamps", "flash", "audio", "none"] = "auto"
    """How to align cameras (auto: a flash if every camera sees one, else a shared sound, else
    container timestamps)."""
    max_offset_s: float = 5.0
    """Largest offset between cameras (seconds)."""
    on_missing: Literal["skip", "fill"] = "skip"
    """A frame some camera dropped: skip it, or fill it with that camera's previous frame."""
    masks: Literal["auto", "plate", "none"] = "auto"
    """Background-plate matting (user masks are always kept)."""
    grabcut: bool = False
    """Refine mask boundaries with GrabCut."""
    matte: MatteConfig = field(default_factory=MatteConfig)
    colour: Literal["auto", "chart", "subject", "none"] = "auto"
    """Colour matching between cameras."""
    reference: str | None = None
    """Reference camera for colour (default: the first camera)."""
    fps: float | None = None
    """Frame rate for image sequences (default 30) or to override a video's."""
    fov: float = 60.0
    """Monocular: horizontal field of view guess (degrees) when the video has no focal length tag."""
    calibration: str | None = None
    """rig.json, NeRSemble camera_params.json or transforms.json for the videos and images formats."""
    background: str | None = None
    """Folder of per-camera background plates (default: SRC/background)."""
    sequence: str | None = None
    """NeRSemble: sequence name inside a participant folder."""
    skip_bad: bool = False
    """Warn and drop bad cameras, or unreadable frames of image sequences, instead of failing."""
    checkpoint_every: int = 8
    """Frames between resume checkpoints."""
    workers: int = 0
    """Threads for decode/matte/encode (0: one per CPU)."""


@dataclass
class IngestHooks:
    """Injection points (tests interrupt a run after k frames; the CLI shows progress)."""

    after_frame: Callable[[int], None] | None = None
    log: Callable[[str], None] = print
    progress: bool = True


def _fingerprint(source: Source, config: IngestConfig) -> str:
    items = []
    for cs in source.cameras:
        for p in ([cs.video] if cs.video else cs.images) + list(cs.background):
            st = p.stat()
            items.append((str(p), st.st_size, int(st.st_mtime)))
    opts = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_every", "workers")}
    blob = json.dumps([items, opts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _check_config(config: IngestConfig) -> None:
    """Refuse option values that would otherwise surface later as a confusing error (or none)."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if config.image_format not in ("png", "jpg"):
        raise ValueError(f"--image-format: expected png or jpg, got {config.image_format!r}")
    if not (isinstance(config.jpeg_quality, int) and 0 <= config.jpeg_quality <= 100):
        raise ValueError(f"--jpeg-quality: expected an integer from 0 to 100, got {config.jpeg_quality!r}")
    if not (number(config.max_offset_s) and config.max_offset_s >= 0):
        raise ValueError(f"--max-offset: expected a finite number of seconds >= 0, got {config.max_offset_s!r}")
    if config.fps is not None and not (number(config.fps) and config.fps > 0):
        raise ValueError(f"--fps: expected a positive frame rate, got {config.fps!r}")
    if not (isinstance(config.workers, int) and config.workers >= 0):
        raise ValueError(f"--workers: expected an integer >= 0 (0: one per CPU), got {config.workers!r}")
    if config.resize is not None:
        parse_resize(config.resize, 1000, 1000)  # the syntax and sign, before any decoding


def _load_calibration(path: str):
    from headcap.core.fileio import read_json as _read
    from headcap.calib.rig_io import rig_from_dict

    p = Path(path)
    data = _read(p)
    if isinstance(data, dict) and "world_2_cam" in data:
        from headcap.capture.adapters import _read_nersemble_quiet

        return _read_nersemble_quiet(p)
    if isinstance(data, dict) and "frames" in data:
        from headcap.calib.formats.nerfstudio import rig_from_transforms

        return rig_from_transforms(data, p)
    return rig_from_dict(data, p)


class _Cursor:
    """Sequential access to one camera's decoded frames by ordinal (decoding forward only)."""

    def __init__(self, cs):
        self.cs = cs
        self.iterator = None
        self.position = -1
        self.frame = None

    def get(self, ordinal: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 frame `ordinal`; a video frame is converted straight to `size` (w, h) by
        swscale when that differs from its own (one pass instead of RGB at full size + resize)."""
        if self.cs.video is None:
            # Image sequences allow random access: no need to read the frames in between.
            if ordinal != self.position:
                self.frame, self.position = read_image(self.cs.images[ordinal]), ordinal
            return self.frame
        if self.iterator is None:
            self.iterator = iter_video(self.cs.video, raw=True)
        if ordinal < self.position:
            raise RuntimeError(f"{self.cs.video}: internal error, frame {ordinal} requested after {self.position}")
        while self.position < ordinal:
            _, self.frame, self.rotation = next(self.iterator)
            self.position += 1
        frame, rotation = self.frame, self.rotation
        own = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        if size is None or tuple(size) == own:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            w, h = (size[1], size[0]) if rotation in (90, 270) else size
            rgb = frame.reformat(width=int(w), height=int(h), format="rgb24", interpolation="AREA").to_ndarray()
        return _upright(rgb, rotation)

    def close(self):
        if self.iterator is not None:
            self.iterator.close()


def _process(image, user_mask_path, plate, size, matrix, config: IngestConfig):
    import cv2

    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    mask = None
    if user_mask_path is not None:
        m = read_image(user_mask_path, cv2.IMREAD_GRAYSCALE)
        if (m.shape[1], m.shape[0]) != size:
            m = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)
        mask = m
    elif plate is not None:
        cfg = config.matte if not config.grabcut else MatteConfig(**{**asdict(config.matte), "grabcut": True})
        mask = matte(image, plate, cfg)
    if matrix is not None:
        image = apply_colour(image, np.asarray(matrix))
    return image, mask


def _prepare_partial(out: Path, fingerprint: str, log) -> tuple[Path, dict]:
    partial = out.with_name(out.name + ".partial")
    state_path = partial / STATE
    if state_path.is_file():
        try:
            state = read_json(state_path)
        except ValueError:
            state = None
        if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
            log(f"resuming the interrupted ingest in {partial} ({state.get('done', 0)} frames written)")
            return partial, state
        log(f"{partial}: left by an ingest of other inputs or options; starting over")
    claim_work_dir(partial, lambda work: (work / ".ingest").is_dir(), "headcap ingest")
    (partial / ".ingest").mkdir()
    state = {"fingerprint": fingerprint, "done": 0}
    write_json(state_path, state)
    return partial, state


def ingest(src, out, config: IngestConfig | None = None, hooks: IngestHooks | None = None,
           overwrite: bool = False) -> Session:
    """Ingest `src` into the session folder `out`; returns the written Session.

    Holds the output's lock (headcap.core.lock.OutputLock: `<parent>/.<name>.lock`) from the first
    check to the end. `overwrite` replaces only a session headcap ingest wrote (its session.json
    records the ingest), never SRC or a folder holding it. A commit that a crash interrupted is
    finished or undone first (see `_commit`); if it was of the same inputs and options, its
    session is the result.
    """
    from headcap.core.lock import OutputLock

    config = config or IngestConfig()
    hooks = hooks or IngestHooks()
    out = Path(out)
    _check_config(config)
    _check_not_source(src, out, config)
    with OutputLock(out, "headcap ingest"):
        source = discover(src, config.format, Path(config.background) if config.background else None,
                          config.sequence)
        if config.calibration:
            source.rig = _load_calibration(config.calibration)
        fingerprint = _fingerprint(source, config)
        if _recover(out, hooks.log) == fingerprint:
            return read_session(out)
        if out.exists():
            if not overwrite:
                raise ValueError(f"{out}: already exists (pass --overwrite to replace it)")
            if not _is_ingest_session(out) and not (out.is_dir() and not any(out.iterdir())):
                raise ValueError(f"{out}: exists and is not a session written by headcap ingest "
                                 "(its session.json does not record one); refusing to replace it")
        partial, state = _prepare_partial(out, fingerprint, hooks.log)
        state_path = partial / STATE
        try:
            plate_cache: dict = {}
            if "plan" not in state:
                state.update(analysis_mod.analyse(source, config, hooks, plate_cache))
                write_json(state_path, state)
            session = _write(source, config, hooks, partial, state, plate_cache)
        except ValueError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        kill_point("ingest", "written")
        _commit(partial, out, state)
        _finish(out)
    session.root = out
    return session


def _check_not_source(src, out: Path, config: IngestConfig) -> None:
    """--out must not be SRC, nor a folder holding SRC or the --calibration/--background it reads."""
    target = Path(os.path.realpath(out))
    reads = {"SRC": src, "--calibration": config.calibration, "--background": config.background}
    for flag, path in reads.items():
        if path is None:
            continue
        real = Path(os.path.realpath(path))
        if real == target or target in real.parents:
            raise ValueError(f"--out {out}: is or holds the input {flag} {path}; choose another output folder")


def _is_ingest_session(folder: Path) -> bool:
    try:
        data = read_json(folder / "session.json")
    except (ValueError, OSError):
        return False
    return isinstance(data, dict) and isinstance(data.get("extra"), dict) and isinstance(data["extra"].get("ingest"), dict)


def _old_dirs(out: Path) -> list[Path]:
    """Where a commit keeps the session it replaces (and the name older versions used)."""
    return [out.with_name(f".{out.name}.old"), out.with_name(out.name + ".replaced")]


def _read_state(folder: Path) -> dict | None:
    try:
        state = read_json(folder / STATE)
    except (ValueError, OSError):
        return None
    return state if isinstance(state, dict) else None


def _commit(partial: Path, out: Path, state: dict) -> None:
    """Swap the finished work folder into place; each step is a rename or an atomic write, so a
    crash at any line leaves either the old session or the new one, and `_recover` finishes or
    undoes the half-done commit: 1. state.json says "complete", 2. out -> .out.old, 3. work folder
    -> out, 4. remove .out.old, 5. (`_finish`) out/.ingest -> out/.ingest.done, removed."""
    state["complete"] = True
    write_json(partial / STATE, state)
    kill_point("ingest", "complete")
    swap_into_place(partial, out, _old_dirs(out)[0], on_step=lambda point: kill_point("ingest", point))


def _finish(out: Path) -> None:
    if (out / ".ingest").exists():
        os.replace(out / ".ingest", out / ".ingest.done")
        kill_point("ingest", "state-moved")
    shutil.rmtree(out / ".ingest.done", ignore_errors=True)


def _recover(out: Path, log) -> str | None:
    """Finish or undo a commit a crash interrupted; returns the fingerprint of the ingest whose
    commit this finished (None when there was none)."""
    partial = out.with_name(out.name + ".partial")
    for old in _old_dirs(out):
        if not old.exists():
            continue
        if not out.exists():
            state = _read_state(partial)
            if state is not None and state.get("complete"):
                os.replace(partial, out)
            else:
                os.replace(old, out)
                log(f"{out}: an earlier ingest was interrupted while replacing it; restored the previous session")
                continue
        shutil.rmtree(old)
    finished = None
    state = _read_state(out) if out.is_dir() else None
    if state is not None and state.get("complete"):
        log(f"{out}: an earlier ingest was interrupted while committing it; finished its commit")
        finished = state.get("fingerprint")
    if out.is_dir() and ((out / ".ingest").exists() or (out / ".ingest.done").exists()):
        _finish(out)
    return finished


def _verified_done(partial: Path, cameras: list[str], suffix: str, done: int, log) -> int:
    """The number of leading frames whose images all exist and are non-empty (<= done)."""
    for i in range(done):
        for cam in cameras:
            p = partial / "images" / cam / f"{i:06d}.{suffix}"
            try:
                ok = p.stat().st_size > 0
            except FileNotFoundError:
                ok = False
            if not ok:
                log(f"{p}: missing although checkpointed (lost in a crash?); resuming from frame {i}")
                return i
    return done


def _write(source: Source, config: IngestConfig, hooks: IngestHooks, partial: Path, state: dict,
           plate_cache: dict | None = None) -> Session:
    plan = state["plan"]
    cameras: list[str] = plan["cameras"]
    by_id = {cs.camera: cs for cs in source.cameras}
    for cam, indices in plan.get("skipped_files", {}).items():
        analysis_mod.drop_frames(by_id[cam], indices)
    fps = plan["fps"]
    n_out = len(plan["globals"])
    suffix = "jpg" if config.image_format == "jpg" else "png"
    plates = analysis_mod.load_plates(source, cameras, plan, config, cache=plate_cache)
    cursors = {c: _Cursor(by_id[c]) for c in cameras}
    workers = config.workers or min(len(cameras), os.cpu_count() or 1)
    done = _verified_done(partial, cameras, suffix, int(state.get("done", 0)), hooks.log)

    def job(cam: str, i: int):
        cs = by_id[cam]
        ordinal = plan["source"][cam][i]
        size = tuple(plan["size"][cam])
        image = cursors[cam].get(ordinal, size)
        user = cs.masks[ordinal] if cs.masks else None
        img, mask = _process(image, user, plates.get(cam), size, state["colour"]["matrices"].get(cam), config)
        write_image(partial / "images" / cam / f"{i:06d}.{suffix}", img, config.jpeg_quality)
        if mask is not None:
            write_image(partial / "masks" / cam / f"{i:06d}.png", mask, mask=True)
        return mask is not None

    for cam in cameras:
        (partial / "images" / cam).mkdir(parents=True, exist_ok=True)
        (partial / "masks" / cam).mkdir(parents=True, exist_ok=True)
    has_mask = set(state.get("has_mask", []))
    progress = analysis_mod.progress_bar(hooks.progress)
    try:
        with progress, ThreadPoolExecutor(max_workers=workers) as pool:
            task = progress.add_task("ingest: writing frames", total=n_out, completed=done)
            for i in range(done, n_out):
                results = list(pool.map(lambda c: (c, job(c, i)), cameras))
                has_mask.update(c for c, ok in results if ok)
                progress.advance(task)
                finished = i + 1
                if finished % config.checkpoint_every == 0 or finished == n_out:
                    # Only the checkpoint is fsynced (write_json): a whole-system sync per checkpoint
                    # stalls on every other process's dirty pages. Frames it claims that a power
                    # cut lost are found missing on resume (_verified_done) and written again.
                    state["done"], state["has_mask"] = finished, sorted(has_mask)
                    write_json(partial / STATE, state)
                if hooks.after_frame is not None:
                    hooks.after_frame(i)
    finally:
        for cursor in cursors.values():
            cursor.close()
    for cam in cameras:
        if cam not in has_mask:
            shutil.rmtree(partial / "masks" / cam, ignore_errors=True)
    rig_rel = None
    if plan.get("rig") is not None:
        from headcap.calib.rig_io import rig_from_dict, write_rig

        write_rig(rig_from_dict(plan["rig"]), partial / "rig.json")
        rig_rel = "rig.json"
    frames = []
    for i, g in enumerate(plan["globals"]):
        frames.append(FrameEntry(i, (g - plan["globals"][0]) / fps,
                                 {c: f"images/{c}/{i:06d}.{suffix}" for c in cameras},
                                 {c: f"masks/{c}/{i:06d}.png" for c in cameras if c in has_mask}))
    extra = {"ingest": {"source": str(Path(source.root).resolve()), "format": source.format,
                        "options": {k: v for k, v in asdict(config).items() if k != "matte"},
                        "matte": asdict(config.matte), "notes": source.notes,
                        "sync": state["sync"], "colour": state["colour"], "warnings": state.get("warnings", []),
                        "frame_map": {"global": plan["globals"], "source": plan["source"]}}}
    session = Session(partial, Path(source.root).name if source.format != "monocular" else Path(source.cameras[0].video).stem,
                      fps, cameras, frames, rig_rel, {}, extra)
    session.save()
    return session
