"""Rig files in every format headcap reads and writes, behind two functions.

| format | path | camera axes / stored transform | pixel centre |
|---|---|---|---|
| `rig` | rig.json | OpenCV, cam_from_world | integer |
| `nersemble` | camera_params.json | OpenCV, world_2_cam (= cam_from_world) | integer |
| `nerfstudio` | transforms.json | OpenGL, camera-to-world | +0.5 |
| `colmap` / `colmap-bin` | folder with cameras/images(.txt/.bin) | OpenCV, cam_from_world quaternion | +0.5 |
| `opencv` | .yaml/.yml/.xml (cv2.FileStorage) | OpenCV, cam_from_world | integer |
"""
from __future__ import annotations

import json
from pathlib import Path

from headcap.calib.camera import Rig
from headcap.core.fileio import FileFormatError
from headcap.calib.formats import colmap, nersemble, nerfstudio, opencv_yaml
from headcap.calib.rig_io import read_rig, write_rig

FORMATS = ("rig", "nersemble", "nerfstudio", "colmap", "colmap-bin", "opencv")

_READERS = {
    "rig": read_rig,
    "nersemble": nersemble.read_nersemble,
    "nerfstudio": nerfstudio.read_nerfstudio,
    "colmap": colmap.read_colmap,
    "colmap-bin": colmap.read_colmap,
    "opencv": opencv_yaml.read_opencv_yaml,
}
_WRITERS = {
    "rig": write_rig,
    "nersemble": nersemble.write_nersemble,
    "nerfstudio": nerfstudio.write_nerfstudio,
    "colmap": colmap.write_colmap_text,
    "colmap-bin": colmap.write_colmap_binary,
    "opencv": opencv_yaml.write_opencv_yaml,
}
_COLMAP_FILES = ("cameras.txt", "images.txt", "cameras.bin", "images.bin")


def detect_format(path) -> str:
    """The format of an existing rig file or COLMAP folder, from its name and content."""
    path = Path(path)
    if path.is_dir():
        if (path / "cameras.txt").is_file() or (path / "images.txt").is_file():
            return "colmap"
        if (path / "cameras.bin").is_file() or (path / "images.bin").is_file():
            return "colmap-bin"
        for name in ("rig.json", "camera_params.json", "transforms.json"):
            if (path / name).is_file():
                return detect_format(path / name)
        raise FileFormatError(path, "<path>", "a folder with no rig file in it (expected a COLMAP model, "
                              "rig.json, camera_params.json or transforms.json)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.name in _COLMAP_FILES:
        return "colmap-bin" if path.suffix == ".bin" else "colmap"
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".xml"):
        return "opencv"
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            # a broken file: let the reader its name suggests give the detailed error
            return {"camera_params.json": "nersemble", "transforms.json": "nerfstudio"}.get(path.name, "rig")
        if isinstance(data, dict):
            if "schema_version" in data or ("cameras" in data and "frames" not in data):
                return "rig"
            if "world_2_cam" in data:
                return "nersemble"
            if "frames" in data:
                return "nerfstudio"
        raise FileFormatError(path, "<root>", "JSON that is none of rig.json (schema_version), NeRSemble "
                              "camera_params.json (world_2_cam) or nerfstudio transforms.json (frames)")
    raise FileFormatError(path, "<path>", f"unknown rig file type {suffix!r}; name the format with --from "
                          f"({', '.join(FORMATS)})")


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format: unknown rig format {fmt!r}; expected one of {list(FORMATS)}")
    return fmt


def read_any(path, format: str = "auto") -> Rig:
    """Read a rig from any supported file (format 'auto' detects it)."""
    fmt = detect_format(path) if format == "auto" else _check_format(format)
    return _READERS[fmt](path)


def write_any(rig: Rig, path, format: str) -> Path:
    """Write `rig` in `format`; for COLMAP `path` is the model folder. Returns the path written."""
    fmt = _check_format(format)
    if not isinstance(rig, Rig):
        raise TypeError(f"rig: expected a calib.camera.Rig, got {type(rig).__name__}")
    if len(rig) == 0:
        raise ValueError(f"{path}: cannot write an empty rig")
    _WRITERS[fmt](rig, path)
    return Path(path)
