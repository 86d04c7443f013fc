"""`rig.json`: headcap's own rig file (schema_version 1).

```json
{"schema_version": 1, "convention": "opencv", "units": "m",
 "cameras": [{"id": "cam00", "width": 1100, "height": 1604,
              "K": [[fx, s, cx], [0, fy, cy], [0, 0, 1]],
              "distortion_model": "opencv", "distortion": [k1, k2, p1, p2, k3],
              "cam_from_world": [[...4 rows of 4...]]}]}
```
Optional per camera: "uncertainty", the calibration's 1-sigma uncertainties (calib.uncertainty:
fx_px, fy_px, cx_px, cy_px, focal_pct, principal_point_px, distortion [per coefficient],
distortion_px, centre_mm, rotation_deg, relative_to, ...); readers that do not know it ignore
it, and `read_rig_uncertainty` returns it ({} when absent).

`convention` is always "opencv" (x right, y down, z forward; pixel centres at integer
coordinates); `units` is "m" (also accepted on read: "cm", "mm", converted to metres).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from headcap.calib.camera import Camera, Rig, camera_error_field
from headcap.core.fileio import FileFormatError, numeric_array, read_json, require, write_json

SCHEMA_VERSION = 1
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def rig_to_dict(rig: Rig, uncertainty: dict[str, dict] | None = None) -> dict:
    """uncertainty: optional {camera id: {name: number or list}} stored per camera."""
    out = {
        "schema_version": SCHEMA_VERSION,
        "convention": "opencv",
        "units": "m",
        "cameras": [
            {
                "id": cam.id,
                "width": cam.width,
                "height": cam.height,
                "K": cam.K.tolist(),
                "distortion_model": cam.distortion_model,
                "distortion": cam.distortion.tolist(),
                "cam_from_world": cam.cam_from_world.tolist(),
            }
            for cam in rig
        ],
    }
    for entry in out["cameras"]:
        if uncertainty and entry["id"] in uncertainty:
            entry["uncertainty"] = dict(uncertainty[entry["id"]])
    return out


def rig_from_dict(data, path="rig.json") -> Rig:
    version = require(data, "schema_version", path, types=int)
    if version != SCHEMA_VERSION:
        raise FileFormatError(path, "schema_version", f"unsupported version {version!r} (this headcap reads {SCHEMA_VERSION})")
    convention = require(data, "convention", path, types=str)
    if convention != "opencv":
        raise FileFormatError(path, "convention", f"unsupported convention {convention!r}; rig.json stores 'opencv' "
                              "(convert other conventions with `headcap rig convert`)")
    units = require(data, "units", path, types=str)
    if units not in UNIT_SCALE:
        raise FileFormatError(path, "units", f"unknown units {units!r}; expected one of {sorted(UNIT_SCALE)}")
    scale = UNIT_SCALE[units]
    cams = require(data, "cameras", path, types=list)
    if not cams:
        raise FileFormatError(path, "cameras", "empty camera list")
    out: list[Camera] = []
    seen: set[str] = set()
    for i, entry in enumerate(cams):
        prefix = f"cameras[{i}]."
        cam_id = require(entry, "id", path, prefix, types=str)
        if cam_id in seen:
            raise FileFormatError(path, f"{prefix}id", f"duplicate camera id {cam_id!r}")
        seen.add(cam_id)
        prefix = f"cameras[{i}] ({cam_id}).".replace(") .", ").")
        try:
            cfw = _matrix(require(entry, "cam_from_world", path, prefix, types=list), path, prefix + "cam_from_world")
            if cfw.shape == (4, 4):
                cfw = cfw.copy()
                cfw[:3, 3] *= scale
            cam = Camera(
                id=cam_id,
                width=require(entry, "width", path, prefix, types=int),
                height=require(entry, "height", path, prefix, types=int),
                K=_matrix(require(entry, "K", path, prefix, types=list), path, prefix + "K"),
                distortion_model=require(entry, "distortion_model", path, prefix, types=str),
                distortion=_matrix(require(entry, "distortion", path, prefix, types=list) if "distortion" in entry
                                   else [], path, prefix + "distortion"),
                cam_from_world=cfw,
            )
        except FileFormatError:
            raise
        except ValueError as exc:
            raise FileFormatError(path, prefix + camera_error_field(exc), str(exc)) from None
        out.append(cam)
    return Rig.from_list(out, where=str(path))


def _matrix(value, path, field):
    return numeric_array(value, path, field)


def read_rig(path) -> Rig:
    path = Path(path)
    return rig_from_dict(read_json(path), path)


def write_rig(rig: Rig, path, uncertainty: dict[str, dict] | None = None) -> None:
    write_json(path, rig_to_dict(rig, uncertainty))


def rig_uncertainty_from_dict(data) -> dict[str, dict]:
    """{camera id: uncertainty record} of the cameras that carry one; tolerant: anything that is
    not a record of numbers, lists of numbers or strings is left out."""
    out = {}
    cams = data.get("cameras") if isinstance(data, dict) else None
    for entry in cams if isinstance(cams, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        u = entry.get("uncertainty")
        if isinstance(u, dict):
            out[entry["id"]] = {k: v for k, v in u.items() if isinstance(k, str) and _plain(v)}
    return out


def _plain(v) -> bool:
    if isinstance(v, list):
        return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)


def read_rig_uncertainty(path) -> dict[str, dict]:
    """The optional per-camera uncertainties of a rig.json ({} when it has none)."""
    return rig_uncertainty_from_dict(read_json(Path(path)))
