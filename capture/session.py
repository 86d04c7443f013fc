"""`session.json`: the manifest of a capture session (schema_version 1).

```json
{"schema_version": 1, "name": "synth_0001", "fps": 30.0, "frame_count": 3,
 "cameras": ["cam00", "cam01"],
 "rig": "rig.json",
 "frames": [{"index": 0, "timestamp": 0.0,
             "images": {"cam00": "images/cam00/000000.png", "cam01": "images/cam01/000000.png"},
             "masks":  {"cam00": "masks/cam00/000000.png",  "cam01": "masks/cam01/000000.png"}}],
 "calibration": {"cam00": ["calibration/cam00/000.png"]},
 "extra": {}}
```
Every path is relative to the folder holding session.json and may not leave it. `masks` and
`calibration` are optional; `rig` is optional until calibration has run. `extra` holds free-form
metadata (ingest provenance, ground-truth folder of a synthetic session, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from headcap.core.fileio import FileFormatError, read_json, require, safe_relative_path, write_json

SCHEMA_VERSION = 1
MANIFEST = "session.json"


@dataclass
class FrameEntry:
    index: int
    timestamp: float
    images: dict[str, str]
    masks: dict[str, str] = field(default_factory=dict)


@dataclass
class Session:
    """A session folder and its manifest. Paths are stored relative; `path()` resolves them."""

    root: Path
    name: str
    fps: float
    cameras: list[str]
    frames: list[FrameEntry]
    rig: str | None = None
    calibration: dict[str, list[str]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    @property
    def manifest_path(self) -> Path:
        return Path(self.root) / MANIFEST

    def path(self, relative: str, field_name: str = "<path>") -> Path:
        return safe_relative_path(self.root, relative, self.manifest_path, field_name)

    def image_path(self, frame: int, camera: str) -> Path:
        return self.path(self.frames[frame].images[camera], f"frames[{frame}].images.{camera}")

    def mask_path(self, frame: int, camera: str) -> Path | None:
        rel = self.frames[frame].masks.get(camera)
        return None if rel is None else self.path(rel, f"frames[{frame}].masks.{camera}")

    def rig_path(self) -> Path | None:
        return None if self.rig is None else self.path(self.rig, "rig")

    def input_files(self, cameras: list[str] | None = None, masks: bool = True, manifest: bool = True,
                    rig: bool = True) -> tuple[Path, ...]:
        """The files a stage reading this session depends on (what the runner hashes): the
        manifest, every frame's image of `cameras` (default: all), the masks that exist, and the rig
        when there is one."""
        files = [self.manifest_path] if manifest else []
        for t in range(self.frame_count):
            for cam in self.cameras if cameras is None else cameras:
                files.append(self.image_path(t, cam))
                mask = self.mask_path(t, cam) if masks else None
                if mask is not None and mask.is_file():
                    files.append(mask)
        if rig and self.rig_path() is not None:
            files.append(self.rig_path())
        return tuple(files)

    def load_rig(self):
        from headcap.calib.rig_io import read_rig

        path = self.rig_path()
        if path is None:
            raise FileFormatError(self.manifest_path, "rig", "this session has no rig yet (run `headcap calibrate`)")
        rig = read_rig(path)
        missing = [c for c in self.cameras if c not in rig.cameras]
        if missing:
            raise FileFormatError(self.manifest_path, "cameras", f"cameras {missing} are missing from the calibration {path}")
        return rig

    def to_dict(self) -> dict:
        out = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "fps": self.fps,
            "frame_count": self.frame_count,
            "cameras": list(self.cameras),
            "frames": [
                {"index": f.index, "timestamp": f.timestamp, "images": dict(f.images),
                 **({"masks": dict(f.masks)} if f.masks else {})}
                for f in self.frames
            ],
        }
        if self.rig is not None:
            out["rig"] = self.rig
        if self.calibration:
            out["calibration"] = {k: list(v) for k, v in self.calibration.items()}
        if self.extra:
            out["extra"] = self.extra
        return out

    def save(self) -> Path:
        write_json(self.manifest_path, self.to_dict())
        return self.manifest_path


def check_camera_id(cam_id, path, field_name: str) -> str:
    """A camera id names its folders (images/<id>/, masks/<id>/): refuse one that is not a single
    plain folder name, or writing (and the clean-up of empty mask folders) would leave the session."""
    if (not isinstance(cam_id, str) or not cam_id or cam_id in (".", "..")
            or any(c in cam_id for c in "/\\\0") or cam_id != cam_id.strip()):
        raise FileFormatError(path, field_name, f"camera id {cam_id!r} is not a plain folder name "
                              "(no '/', '\\', NUL, surrounding spaces, '.' or '..')")
    return cam_id


def _number(value, path, field_name) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FileFormatError(path, field_name, f"expected a finite number, got {value!r}")
    return float(value)


def session_from_dict(data, root: Path, path: Path | None = None, check_files: bool = False) -> Session:
    path = path or Path(root) / MANIFEST
    version = require(data, "schema_version", path, types=int)
    if version != SCHEMA_VERSION:
        raise FileFormatError(path, "schema_version", f"unsupported version {version!r} (this headcap reads {SCHEMA_VERSION})")
    name = require(data, "name", path, types=str)
    fps = _number(require(data, "fps", path), path, "fps")
    if fps <= 0:
        raise FileFormatError(path, "fps", f"must be positive, got {fps}")
    cameras = require(data, "cameras", path, types=list)
    if not cameras:
        raise FileFormatError(path, "cameras", "empty camera list")
    for i, cam in enumerate(cameras):
        check_camera_id(cam, path, f"cameras[{i}]")
    dup = sorted({c for c in cameras if cameras.count(c) > 1})
    if dup:
        raise FileFormatError(path, "cameras", f"duplicate camera ids {dup}")
    frames_raw = require(data, "frames", path, types=list)
    frame_count = require(data, "frame_count", path, types=int)
    if frame_count != len(frames_raw):
        raise FileFormatError(path, "frame_count", f"says {frame_count} but 'frames' lists {len(frames_raw)}")
    frames = []
    for i, entry in enumerate(frames_raw):
        prefix = f"frames[{i}]."
        index = require(entry, "index", path, prefix, types=int)
        timestamp = _number(require(entry, "timestamp", path, prefix), path, prefix + "timestamp")
        images = require(entry, "images", path, prefix, types=dict)
        masks = entry.get("masks", {})
        if not isinstance(masks, dict):
            raise FileFormatError(path, prefix + "masks", f"expected an object, got {masks!r}")
        for kind, table in (("images", images), ("masks", masks)):
            for cam, rel in table.items():
                if cam not in cameras:
                    raise FileFormatError(path, f"{prefix}{kind}.{cam}", f"camera {cam!r} is not in 'cameras' {cameras}")
                full = safe_relative_path(root, rel, path, f"{prefix}{kind}.{cam}")
                if check_files and not full.is_file():
                    raise FileFormatError(path, f"{prefix}{kind}.{cam}", f"file {rel!r} does not exist")
        missing = [c for c in cameras if c not in images]
        if missing:
            raise FileFormatError(path, prefix + "images", f"no image for cameras {missing}")
        frames.append(FrameEntry(index, timestamp, dict(images), dict(masks)))
    rig = data.get("rig")
    if rig is not None:
        safe_relative_path(root, rig, path, "rig")
    calibration = data.get("calibration", {})
    if not isinstance(calibration, dict):
        raise FileFormatError(path, "calibration", f"expected an object, got {calibration!r}")
    for cam, files in calibration.items():
        if not isinstance(files, list):
            raise FileFormatError(path, f"calibration.{cam}", f"expected a list of paths, got {files!r}")
        for j, rel in enumerate(files):
            safe_relative_path(root, rel, path, f"calibration.{cam}[{j}]")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        raise FileFormatError(path, "extra", f"expected an object, got {extra!r}")
    return Session(Path(root), name, fps, list(cameras), frames, rig, dict(calibration), dict(extra))


def read_session(path, check_files: bool = False) -> Session:
    """Read a session from its folder or from its session.json."""
    path = Path(path)
    manifest = path / MANIFEST if path.is_dir() else path
    return session_from_dict(read_json(manifest), manifest.parent, manifest, check_files)
