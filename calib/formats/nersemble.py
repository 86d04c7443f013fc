"""NeRSemble `camera_params.json`.

What the public code says (nersemble-data `NeRSembleParticipantDataManager.load_camera_calibration`,
nersemble-benchmark `BaseDataManager.load_camera_calibration`, VHAP `NeRSembleDataset.load_camera_params`):

```json
{"world_2_cam": {"<serial>": [[4x4]], ...},        # OpenCV camera axes, world -> camera, metres
 "intrinsics": [[3x3]],                            # dataset release: ONE K shared by all cameras
 "intrinsics": {"<serial>": [[3x3]], ...},         # benchmark release: one K per serial
 "width": 2200, "height": 3208}                    # optional; VHAP reads them when present
```
K is given for the full 2200 x 3208 (width x height) images and uses OpenCV pixel centres (no
half-pixel shift). There is no distortion (images are distributed undistorted) and one image
size for all cameras. Without "width"/"height" the reader assumes the full NeRSemble resolution
and warns; pass `image_size=(width, height)` for downscaled copies.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from headcap.calib.camera import Rig
from headcap.core.fileio import FileFormatError, read_json, write_json
from headcap.calib.formats._common import (ExportError, build_camera, is_zero_distortion, parse_matrix, parse_size,
                                   short, unique_ids)

FORMAT = "nersemble"
#: (width, height) of the NeRSemble cameras, the size the released intrinsics refer to
NERSEMBLE_IMAGE_SIZE = (2200, 3208)


def rig_from_nersemble(data, path="camera_params.json", image_size: tuple[int, int] | None = None) -> Rig:
    if not isinstance(data, dict):
        raise FileFormatError(path, "<root>", f"expected an object, got {short(data)}")
    if "world_2_cam" not in data:
        raise FileFormatError(path, "world_2_cam", "missing")
    if "intrinsics" not in data:
        raise FileFormatError(path, "intrinsics", "missing")
    poses = data["world_2_cam"]
    if not isinstance(poses, dict) or not poses:
        raise FileFormatError(path, "world_2_cam", f"expected a non-empty object serial -> 4x4, got {short(poses)}")
    intrinsics = data["intrinsics"]
    if isinstance(intrinsics, dict):
        missing = [s for s in poses if s not in intrinsics]
        if missing:
            raise FileFormatError(path, f"intrinsics.{missing[0]}", "missing (world_2_cam has this serial)")
        Ks = {s: parse_matrix(intrinsics[s], (3, 3), path, f"intrinsics.{s}") for s in poses}
    else:
        shared = parse_matrix(intrinsics, (3, 3), path, "intrinsics")
        Ks = {s: shared for s in poses}
    if image_size is not None:
        width, height = image_size
    elif "width" in data or "height" in data:
        width = parse_size(data.get("width"), path, "width")
        height = parse_size(data.get("height"), path, "height")
    else:
        width, height = NERSEMBLE_IMAGE_SIZE
        warnings.warn(f"{path}: no 'width'/'height'; assuming the full NeRSemble resolution {width}x{height} "
                      "(pass image_size for downscaled images)", stacklevel=2)
    cameras = []
    for serial, pose in poses.items():
        field = f"world_2_cam.{serial}"
        cfw = parse_matrix(pose, (4, 4), path, field)
        k_field = f"intrinsics.{serial}" if isinstance(intrinsics, dict) else "intrinsics"
        cameras.append(build_camera(path, {"K": k_field, "cam_from_world": field, "width": "width",
                                           "height": "height", "id": field},
                                    id=str(serial), width=width, height=height, K=Ks[serial],
                                    cam_from_world=cfw))
    return unique_ids(cameras, path, lambda i: "world_2_cam")


def rig_to_nersemble(rig: Rig, path="camera_params.json") -> dict:
    sizes = {(c.width, c.height) for c in rig}
    if len(sizes) > 1:
        raise ExportError(path, FORMAT, None, "width/height",
                          f"one image size for all cameras, but the rig has {sorted(sizes)}")
    for cam in rig:
        if not is_zero_distortion(cam):
            raise ExportError(path, FORMAT, cam.id, "distortion",
                              f"NeRSemble stores no lens distortion; model {cam.distortion_model!r} with "
                              f"{cam.distortion.tolist()} (undistort the images and write Camera.undistorted())")
        if cam.distortion_model != "none":
            warnings.warn(f"{path}: camera {cam.id!r}: dropping all-zero {cam.distortion_model!r} distortion "
                          "(reads back as model 'none')", stacklevel=2)
    Ks = [c.K for c in rig]
    shared = all(np.array_equal(Ks[0], K) for K in Ks)
    (width, height), = sizes
    return {
        "world_2_cam": {c.id: c.cam_from_world.tolist() for c in rig},
        "intrinsics": Ks[0].tolist() if shared else {c.id: c.K.tolist() for c in rig},
        "width": width,
        "height": height,
    }


def read_nersemble(path, image_size: tuple[int, int] | None = None) -> Rig:
    path = Path(path)
    return rig_from_nersemble(read_json(path), path, image_size)


def write_nersemble(rig: Rig, path) -> None:
    write_json(path, rig_to_nersemble(rig, path))
