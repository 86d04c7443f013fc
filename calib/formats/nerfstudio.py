"""nerfstudio / instant-ngp `transforms.json`.

Conventions, from nerfstudio's own code (`cameras/cameras.py`):
- `transform_matrix` is camera-to-world with OpenGL camera axes (x right, y up, z backward):
  `_generate_rays_from_coords` builds directions (x, -y, -1) and rotates them by it.
- Pixel centres sit at half-integers: `get_image_coords(pixel_offset=0.5)` samples pixel column
  i at x = i + 0.5 and the ray direction is (x - cx) / fx. So nerfstudio's cx, cy are headcap's
  plus 0.5 (the same as COLMAP's, which nerfstudio copies unchanged from COLMAP).
- Intrinsics fl_x, fl_y, cx, cy, w, h and distortion k1..k4, p1, p2 are global or per frame;
  `camera_model` is global: OPENCV (k1, k2, p1, p2, k3 = OpenCV's 5 coefficients), OPENCV_FISHEYE
  (k1..k4), PINHOLE / SIMPLE_PINHOLE (none).
- The world frame is whatever the file says; `ns-process-data` also records an
  `applied_transform`, which only concerns its point cloud and is ignored here.

One headcap camera per frame; its id is the frame's `camera_id` (written by headcap and VHAP) or
else the stem of `file_path`. Frames repeating a camera (one per timestep, as VHAP writes them)
collapse to one camera when identical.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from headcap.calib.camera import Camera, Rig
from headcap.calib.conventions import (opencv_cam_from_world_to_opengl_world_from_cam,
                               opengl_world_from_cam_to_opencv_cam_from_world)
from headcap.core.fileio import FileFormatError, read_json, write_json
from headcap.calib.formats._common import (HALF_PIXEL, ExportError, build_camera, parse_matrix, parse_number, parse_size,
                                   require_no_skew, short)

FORMAT = "nerfstudio"
_MODEL_TO_NS = {"none": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}
_DIST_KEYS = {"opencv": ("k1", "k2", "p1", "p2", "k3"), "fisheye": ("k1", "k2", "k3", "k4")}
_ALL_DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h") + _ALL_DIST_KEYS


def _intrinsics(cam: Camera) -> dict:
    out = {"fl_x": cam.K[0, 0], "fl_y": cam.K[1, 1], "cx": cam.K[0, 2] + HALF_PIXEL, "cy": cam.K[1, 2] + HALF_PIXEL,
           "w": cam.width, "h": cam.height}
    for key, value in zip(_DIST_KEYS.get(cam.distortion_model, ()), cam.distortion.tolist()):
        out[key] = value
    return out


def rig_to_transforms(rig: Rig, path="transforms.json") -> dict:
    require_no_skew(rig, path, FORMAT)
    models = {c.distortion_model for c in rig}
    if len(models) > 1:
        raise ExportError(path, FORMAT, None, "camera_model",
                          f"camera_model is global in transforms.json, but the rig mixes {sorted(models)}")
    model, = models
    per_camera = [_intrinsics(c) for c in rig]
    shared = all(p == per_camera[0] for p in per_camera)
    out: dict = {"camera_model": _MODEL_TO_NS[model]}
    if shared:
        out.update(per_camera[0])
    frames = []
    for cam, intr in zip(rig, per_camera):
        frame = {"camera_id": cam.id, "file_path": f"images/{cam.id}.png",
                 "transform_matrix": opencv_cam_from_world_to_opengl_world_from_cam(cam.cam_from_world).tolist()}
        if not shared:
            frame.update(intr)
        frames.append(frame)
    out["frames"] = frames
    return out


def _get(frame: dict, meta: dict, key: str, default=None):
    return frame[key] if key in frame else meta.get(key, default)


def _where(frame: dict, key: str, i: int) -> str:
    return f"frames[{i}].{key}" if key in frame else key


def rig_from_transforms(data, path="transforms.json") -> Rig:
    if not isinstance(data, dict):
        raise FileFormatError(path, "<root>", f"expected an object, got {short(data)}")
    ns_model = data.get("camera_model", "OPENCV")
    models = {"OPENCV": "opencv", "OPENCV_FISHEYE": "fisheye", "PINHOLE": "none", "SIMPLE_PINHOLE": "none"}
    if not isinstance(ns_model, str) or ns_model not in models:
        raise FileFormatError(path, "camera_model", f"unsupported camera_model {short(ns_model)}; "
                              f"expected one of {sorted(models)}")
    model = models[ns_model]
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise FileFormatError(path, "frames", "missing" if frames is None else f"expected a non-empty list, got {short(frames)}")
    cameras: dict[str, Camera] = {}
    first_index: dict[str, int] = {}
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise FileFormatError(path, f"frames[{i}]", f"expected an object, got {short(frame)}")
        cam = _frame_camera(data, frame, i, model, path)
        if cam.id in cameras:
            if cameras[cam.id] != cam:
                raise FileFormatError(path, f"frames[{i}].camera_id",
                                      f"camera {cam.id!r} appears again (first at frames[{first_index[cam.id]}]) "
                                      "with different parameters")
            continue
        cameras[cam.id] = cam
        first_index[cam.id] = i
    return Rig(cameras)


def _frame_camera(meta: dict, frame: dict, i: int, model: str, path) -> Camera:
    if "camera_id" in frame:
        cam_id = frame["camera_id"]
        if not isinstance(cam_id, (str, int)) or isinstance(cam_id, bool) or cam_id == "":
            raise FileFormatError(path, f"frames[{i}].camera_id", f"expected a non-empty string, got {short(cam_id)}")
        cam_id = str(cam_id)
    elif isinstance(frame.get("file_path"), str) and frame["file_path"]:
        cam_id = Path(frame["file_path"]).stem
    else:
        raise FileFormatError(path, f"frames[{i}].file_path", f"missing (and no camera_id): {short(frame.get('file_path'))}")
    values = {}
    for key in ("w", "h"):
        if _get(frame, meta, key) is None:
            raise FileFormatError(path, f"frames[{i}].{key}", "missing (neither in the frame nor global)")
        values[key] = parse_size(_get(frame, meta, key), path, _where(frame, key, i))
    for key in ("cx", "cy"):
        if _get(frame, meta, key) is None:
            raise FileFormatError(path, f"frames[{i}].{key}", "missing (neither in the frame nor global)")
        values[key] = parse_number(_get(frame, meta, key), path, _where(frame, key, i))
    for key, angle_key, size in (("fl_x", "camera_angle_x", values["w"]), ("fl_y", "camera_angle_y", values["h"])):
        if _get(frame, meta, key) is not None:
            values[key] = parse_number(_get(frame, meta, key), path, _where(frame, key, i))
        elif _get(frame, meta, angle_key) is not None:
            angle = parse_number(_get(frame, meta, angle_key), path, _where(frame, angle_key, i))
            if not 0.0 < angle < math.pi:
                raise FileFormatError(path, _where(frame, angle_key, i),
                                      f"expected a field of view in radians in (0, pi), got {angle!r}")
            values[key] = 0.5 * size / math.tan(0.5 * angle)
        elif key == "fl_y" and "fl_x" in values:
            values[key] = values["fl_x"]
        else:
            raise FileFormatError(path, f"frames[{i}].{key}", f"missing (and no {angle_key})")
    coeffs = {k: parse_number(_get(frame, meta, k, 0.0), path, _where(frame, k, i)) for k in _ALL_DIST_KEYS}
    used = _DIST_KEYS.get(model, ())
    for key in _ALL_DIST_KEYS:
        if key not in used and coeffs[key] != 0.0:
            raise FileFormatError(path, _where(frame, key, i),
                                  f"{key}={coeffs[key]!r} cannot be represented by camera_model "
                                  f"{_MODEL_TO_NS[model]} (headcap model {model!r})")
    K = np.array([[values["fl_x"], 0.0, values["cx"] - HALF_PIXEL],
                  [0.0, values["fl_y"], values["cy"] - HALF_PIXEL],
                  [0.0, 0.0, 1.0]])
    tm_field = f"frames[{i}].transform_matrix"
    if "transform_matrix" not in frame:
        raise FileFormatError(path, tm_field, "missing")
    raw = frame["transform_matrix"]
    if isinstance(raw, list) and len(raw) == 3:
        raw = list(raw) + [[0.0, 0.0, 0.0, 1.0]]
    world_from_glcam = parse_matrix(raw, (4, 4), path, tm_field)
    k_field = "/".join(_where(frame, k, i) for k in ("fl_x", "fl_y", "cx", "cy") if _get(frame, meta, k) is not None)
    return build_camera(path, {"K": k_field or "fl_x", "cam_from_world": tm_field, "width": _where(frame, "w", i),
                               "height": _where(frame, "h", i), "distortion": "k1..k4/p1/p2",
                               "id": f"frames[{i}].camera_id"},
                        id=cam_id, width=values["w"], height=values["h"], K=K, distortion_model=model,
                        distortion=np.array([coeffs[k] for k in used]),
                        cam_from_world=_checked_gl_to_cv(world_from_glcam, path, tm_field))


def _checked_gl_to_cv(world_from_glcam: np.ndarray, path, field: str) -> np.ndarray:
    # validate before inverting: the inverse of a non-rigid matrix would hide the bad value
    from headcap.calib.camera import check_rigid

    try:
        check_rigid(world_from_glcam, "transform_matrix", "frame")
    except ValueError as exc:
        raise FileFormatError(path, field, str(exc)) from None
    return opengl_world_from_cam_to_opencv_cam_from_world(world_from_glcam)


def read_nerfstudio(path) -> Rig:
    path = Path(path)
    return rig_from_transforms(read_json(path), path)


def write_nerfstudio(rig: Rig, path) -> None:
    write_json(path, rig_to_transforms(rig, path))
