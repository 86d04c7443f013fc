"""Gaussian splats to the two files splat viewers read: the reference 3DGS `.ply` and a glTF
`.glb` with `KHR_gaussian_splatting`.

`.ply` (Kerbl et al. 2023, the layout of its `save_ply`; every SuperSplat / three.js / Spark /
UnityGaussianSplatting reader expects it): binary little-endian, one `vertex` element with
float properties x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3, where
opacity is the logit, scale_* the natural log of the standard deviations, rot_* a quaternion
(w, x, y, z), f_dc the degree-0 SH coefficient (colour = 0.5 + C0 * f_dc) and f_rest the higher
bands channel-major (all of red's K-1 coefficients, then green's, then blue's).

`.glb` (KHR_gaussian_splatting, as three.js r187's GLTFGaussianSplatLoaderExtension reads it): a
POINTS primitive with POSITION, KHR_gaussian_splatting:ROTATION (x, y, z, w), :SCALE (standard
deviations, linear: an early draft of the extension stored logs, the ratified text and three.js
do not), :OPACITY (0-1, after the sigmoid), :SH_DEGREE_l_COEF_n (RGB, 3DGS basis with the
Condon-Shortley phase; degree 0 with the +0.5 bias), and COLOR_0 (diffuse colour + opacity) as the
point-cloud fallback. Units and axes are those of the Gaussians (headcap: metres; export in a
+Y-up frame such as the head frame or the studio's world to get glTF's axes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.avatar.export.glb import ARRAY_BUFFER, GltfBuilder, write_glb_bytes

__all__ = ["Splats", "read_ply", "write_ply", "write_splat_glb", "read_splat_glb", "SH_C0"]

SH_C0 = 0.28209479177387814


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Splats:
    """Gaussians in the 3DGS parameterisation, float64 numpy.

    means [N, 3]; quats [N, 4] (w, x, y, z), any norm; log_scales [N, 3]; opacity_logits [N];
    sh [N, K, 3] with K = (degree + 1)^2, sh[:, 0] the degree-0 coefficient.
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"Splats: field {name!r} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or self.sh.shape[1] not in (1, 4, 9, 16):
            raise ValueError(f"Splats: field 'sh' must be [N={n}, K in 1/4/9/16, 3], got {list(self.sh.shape)}")
        for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"Splats: field {name!r} holds non-finite values")

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    @property
    def colors(self) -> np.ndarray:
        """Diffuse RGB [N, 3] (degree 0 only), unclamped."""
        return 0.5 + SH_C0 * self.sh[:, 0]

    @property
    def opacities(self) -> np.ndarray:
        return _sigmoid(self.opacity_logits)

    @classmethod
    def from_colors(cls, means, quats, log_scales, opacity_logits, colors) -> "Splats":
        """From RGB colours (what avatar.static_fit fits) instead of SH: a degree-0 set."""
        colors = np.asarray(colors, dtype=np.float64)
        return cls(np.asarray(means, dtype=np.float64), np.asarray(quats, dtype=np.float64),
                   np.asarray(log_scales, dtype=np.float64), np.asarray(opacity_logits, dtype=np.float64).reshape(-1),
                   ((colors - 0.5) / SH_C0)[:, None, :])

    @classmethod
    def from_gaussian_set(cls, gs) -> "Splats":
        """From avatar.static_fit.GaussianSet (torch tensors)."""
        return cls.from_colors(*(getattr(gs, k).detach().cpu().double().numpy()
                                 for k in ("means", "quats", "log_scales", "opacity_logits", "colors")))

    def transformed(self, target_from_source: np.ndarray) -> "Splats":
        """A copy moved by a rigid 4x4 transform (positions and orientations; SH left as they are,
        exact for degree 0)."""
        from scipy.spatial.transform import Rotation

        rot, trans = target_from_source[:3, :3], target_from_source[:3, 3]
        q = self.quats / np.linalg.norm(self.quats, axis=1, keepdims=True)
        r = Rotation.from_matrix(rot) * Rotation.from_quat(q[:, [1, 2, 3, 0]])
        xyzw = r.as_quat()
        return Splats(self.means @ rot.T + trans, xyzw[:, [3, 0, 1, 2]], self.log_scales.copy(),
                      self.opacity_logits.copy(), self.sh.copy())


def _ply_names(num_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)] + ["opacity", "scale_0", "scale_1", "scale_2"]
            + ["rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str | os.PathLike, splats: Splats) -> Path:
    """Write the reference 3DGS .ply (module docstring), atomically."""
    from headcap.core.fileio import atomic_write_bytes

    n, k = splats.count, splats.sh.shape[1]
    rest = splats.sh[:, 1:].transpose(0, 2, 1).reshape(n, -1)  # channel-major, as 3DGS save_ply
    columns = np.concatenate([splats.means, np.zeros((n, 3)), splats.sh[:, 0], rest,
                              splats.opacity_logits[:, None], splats.log_scales, splats.quats], 1)
    names = _ply_names(3 * (k - 1))
    header = "ply\nformat binary_little_endian 1.0\nelement vertex {}\n{}end_header\n".format(
        n, "".join(f"property float {name}\n" for name in names))
    path = Path(path)
    atomic_write_bytes(path, header.encode("ascii") + columns.astype("<f4").tobytes())
    return path


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
              "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}


def read_ply(path: str | os.PathLike) -> Splats:
    """Read a 3DGS .ply (binary little-endian, one vertex element; property order free)."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic / end_header)")
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary_little_endian 1.0 PLY is supported")
    fields, count, in_vertex = [], None, False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
            elif count is not None and not fields:
                raise ValueError(f"{path}: the vertex element must come first")
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unsupported vertex property {' '.join(parts[1:])!r}")
            fields.append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    if count is None:
        raise ValueError(f"{path}: no vertex element")
    dtype = np.dtype(fields)
    body = data[end + len(b"end_header\n"):]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path}: {count} vertices need {count * dtype.itemsize} bytes, file has {len(body)}")
    rows = np.frombuffer(body, dtype=dtype, count=count)
    names = set(dtype.names)
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [r for r in required if r not in names]
    if missing:
        raise ValueError(f"{path}: missing 3DGS properties {missing}")

    def cols(keys):
        return np.stack([rows[key].astype(np.float64) for key in keys], 1)

    num_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if num_rest % 3 or (num_rest // 3 + 1) not in (1, 4, 9, 16):
        raise ValueError(f"{path}: {num_rest} f_rest_* properties is not a full SH degree (0, 9, 24 or 45)")
    sh = np.zeros((count, num_rest // 3 + 1, 3))
    sh[:, 0] = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    if num_rest:
        sh[:, 1:] = cols([f"f_rest_{i}" for i in range(num_rest)]).reshape(count, 3, -1).transpose(0, 2, 1)
    try:
        return Splats(cols(["x", "y", "z"]), cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
                      cols(["scale_0", "scale_1", "scale_2"]), rows["opacity"].astype(np.float64), sh)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _sh_semantics(degree: int) -> list[tuple[int, str]]:
    """(coefficient index in sh[:, K], attribute name) for every band up to `degree`."""
    out, k = [], 0
    for band in range(degree + 1):
        for n in range(2 * band + 1):
            out.append((k, f"KHR_gaussian_splatting:SH_DEGREE_{band}_COEF_{n}"))
            k += 1
    return out


def splat_attributes(builder: GltfBuilder, splats: Splats) -> dict:
    """Store a splat set's KHR_gaussian_splatting attributes; returns the primitive's attributes."""
    q = splats.quats / np.linalg.norm(splats.quats, axis=1, keepdims=True)
    q = np.where(q[:, :1] < 0, -q, q)  # one sign per rotation: w >= 0
    colors = np.clip(np.concatenate([splats.colors, splats.opacities[:, None]], 1), 0.0, 1.0)
    attributes = {
        "POSITION": builder.accessor(splats.means.astype(np.float32), target=ARRAY_BUFFER, min_max=True),
        "COLOR_0": builder.accessor(colors.astype(np.float32), target=ARRAY_BUFFER),
        "KHR_gaussian_splatting:ROTATION": builder.accessor(q[:, [1, 2, 3, 0]].astype(np.float32), target=ARRAY_BUFFER),
        "KHR_gaussian_splatting:SCALE": builder.accessor(np.exp(splats.log_scales).astype(np.float32),
                                                         target=ARRAY_BUFFER),
        "KHR_gaussian_splatting:OPACITY": builder.accessor(splats.opacities.astype(np.float32), target=ARRAY_BUFFER),
    }
    for k, semantic in _sh_semantics(splats.sh_degree):
        attributes[semantic] = builder.accessor(splats.sh[:, k].astype(np.float32), target=ARRAY_BUFFER)
    return attributes


SPLAT_EXTENSION = {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
                   "sortingMethod": "cameraDistance"}


def write_splat_glb(path: str | os.PathLike, splats: Splats, name: str = "headcap_splats") -> int:
    """Write a static KHR_gaussian_splatting .glb (module docstring); returns its size in bytes."""
    builder = GltfBuilder()
    doc = builder.doc
    doc["extensionsUsed"] = ["KHR_gaussian_splatting"]
    doc["meshes"] = [{"name": name, "primitives": [{
        "attributes": splat_attributes(builder, splats), "mode": 0,
        "extensions": {"KHR_gaussian_splatting": dict(SPLAT_EXTENSION)}}]}]
    doc["nodes"] = [{"name": name, "mesh": 0}]
    doc["scenes"] = [{"name": name, "nodes": [0]}]
    doc["scene"] = 0
    data = builder.glb()
    write_glb_bytes(path, data)
    return len(data)


def read_splat_glb(path: str | os.PathLike, mesh: int = 0) -> Splats:
    """Read the first KHR_gaussian_splatting primitive of `mesh` back into Splats."""
    from headcap.avatar.export.glb import read_accessor, read_glb

    doc, binary = read_glb(path)
    prim = next((p for p in doc["meshes"][mesh]["primitives"] if "KHR_gaussian_splatting" in p.get("extensions", {})),
                None)
    if prim is None:
        raise ValueError(f"{path}: mesh {mesh} has no KHR_gaussian_splatting primitive")
    attrs = prim["attributes"]

    def get(name):
        if name not in attrs:
            raise ValueError(f"{path}: splat primitive lacks attribute {name!r}")
        return read_accessor(doc, binary, attrs[name])

    xyzw = get("KHR_gaussian_splatting:ROTATION")
    opacity = np.clip(get("KHR_gaussian_splatting:OPACITY"), 1e-7, 1 - 1e-7)
    degree = max(d for d in range(4) if f"KHR_gaussian_splatting:SH_DEGREE_{d}_COEF_0" in attrs)
    sh = np.stack([get(semantic) for _, semantic in _sh_semantics(degree)], 1)
    return Splats(get("POSITION"), xyzw[:, [3, 0, 1, 2]], np.log(get("KHR_gaussian_splatting:SCALE")),
                  np.log(opacity / (1 - opacity)), sh)
