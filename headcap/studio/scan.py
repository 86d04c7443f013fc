"""The Lee Perry-Smith head scan as a rigid `HeadModel` (no identity or expression modes).

"Infinite, 3D Head Scan by Lee Perry-Smith (Infinite Realities), CC BY 3.0": the three.js
example asset in ../shared/data/lee_perry_smith_head (LeePerrySmith.glb + Map-COL.jpg).
The .glb is parsed here (glTF 2.0 binary: a JSON chunk and a BIN chunk), so no glTF library
is needed. The scan is in arbitrary units, y up, face towards +z; it is scaled to metres and
moved so that the head frame origin sits at the centre of the head.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from headcap.reconstruct.head_model import HeadModel

__all__ = ["load_scan", "SCAN_CREDIT", "SCAN_UNIT_M"]

SCAN_CREDIT = "Infinite, 3D Head Scan by Lee Perry-Smith (Infinite Realities), CC BY 3.0"
#: metres per scan unit: the head is 3.6 units wide at the cheekbones, a real head ~0.15 m.
SCAN_UNIT_M = 0.042
#: the centre of the skull in scan units (between the ears, at eye height).
_HEAD_CENTRE_UNITS = np.array([0.0, 1.1, 0.3])
_COMPONENT = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short for a .glb ({len(data)} bytes)")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise ValueError(f"{path}: field 'header' is {magic!r} version {version}, not a glTF 2.0 binary")
    if length > len(data):
        raise ValueError(f"{path}: field 'length' says {length} bytes but the file holds {len(data)} (truncated)")
    offset, doc, binary = 12, None, b""
    while offset + 8 <= length:
        chunk_len, chunk_type = struct.unpack_from("<I4s", data, offset)
        body = data[offset + 8: offset + 8 + chunk_len]
        if len(body) != chunk_len:
            raise ValueError(f"{path}: chunk {chunk_type!r} is truncated")
        if chunk_type == b"JSON":
            try:
                doc = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: field 'JSON chunk' is not valid JSON ({exc})") from None
        elif chunk_type == b"BIN\x00":
            binary = body
        offset += 8 + chunk_len
    if doc is None:
        raise ValueError(f"{path}: no JSON chunk")
    return doc, binary


def _accessor(doc: dict, binary: bytes, index: int, path: Path) -> np.ndarray:
    try:
        acc = doc["accessors"][index]
        view = doc["bufferViews"][acc["bufferView"]]
        dtype = np.dtype(_COMPONENT[acc["componentType"]])
        width = _WIDTH[acc["type"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: field 'accessors[{index}]' is malformed ({exc!r})") from None
    if view.get("byteStride", dtype.itemsize * width) != dtype.itemsize * width:
        raise ValueError(f"{path}: field 'accessors[{index}]': interleaved buffer views are not supported")
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    count = acc["count"] * width
    if start + count * dtype.itemsize > len(binary):
        raise ValueError(f"{path}: field 'accessors[{index}]' reaches past the BIN chunk")
    return np.frombuffer(binary, dtype, count, start).reshape(acc["count"], width).copy()


def load_scan(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[HeadModel, torch.Tensor]:
    """(rigid HeadModel in metres, albedo texture [Ht, Wt, 3] float32 in [0, 1]) from a folder
    holding LeePerrySmith.glb and Map-COL.jpg (or the .glb itself)."""
    import cv2

    folder = Path(folder)
    glb = folder if folder.suffix.lower() == ".glb" else folder / "LeePerrySmith.glb"
    tex_path = glb.parent / "Map-COL.jpg"
    for p in (glb, tex_path):
        if not p.is_file():
            raise FileNotFoundError(f"--scan: {p} not found (expected the Lee Perry-Smith scan folder)")
    doc, binary = _read_glb(glb)
    try:
        prim = doc["meshes"][0]["primitives"][0]
        attrs = prim["attributes"]
        positions = _accessor(doc, binary, attrs["POSITION"], glb).astype(np.float64)
        texcoords = _accessor(doc, binary, attrs["TEXCOORD_0"], glb).astype(np.float64)
        faces = _accessor(doc, binary, prim["indices"], glb).astype(np.int64).reshape(-1, 3)
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{glb}: field 'meshes[0].primitives[0]' lacks POSITION/TEXCOORD_0/indices ({exc!r})") from None
    if faces.size and (faces.min() < 0 or faces.max() >= len(positions)):
        raise ValueError(f"{glb}: field 'indices' points outside the {len(positions)} vertices")
    image = cv2.imread(str(tex_path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{tex_path}: not a readable image")
    texture = torch.from_numpy(image[..., ::-1].astype(np.float32) / 255.0)

    verts = (positions - _HEAD_CENTRE_UNITS) * SCAN_UNIT_M
    # this asset's texture is authored for three.js flipY loading: texel row = (1 - t) * H,
    # which is exactly the v-up convention of reconstruct.shading with v = t
    uvs = texcoords
    nose_tip = int(np.argmax(verts[:, 2]))
    num_v = len(verts)
    model = HeadModel(
        name="lee_perry_smith_scan",
        template=torch.from_numpy(verts).to(dtype),
        faces=torch.from_numpy(faces),
        identity_basis=torch.zeros(0, num_v, 3, dtype=dtype),
        expression_basis=torch.zeros(0, num_v, 3, dtype=dtype),
        expression_names=[],
        uvs=torch.from_numpy(uvs).to(dtype),
        face_uvs=torch.from_numpy(faces.copy()),
        landmark_ids=torch.tensor([nose_tip], dtype=torch.long),
        landmark_convention="nose_tip",
        licence=SCAN_CREDIT,
    )
    return model, texture
