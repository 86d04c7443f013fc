"""COLMAP sparse models (`cameras.txt/images.txt/points3D.txt` or the `.bin` trio), our own
reader and writer (pycolmap is only used by the tests, as a cross-check).

Conventions (COLMAP docs, "Output format" and "Camera models"): images store `cam_from_world`
as a unit quaternion (QW, QX, QY, QZ) and translation (TX, TY, TZ) with OpenCV camera axes; the
centre of the top-left pixel is (0.5, 0.5), so COLMAP's cx, cy are headcap's plus 0.5.

Mapping: one headcap camera per COLMAP image; its id is the image NAME. COLMAP cameras hold the
intrinsics (several images may share one). Models read: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL,
RADIAL, OPENCV, FULL_OPENCV (k4 = k5 = k6 = 0), OPENCV_FISHEYE. Written: PINHOLE (no distortion),
OPENCV (k3 = 0), FULL_OPENCV (k3 != 0, k4..k6 = 0), OPENCV_FISHEYE. COLMAP has no skew. Text
files hold repr-exact floats; the quaternion and the half-pixel shift are the only rounding
(about 1e-16 relative).
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from headcap.calib.camera import Camera, Rig, check_rigid
from headcap.core.fileio import FileFormatError, atomic_write_bytes, atomic_write_text, read_text
from headcap.calib.formats._common import HALF_PIXEL, ExportError, build_camera, require_no_skew

FORMAT = "colmap"
#: model name -> (COLMAP model id, number of parameters)
MODELS = {"SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
          "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12)}
_MODEL_BY_ID = {mid: name for name, (mid, _) in MODELS.items()}
_OTHER_MODEL_PARAMS = {7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5),
                       10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16)}


# --- rotation <-> quaternion ----------------------------------------------------------------
def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    m = rot
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = [trace, m[0, 0], m[1, 1], m[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif k == 2:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


# --- camera <-> COLMAP records ---------------------------------------------------------------
def _to_colmap_camera(cam: Camera, path) -> tuple[str, list[float]]:
    fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2] + HALF_PIXEL, cam.K[1, 2] + HALF_PIXEL
    d = cam.distortion.tolist()
    if cam.distortion_model == "none":
        return "PINHOLE", [fx, fy, cx, cy]
    if cam.distortion_model == "fisheye":
        return "OPENCV_FISHEYE", [fx, fy, cx, cy] + d
    if cam.distortion_model == "opencv":
        if d[4] == 0.0:
            return "OPENCV", [fx, fy, cx, cy] + d[:4]
        return "FULL_OPENCV", [fx, fy, cx, cy] + d + [0.0, 0.0, 0.0]
    raise ExportError(path, FORMAT, cam.id, "distortion_model", f"unsupported model {cam.distortion_model!r}")


def _from_colmap_camera(model: str, params: list[float], path, field: str) -> tuple[np.ndarray, str, list[float]]:
    """-> (K, headcap distortion model, coefficients)."""
    p = list(params)
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        f, cx, cy = p[:3]
        fx = fy = f
        rest = p[3:]
    else:
        fx, fy, cx, cy = p[:4]
        rest = p[4:]
    K = np.array([[fx, 0.0, cx - HALF_PIXEL], [0.0, fy, cy - HALF_PIXEL], [0.0, 0.0, 1.0]])
    if model in ("SIMPLE_PINHOLE", "PINHOLE"):
        return K, "none", []
    if model == "SIMPLE_RADIAL":
        return K, "opencv", [rest[0], 0.0, 0.0, 0.0, 0.0]
    if model == "RADIAL":
        return K, "opencv", [rest[0], rest[1], 0.0, 0.0, 0.0]
    if model == "OPENCV":
        return K, "opencv", rest + [0.0]
    if model == "OPENCV_FISHEYE":
        return K, "fisheye", rest
    if model == "FULL_OPENCV":
        if any(v != 0.0 for v in rest[5:]):
            raise FileFormatError(path, field, f"FULL_OPENCV rational terms k4, k5, k6 = {rest[5:]} are not supported "
                                  "(headcap's opencv model has k1, k2, p1, p2, k3)")
        return K, "opencv", rest[:5]
    raise FileFormatError(path, field, f"unsupported camera model {model!r}")


def _records(rig: Rig, path, text: bool):
    require_no_skew(rig, path, FORMAT)
    cameras, images = [], []
    for index, cam in enumerate(rig, start=1):
        if text and (any(ch.isspace() for ch in cam.id)):
            raise ExportError(path, FORMAT, cam.id, "id", "COLMAP text files cannot store image names with "
                              f"whitespace: {cam.id!r} (write binary: --to colmap-bin)")
        if "\x00" in cam.id:
            raise ExportError(path, FORMAT, cam.id, "id", f"image names cannot hold NUL bytes: {cam.id!r}")
        model, params = _to_colmap_camera(cam, path)
        cameras.append((index, model, cam.width, cam.height, params))
        q = rotation_to_quaternion(cam.cam_from_world[:3, :3])
        images.append((index, q.tolist(), cam.cam_from_world[:3, 3].tolist(), index, cam.id))
    return cameras, images


def _rig_from_records(cameras: dict, images: list, path, cam_file, img_file) -> Rig:
    out: list[Camera] = []
    seen: dict[str, int] = {}
    for i, (image_id, q, t, camera_id, name, where) in enumerate(images):
        field = f"{where} (IMAGE_ID {image_id})"
        if camera_id not in cameras:
            raise FileFormatError(img_file, f"{field}.CAMERA_ID", f"camera {camera_id} is not in {Path(cam_file).name}")
        if name in seen:
            raise FileFormatError(img_file, f"{field}.NAME", f"duplicate image name {name!r} (camera ids are image names)")
        seen[name] = i
        model, width, height, params, cfield = cameras[camera_id]
        K, dist_model, coeffs = _from_colmap_camera(model, params, cam_file, f"{cfield}.PARAMS")
        qn = np.linalg.norm(q)
        if not np.isfinite(qn) or abs(qn - 1.0) > 1e-6:
            raise FileFormatError(img_file, f"{field}.QW..QZ", f"not a unit quaternion (norm {float(qn)!r}): {list(q)}")
        if not np.all(np.isfinite(t)):
            raise FileFormatError(img_file, f"{field}.TX..TZ", f"holds NaN or inf: {list(t)}")
        cfw = np.eye(4)
        cfw[:3, :3] = quaternion_to_rotation(np.asarray(q, dtype=np.float64))
        cfw[:3, 3] = t
        # a camera error is about the cameras file, a pose error about the images file
        cam_fields = {"K": f"{cfield}.PARAMS", "distortion": f"{cfield}.PARAMS", "width": f"{cfield}.WIDTH",
                      "height": f"{cfield}.HEIGHT", "id": f"{field}.NAME"}
        try:
            check_rigid(cfw, "cam_from_world", f"camera {name!r}")
        except ValueError as exc:
            raise FileFormatError(img_file, f"{field}.QW..TZ", str(exc)) from None
        out.append(build_camera(cam_file, cam_fields, id=name, width=width, height=height, K=K,
                                distortion_model=dist_model, distortion=np.asarray(coeffs), cam_from_world=cfw))
    if not out:
        raise FileFormatError(img_file, "<file>", "no images: a rig needs at least one camera")
    return Rig({c.id: c for c in out})


# --- text ------------------------------------------------------------------------------------
def _lines(path: Path):
    """(line number, stripped line) of the non-comment lines, keeping blank ones (they matter in images.txt)."""
    text = read_text(path)
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if not line.lstrip().startswith("#")]


def _number(token: str, path, field: str, kind=float):
    try:
        value = kind(token)
    except ValueError:
        raise FileFormatError(path, field, f"expected {'an integer' if kind is int else 'a number'}, got {token!r}") from None
    if kind is float and not np.isfinite(value):
        raise FileFormatError(path, field, f"non-finite value {token!r}")
    return value


def read_colmap_text(folder) -> Rig:
    folder = Path(folder)
    cam_file, img_file = folder / "cameras.txt", folder / "images.txt"
    cameras: dict[int, tuple] = {}
    for n, line in _lines(cam_file):
        if not line:
            continue
        tok = line.split()
        field = f"line {n}"
        if len(tok) < 4:
            raise FileFormatError(cam_file, field, f"expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        cid = _number(tok[0], cam_file, f"{field}.CAMERA_ID", int)
        model = tok[1]
        if model not in MODELS:
            raise FileFormatError(cam_file, f"{field}.MODEL", f"unsupported camera model {model!r}; expected one of {sorted(MODELS)}")
        width = _number(tok[2], cam_file, f"{field}.WIDTH", int)
        height = _number(tok[3], cam_file, f"{field}.HEIGHT", int)
        n_params = MODELS[model][1]
        if len(tok) - 4 != n_params:
            raise FileFormatError(cam_file, f"{field}.PARAMS", f"model {model} takes {n_params} parameters, got {len(tok) - 4}: {tok[4:]}")
        params = [_number(t, cam_file, f"{field}.PARAMS", float) for t in tok[4:]]
        if cid in cameras:
            raise FileFormatError(cam_file, f"{field}.CAMERA_ID", f"duplicate camera id {cid}")
        cameras[cid] = (model, width, height, params, f"{field} (CAMERA_ID {cid})")
    images = []
    lines = _lines(img_file)
    i = 0
    while i < len(lines):
        n, line = lines[i]
        i += 1
        if not line:
            continue
        tok = line.split()
        field = f"line {n}"
        if len(tok) != 10:
            raise FileFormatError(img_file, field, f"expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME (10 values), got {len(tok)}: {line!r}")
        image_id = _number(tok[0], img_file, f"{field}.IMAGE_ID", int)
        q = [_number(t, img_file, f"{field}.QW..QZ", float) for t in tok[1:5]]
        t = [_number(v, img_file, f"{field}.TX..TZ", float) for v in tok[5:8]]
        cid = _number(tok[8], img_file, f"{field}.CAMERA_ID", int)
        images.append((image_id, q, t, cid, tok[9], field))
        i += 1  # the POINTS2D line that follows every image line (possibly empty)
    return _rig_from_records(cameras, images, folder, cam_file, img_file)


def write_colmap_text(rig: Rig, folder) -> None:
    folder = Path(folder)
    cameras, images = _records(rig, folder, text=True)
    cam = io.StringIO()
    cam.write("# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
    cam.write(f"# Number of cameras: {len(cameras)}\n# Written by headcap; cx, cy follow COLMAP's (0.5, 0.5) pixel-centre convention\n")
    for cid, model, w, h, params in cameras:
        cam.write(" ".join([str(cid), model, str(w), str(h)] + [repr(float(p)) for p in params]) + "\n")
    img = io.StringIO()
    img.write("# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n")
    img.write(f"#   POINTS2D[] as (X, Y, POINT3D_ID)\n# Number of images: {len(images)}, mean observations per image: 0\n")
    for image_id, q, t, cid, name in images:
        img.write(" ".join([str(image_id)] + [repr(float(v)) for v in q + t] + [str(cid), name]) + "\n\n")
    pts = "# 3D point list with one line of data per point:\n#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n# Number of points: 0, mean track length: 0\n"
    atomic_write_text(folder / "cameras.txt", cam.getvalue())
    atomic_write_text(folder / "images.txt", img.getvalue())
    atomic_write_text(folder / "points3D.txt", pts)


# --- binary ----------------------------------------------------------------------------------
class _Reader:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file not found") from None
        self.pos = 0

    def read(self, fmt: str, field: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise FileFormatError(self.path, field, f"truncated file: needs {size} bytes at offset {self.pos}, "
                                  f"only {len(self.data) - self.pos} left (file is {len(self.data)} bytes)")
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, size: int, field: str) -> None:
        """Step over `size` bytes without building a format string as long as a corrupt count asks for."""
        if self.pos + size > len(self.data):
            raise FileFormatError(self.path, field, f"truncated file: needs {size} bytes at offset {self.pos}, "
                                  f"only {len(self.data) - self.pos} left (file is {len(self.data)} bytes)")
        self.pos += size

    def string(self, field: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise FileFormatError(self.path, field, f"truncated file: unterminated name at offset {self.pos}")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(self.path, field, f"name is not UTF-8: {raw[:60]!r}") from None


def read_colmap_binary(folder) -> Rig:
    folder = Path(folder)
    cam_file, img_file = folder / "cameras.bin", folder / "images.bin"
    r = _Reader(cam_file)
    (count,) = r.read("Q", "num_cameras")
    cameras: dict[int, tuple] = {}
    for i in range(count):
        field = f"cameras[{i}]"
        cid, model_id, width, height = r.read("iiQQ", field)
        if model_id in _MODEL_BY_ID:
            model = _MODEL_BY_ID[model_id]
        else:
            name = _OTHER_MODEL_PARAMS.get(model_id, ("unknown",))[0]
            raise FileFormatError(cam_file, f"{field}.model_id", f"unsupported camera model id {model_id} ({name}); "
                                  f"expected one of {sorted(_MODEL_BY_ID)}")
        params = list(r.read("d" * MODELS[model][1], f"{field} (CAMERA_ID {cid}).params"))
        if not np.all(np.isfinite(params)):
            raise FileFormatError(cam_file, f"{field} (CAMERA_ID {cid}).params", f"holds NaN or inf: {params}")
        if cid in cameras:
            raise FileFormatError(cam_file, f"{field}.camera_id", f"duplicate camera id {cid}")
        cameras[cid] = (model, width, height, params, f"{field} (CAMERA_ID {cid})")
    if r.pos != len(r.data):
        raise FileFormatError(cam_file, "<file>", f"{len(r.data) - r.pos} unexpected trailing bytes after {count} cameras")
    r = _Reader(img_file)
    (count,) = r.read("Q", "num_reg_images")
    images = []
    for i in range(count):
        field = f"images[{i}]"
        vals = r.read("idddddddi", field)
        name = r.string(f"{field}.name")
        (n_points,) = r.read("Q", f"{field}.num_points2D")
        r.skip(struct.calcsize("<ddq") * n_points, f"{field}.points2D")
        images.append((vals[0], list(vals[1:5]), list(vals[5:8]), vals[8], name, field))
    if r.pos != len(r.data):
        raise FileFormatError(img_file, "<file>", f"{len(r.data) - r.pos} unexpected trailing bytes after {count} images")
    return _rig_from_records(cameras, images, folder, cam_file, img_file)


def write_colmap_binary(rig: Rig, folder) -> None:
    folder = Path(folder)
    cameras, images = _records(rig, folder, text=False)
    ids = rig.ids
    cam = bytearray(struct.pack("<Q", len(cameras)))
    for cid, model, w, h, params in cameras:
        cam += _pack(folder, ids[cid - 1], "WIDTH/HEIGHT/PARAMS", "<iiQQ" + "d" * len(params),
                     cid, MODELS[model][0], w, h, *params)
    img = bytearray(struct.pack("<Q", len(images)))
    for image_id, q, t, cid, name in images:
        img += _pack(folder, name, "IMAGE_ID/QW..TZ/CAMERA_ID", "<idddddddi", image_id, *q, *t, cid)
        img += name.encode("utf-8") + b"\x00" + struct.pack("<Q", 0)
    atomic_write_bytes(folder / "cameras.bin", bytes(cam))
    atomic_write_bytes(folder / "images.bin", bytes(img))
    atomic_write_bytes(folder / "points3D.bin", struct.pack("<Q", 0))


def _pack(folder, camera_id: str, field: str, fmt: str, *values) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except (struct.error, OverflowError) as exc:
        raise ExportError(folder, "colmap-bin", camera_id, field, f"a value does not fit COLMAP's binary "
                          f"field ({exc}): {list(values)}") from None


def read_colmap(folder) -> Rig:
    """Read a COLMAP model folder: text when cameras.txt is there, else binary."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if (folder / "cameras.txt").is_file() or (folder / "images.txt").is_file():
        return read_colmap_text(folder)
    if (folder / "cameras.bin").is_file() or (folder / "images.bin").is_file():
        return read_colmap_binary(folder)
    raise FileNotFoundError(f"{folder}: no COLMAP model here (expected cameras.txt + images.txt or cameras.bin + images.bin)")
