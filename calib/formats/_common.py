"""Helpers shared by the rig file importers/exporters: parsing with errors that name the file,
the field and the value, and the checks an exporter runs before it drops anything."""
from __future__ import annotations

import math

import numpy as np

from headcap.calib.camera import MAX_IMAGE_SIDE, Camera, Rig, camera_error_field
from headcap.core.fileio import FileFormatError, numeric_array

#: OpenCV puts the centre of the top-left pixel at (0, 0); COLMAP and nerfstudio at (0.5, 0.5).
#: principal point in those formats = headcap principal point + HALF_PIXEL.
HALF_PIXEL = 0.5


class ExportError(ValueError):
    """A rig holds something the target format cannot store (raised instead of dropping it)."""

    def __init__(self, path, fmt: str, camera_id: str | None, field: str, message: str):
        self.path = str(path)
        self.field = field
        who = f"camera {camera_id!r}: " if camera_id is not None else ""
        super().__init__(f"{path}: cannot write {fmt}: {who}field '{field}': {message}")


def short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_matrix(value, shape: tuple[int, ...], path, field: str) -> np.ndarray:
    """A finite float64 array of exactly `shape` from a parsed file value."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise FileFormatError(path, field, f"expected a numeric array of shape {shape}, got {short(value)}")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise FileFormatError(path, field, f"expected a numeric array of shape {shape}, got {short(value)}")
    arr = value.astype(np.float64) if isinstance(value, np.ndarray) else numeric_array(value, path, field)
    if arr.shape != shape:
        raise FileFormatError(path, field, f"expected shape {shape}, got shape {arr.shape}: {short(value)}")
    if not np.all(np.isfinite(arr)):
        raise FileFormatError(path, field, f"holds NaN or inf: {short(arr.tolist())}")
    return arr


def parse_number(value, path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FileFormatError(path, field, f"expected a finite number, got {short(value)}")
    return float(value)


def parse_size(value, path, field: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= MAX_IMAGE_SIDE:
        raise FileFormatError(path, field, f"expected an integer image size from 1 to {MAX_IMAGE_SIDE}, got {short(value)}")
    return int(value)


def build_camera(path, field_of: dict[str, str], **fields) -> Camera:
    """Camera(**fields), turning its validation errors into FileFormatErrors.

    field_of maps Camera attribute names (K, cam_from_world, ...) to the field names the file uses.
    """
    try:
        return Camera(**fields)
    except ValueError as exc:
        name = camera_error_field(exc)
        raise FileFormatError(path, field_of.get(name, name), str(exc)) from None


def unique_ids(cameras: list[Camera], path, id_field) -> Rig:
    """Rig from cameras whose ids must be unique; id_field(i) names the file field of camera i."""
    seen: dict[str, int] = {}
    for i, cam in enumerate(cameras):
        if cam.id in seen:
            raise FileFormatError(path, id_field(i), f"duplicate camera id {cam.id!r} (also at index {seen[cam.id]})")
        seen[cam.id] = i
    return Rig({c.id: c for c in cameras})


def require_no_skew(rig: Rig, path, fmt: str) -> None:
    for cam in rig:
        if cam.K[0, 1] != 0.0:
            raise ExportError(path, fmt, cam.id, "K[0][1]", f"the format has no skew term; skew is {cam.K[0, 1]!r}")


def is_zero_distortion(cam: Camera) -> bool:
    return cam.distortion_model == "none" or not np.any(cam.distortion)
