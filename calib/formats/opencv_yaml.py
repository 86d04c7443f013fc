"""OpenCV FileStorage YAML/XML camera files (read and written with cv2.FileStorage).

Three layouts are read:

1. headcap's multi-camera layout (also what `write_opencv_yaml` writes)::

       convention: opencv
       units: m
       cameras:
          - id: "cam00"
            image_width: 640
            image_height: 480
            distortion_model: opencv          # opencv | fisheye | none
            camera_matrix: !!opencv-matrix    # 3x3, OpenCV pixel centres
            distortion_coefficients: !!opencv-matrix   # 1x5 (k1 k2 p1 p2 k3) or 1x4 (fisheye k1..k4)
            cam_from_world: !!opencv-matrix   # 4x4, world -> camera

2. `cv2.calibrateCamera` output as OpenCV's calibration sample writes it: `camera_matrix`,
   `distortion_coefficients`, `image_width`, `image_height` at the top level: one camera whose id
   is the file's stem, at the world origin.
3. `cv2.stereoCalibrate` output as the stereo_calib sample writes it (intrinsics.yml and
   extrinsics.yml merged): `M1 D1 M2 D2 R T` plus `image_width`, `image_height`: cameras "cam1"
   (the world frame) and "cam2" with cam_from_world = [R | T] (x2 = R x1 + T, OpenCV's definition).

Distortion vectors of OpenCV's longer models (8, 12, 14 coefficients) are accepted when the terms
beyond k3 are zero; otherwise the reader refuses rather than drop them. Numbers are written with 17
significant digits, so a rig round-trips exactly.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from headcap.calib.camera import Camera, Rig
from headcap.core.fileio import FileFormatError, atomic_write_text, read_text
from headcap.calib.formats._common import ExportError, build_camera, short, unique_ids
from headcap.calib.projection import DISTORTION_MODELS

FORMAT = "opencv"


#: nesting deeper than any camera file: cv2.FileStorage parses recursively in C and a deep enough
#: file overflows the stack (a crash no exception handler can catch), so depth is checked first
MAX_NESTING = 64
#: indentation a YAML file may use before its nesting is counted as suspicious
MAX_INDENT = 256


def nesting_depth(text: str) -> int:
    """An upper bound on the nesting depth cv2.FileStorage would recurse through: the deepest
    bracket/brace or XML element nesting, or YAML block nesting (indentation plus leading '- ')."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    for match in re.finditer(r"<(/?)[A-Za-z_][^<>]*?(/?)>", text):
        if match.group(1):
            depth = max(0, depth - 1)
        elif not match.group(2):
            depth += 1
            deepest = max(deepest, depth)
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        dashes = len(re.match(r"(?:-\s+)*", stripped).group(0).replace(" ", ""))
        indent = len(line) - len(stripped)
        deepest = max(deepest, dashes + (indent + 1) // 2 if indent <= MAX_INDENT else indent)
    return deepest


def _open(text: str, path) -> cv2.FileStorage:
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise FileFormatError(path, "<file>", f"nested about {depth} levels deep, more than the {MAX_NESTING} "
                              "a camera file needs (refused before parsing: OpenCV's parser would overflow the stack)")
    try:
        fs = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
    except (cv2.error, SystemError) as exc:
        raise FileFormatError(path, "<file>", f"not a valid OpenCV YAML/XML file (truncated or malformed): "
                              f"{_cv_message(exc)}") from None
    if not fs.isOpened():
        raise FileFormatError(path, "<file>", "cv2.FileStorage could not parse this file")
    return fs


def _cv_message(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def _node_matrix(node, path, field: str, shapes) -> np.ndarray:
    if node.empty() or node.isNone():
        raise FileFormatError(path, field, "missing")
    try:
        if node.isSeq():
            arr = _numbers(node, path, field)
        elif node.isMap():
            arr = _opencv_matrix(node, path, field)
        elif node.isReal() or node.isInt():
            arr = np.array([node.real()])
        else:
            raise FileFormatError(path, field, f"expected a matrix, got the string {node.string()!r}")
    except (cv2.error, SystemError) as exc:
        raise FileFormatError(path, field, f"unreadable matrix (truncated or malformed): {_cv_message(exc)}") from None
    if shapes is not None and arr.shape not in shapes and arr.size not in [int(np.prod(s)) for s in shapes]:
        raise FileFormatError(path, field, f"expected shape {' or '.join(map(str, shapes))}, got shape {arr.shape}: "
                              f"{short(arr.tolist())}")
    if not np.all(np.isfinite(arr)):
        raise FileFormatError(path, field, f"holds NaN or inf: {short(arr.tolist())}")
    return arr


#: larger than any camera matrix or distortion vector (4x4, 1x14)
MAX_MATRIX_SIDE = 64


def _numbers(seq, path, field: str) -> np.ndarray:
    if seq.size() > MAX_MATRIX_SIDE ** 2:
        raise FileFormatError(path, field, f"{seq.size()} values, more than a camera matrix holds")
    values = []
    for i in range(seq.size()):
        item = seq.at(i)
        if not (item.isInt() or item.isReal()):
            shown = item.string() if item.isString() else f"<{item.type()}>"
            raise FileFormatError(path, f"{field}[{i}]", f"expected a number, got {shown!r}")
        values.append(item.real())
    return np.array(values, dtype=np.float64)


def _opencv_matrix(node, path, field: str) -> np.ndarray:
    """An !!opencv-matrix map (rows, cols, dt, data) read field by field. FileNode.mat() trusts
    rows/cols and writes past its buffer when `data` disagrees with them: the heap is corrupted and
    the process dies later (found by tests/reliability/test_fuzz_readers.py)."""
    sizes = {}
    for key in ("rows", "cols"):
        sub = node.getNode(key)
        if sub.empty() or not sub.isInt() or not 0 < int(sub.real()) <= MAX_MATRIX_SIDE:
            shown = sub.string() if sub.isString() else sub.real() if (sub.isInt() or sub.isReal()) else "missing"
            raise FileFormatError(path, f"{field}.{key}", f"expected an integer from 1 to {MAX_MATRIX_SIDE} "
                                  f"(an !!opencv-matrix), got {shown!r}")
        sizes[key] = int(sub.real())
    dt = node.getNode("dt")
    if not dt.isString() or dt.string() not in ("u", "c", "w", "s", "i", "f", "d"):
        shown = dt.string() if dt.isString() else "missing"
        raise FileFormatError(path, f"{field}.dt", f"expected a one-channel element type (d, f, i, ...), got {shown!r}")
    data = node.getNode("data")
    if not data.isSeq():
        raise FileFormatError(path, f"{field}.data", "missing or not a sequence of numbers")
    values = _numbers(data, path, f"{field}.data")
    if values.size != sizes["rows"] * sizes["cols"]:
        raise FileFormatError(path, f"{field}.data", f"{values.size} values for a {sizes['rows']}x{sizes['cols']} matrix")
    return values.reshape(sizes["rows"], sizes["cols"])


def _node_int(node, path, field: str) -> int:
    if node.empty() or node.isNone():
        raise FileFormatError(path, field, "missing")
    if not node.isInt():
        value = node.string() if node.isString() else node.real() if node.isReal() else f"<{node.type()}>"
        raise FileFormatError(path, field, f"expected an integer, got {value!r}")
    return int(node.real())


def _node_string(node, path, field: str, default=None) -> str:
    if node.empty() or node.isNone():
        if default is not None:
            return default
        raise FileFormatError(path, field, "missing")
    if not node.isString():
        value = node.real() if (node.isInt() or node.isReal()) else f"<{node.type()}>"
        raise FileFormatError(path, field, f"expected a string, got {value!r}")
    return node.string()


def _distortion(raw: np.ndarray, model: str, path, field: str) -> np.ndarray:
    flat = raw.reshape(-1)
    n = DISTORTION_MODELS[model]
    if model == "opencv" and flat.size == 4:
        flat = np.concatenate([flat, [0.0]])
    if flat.size < n:
        raise FileFormatError(path, field, f"model {model!r} needs {n} coefficients, got {flat.size}: {flat.tolist()}")
    if np.any(flat[n:] != 0.0):
        raise FileFormatError(path, field, f"coefficients beyond the {n} of model {model!r} are non-zero "
                              f"(rational/thin-prism terms are not supported): {flat.tolist()}")
    return flat[:n]


def _camera(node, path, prefix: str, cam_id: str, cam_from_world=None, k_key="camera_matrix",
            d_key="distortion_coefficients", size_node=None) -> Camera:
    size_node = node if size_node is None else size_node
    model = _node_string(node.getNode("distortion_model"), path, prefix + "distortion_model", default="opencv")
    if model not in DISTORTION_MODELS:
        raise FileFormatError(path, prefix + "distortion_model", f"unknown model {model!r}; expected one of {sorted(DISTORTION_MODELS)}")
    K = _node_matrix(node.getNode(k_key), path, prefix + k_key, [(3, 3)]).reshape(3, 3)
    d_node = node.getNode(d_key)
    if model == "none":
        dist = np.zeros(0)
        if not d_node.empty() and np.any(_node_matrix(d_node, path, prefix + d_key, None)):
            raise FileFormatError(path, prefix + d_key, "non-zero coefficients with distortion_model 'none'")
    else:
        dist = _distortion(_node_matrix(d_node, path, prefix + d_key, None), model, path, prefix + d_key)
    if cam_from_world is None:
        cfw_node = node.getNode("cam_from_world")
        cam_from_world = np.eye(4) if cfw_node.empty() else _node_matrix(cfw_node, path, prefix + "cam_from_world", [(4, 4)]).reshape(4, 4)
    fields = {"K": prefix + k_key, "distortion": prefix + d_key, "cam_from_world": prefix + "cam_from_world",
              "width": prefix + "image_width", "height": prefix + "image_height", "id": prefix + "id"}
    return build_camera(path, fields, id=cam_id,
                        width=_node_int(size_node.getNode("image_width"), path, fields["width"]),
                        height=_node_int(size_node.getNode("image_height"), path, fields["height"]),
                        K=K, distortion_model=model, distortion=dist, cam_from_world=cam_from_world)


def rig_from_opencv_text(text: str, path) -> Rig:
    fs = _open(text, path)
    try:
        root = fs.root()
        if not root.isMap():
            raise FileFormatError(path, "<root>", "expected a mapping of camera fields, got a sequence, a scalar "
                                  "or nothing (the top level is not a mapping)")
        if not fs.getNode("cameras").empty():
            return _multi(fs, path)
        if not fs.getNode("M1").empty():
            return _stereo(fs, path)
        if not fs.getNode("camera_matrix").empty():
            return Rig({Path(path).stem: _camera(root, path, "", Path(path).stem)})
        raise FileFormatError(path, "cameras", f"missing: expected 'cameras' (headcap), 'camera_matrix' "
                              f"(calibrateCamera) or 'M1'/'M2'/'R'/'T' (stereoCalibrate); found keys {list(root.keys())}")
    finally:
        fs.release()


def _multi(fs, path) -> Rig:
    convention = _node_string(fs.getNode("convention"), path, "convention", default="opencv")
    if convention != "opencv":
        raise FileFormatError(path, "convention", f"unsupported convention {convention!r}; expected 'opencv'")
    units = _node_string(fs.getNode("units"), path, "units", default="m")
    if units != "m":
        raise FileFormatError(path, "units", f"unsupported units {units!r}; expected 'm'")
    seq = fs.getNode("cameras")
    if not seq.isSeq() or seq.size() == 0:
        raise FileFormatError(path, "cameras", "expected a non-empty sequence of cameras")
    cams = []
    for i in range(seq.size()):
        node = seq.at(i)
        prefix = f"cameras[{i}]."
        if not node.isMap():
            raise FileFormatError(path, f"cameras[{i}]", "expected a mapping")
        cam_id = _node_string(node.getNode("id"), path, prefix + "id")
        cams.append(_camera(node, path, f"cameras[{i}] ({cam_id}).", cam_id))
    return unique_ids(cams, path, lambda i: f"cameras[{i}].id")


def _stereo(fs, path) -> Rig:
    R = _node_matrix(fs.getNode("R"), path, "R", [(3, 3)]).reshape(3, 3)
    T = _node_matrix(fs.getNode("T"), path, "T", [(3, 1), (1, 3), (3,)]).reshape(3)
    second = np.eye(4)
    second[:3, :3], second[:3, 3] = R, T
    root = fs.root()
    cams = []
    for n, cfw in ((1, np.eye(4)), (2, second)):
        cams.append(_camera(root, path, "", f"cam{n}", cam_from_world=cfw, k_key=f"M{n}", d_key=f"D{n}"))
    return Rig({c.id: c for c in cams})


def rig_to_opencv_text(rig: Rig, path="rig.yaml") -> str:
    suffix = Path(path).suffix.lower()
    flags = cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY
    fs = cv2.FileStorage(".xml" if suffix == ".xml" else ".yaml", flags)
    fs.write("convention", "opencv")
    fs.write("units", "m")
    fs.startWriteStruct("cameras", cv2.FILE_NODE_SEQ)
    for cam in rig:
        fs.startWriteStruct("", cv2.FILE_NODE_MAP)
        fs.write("id", cam.id)
        fs.write("image_width", cam.width)
        fs.write("image_height", cam.height)
        fs.write("distortion_model", cam.distortion_model)
        fs.write("camera_matrix", cam.K)
        if cam.distortion_model != "none":
            fs.write("distortion_coefficients", cam.distortion.reshape(1, -1))
        fs.write("cam_from_world", cam.cam_from_world)
        fs.endWriteStruct()
    fs.endWriteStruct()
    text = fs.releaseAndGetString()
    # FileStorage writes some strings unquoted (an id like "true" reads back as a boolean): check
    try:
        back = list(rig_from_opencv_text(text, path))
    except FileFormatError as exc:
        raise ExportError(path, FORMAT, None, exc.field, f"does not survive cv2.FileStorage: {exc}") from None
    for cam, other in zip(rig, back):
        if cam != other:
            raise ExportError(path, FORMAT, cam.id, "id", f"does not survive cv2.FileStorage (reads back as {other.id!r})")
    return text


def read_opencv_yaml(path) -> Rig:
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise FileFormatError(path, "<file>", "empty file")
    return rig_from_opencv_text(text, path)


def write_opencv_yaml(rig: Rig, path) -> None:
    atomic_write_text(path, rig_to_opencv_text(rig, path))
