"""A minimal glTF 2.0 binary (.glb) writer and reader on numpy.

`GltfBuilder` packs numpy arrays into one binary buffer (each buffer view 4-byte aligned, as the
GLB container and the accessor alignment rules require) and records accessors with the min/max
that POSITION, morph-target and animation-input accessors must carry. `read_glb` and
`read_accessor` read a file back (ours or any other tightly packed or strided GLB without
sparse accessors), which is what the readback tests evaluate.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from headcap.core.fileio import parse_json

__all__ = ["GltfBuilder", "read_glb", "read_accessor", "write_glb_bytes",
           "ARRAY_BUFFER", "ELEMENT_ARRAY_BUFFER"]

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942

_COMPONENT = {  # numpy dtype -> glTF componentType
    np.dtype(np.int8): 5120, np.dtype(np.uint8): 5121, np.dtype(np.int16): 5122,
    np.dtype(np.uint16): 5123, np.dtype(np.uint32): 5125, np.dtype(np.float32): 5126,
}
_DTYPE = {v: k for k, v in _COMPONENT.items()}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class GltfBuilder:
    """Accumulates a glTF document and its binary chunk.

    `doc` is the glTF JSON (a dict the caller fills with nodes, meshes, ...); `accessor` and
    `image` append to the binary chunk and return the new index.
    """

    def __init__(self, generator: str = "headcap"):
        self.doc: dict = {"asset": {"version": "2.0", "generator": generator}, "buffers": [],
                          "bufferViews": [], "accessors": []}
        self._chunks: list[bytes] = []
        self._length = 0

    def _view(self, data: bytes, target: int | None = None) -> int:
        pad = (-self._length) % 4
        if pad:
            self._chunks.append(b"\0" * pad)
            self._length += pad
        view = {"buffer": 0, "byteOffset": self._length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self._chunks.append(data)
        self._length += len(data)
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, *, target: int | None = None, min_max: bool = False,
                 normalized: bool = False, type_: str | None = None) -> int:
        """Store `array` ([N] or [N, k]) as one accessor; returns its index.

        The dtype must be one glTF allows (float32, uint8/16/32, int8/16). `type_` overrides the
        type inferred from the last axis (e.g. "MAT4" for [N, 16]).
        """
        array = np.ascontiguousarray(array)
        if array.dtype not in _COMPONENT:
            raise TypeError(f"accessor: dtype {array.dtype} is not a glTF component type")
        if array.ndim == 1:
            width = 1
        elif array.ndim == 2:
            width = array.shape[1]
        else:
            raise ValueError(f"accessor: expected [N] or [N, k], got {array.shape}")
        if array.dtype == np.float32 and not np.isfinite(array).all():
            raise ValueError("accessor: non-finite values cannot be stored in glTF")
        kind = type_ or _TYPE.get(width)
        if kind is None or _WIDTH[kind] != width:
            raise ValueError(f"accessor: {width} components per element is not a glTF type")
        acc = {"bufferView": self._view(array.tobytes(), target), "componentType": _COMPONENT[array.dtype],
               "count": int(array.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if min_max:
            flat = array.reshape(array.shape[0], -1)
            cast = float if array.dtype.kind == "f" else int
            acc["min"] = [cast(v) for v in flat.min(0)]
            acc["max"] = [cast(v) for v in flat.max(0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def image(self, data: bytes, mime_type: str = "image/png") -> int:
        """Embed an encoded image; returns the index in `images`."""
        self.doc.setdefault("images", []).append({"bufferView": self._view(data), "mimeType": mime_type})
        return len(self.doc["images"]) - 1

    def glb(self) -> bytes:
        """The whole .glb file."""
        binary = b"".join(self._chunks)
        binary += b"\0" * ((-len(binary)) % 4)
        self.doc["buffers"] = [{"byteLength": len(binary)}]
        doc = {k: v for k, v in self.doc.items() if v != [] or k == "buffers"}
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
        text += b" " * ((-len(text)) % 4)
        total = 12 + 8 + len(text) + 8 + len(binary)
        return b"".join([
            struct.pack("<III", _GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), _CHUNK_JSON), text,
            struct.pack("<II", len(binary), _CHUNK_BIN), binary,
        ])


def write_glb_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write atomically (temp file in the same folder, then rename)."""
    from headcap.core.fileio import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def read_glb(path: str | os.PathLike) -> tuple[dict, bytes]:
    """(glTF JSON, binary chunk) of a .glb file; ValueError naming the file when malformed."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short for a GLB file ({len(data)} bytes)")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2:
        raise ValueError(f"{path}: not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if total != len(data):
        raise ValueError(f"{path}: header length {total} != file length {len(data)}")
    offset, doc, binary = 12, None, b""
    while offset < total:
        if offset + 8 > total:
            raise ValueError(f"{path}: truncated chunk header at byte {offset}")
        length, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + length > total:
            raise ValueError(f"{path}: chunk at byte {offset} claims {length} bytes, past the end of the file")
        chunk = data[offset + 8: offset + 8 + length]
        if kind == _CHUNK_JSON:
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}: JSON chunk is not UTF-8 ({exc})") from None
            doc = parse_json(text, path)  # duplicate keys, depth and integer size refused, naming the field
        elif kind == _CHUNK_BIN:
            binary = chunk
        offset += 8 + length
    if doc is None:
        raise ValueError(f"{path}: no JSON chunk")
    return doc, binary


def read_accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    """Accessor `index` as float64 ([count] or [count, k]); normalized integers are scaled."""
    try:
        acc = doc["accessors"][index]
        width = _WIDTH[acc["type"]]
        dtype = _DTYPE[acc["componentType"]].newbyteorder("<")
        count = acc["count"]
        view = doc["bufferViews"][acc["bufferView"]] if "bufferView" in acc else None
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"accessors[{index}]: missing or invalid field ({type(exc).__name__}: {exc})") from None
    # glTF 2.0 (5.1.2): count >= 1; offsets >= 0; byteStride in [4, 252]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"accessors[{index}].count: expected an integer >= 1, got {count!r}")
    if view is None:
        if count * width > 100_000_000:  # all zeros, so nothing in the file bounds it
            raise ValueError(f"accessors[{index}].count: {count} elements without a bufferView, over the limit")
        out = np.zeros((count, width))
    else:
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        stride = view.get("byteStride", width * dtype.itemsize)
        for name, value in (("byteOffset", start), ("byteStride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"accessors[{index}].{name}: expected an integer >= 0, got {value!r}")
        end = start + stride * (count - 1) + width * dtype.itemsize
        if stride < width * dtype.itemsize or end > len(binary):
            raise ValueError(f"accessors[{index}]: {count} elements of stride {stride} from byte {start} end at "
                             f"byte {end}, past the {len(binary)}-byte binary chunk")
        raw = np.frombuffer(binary, dtype=np.uint8, count=stride * (count - 1) + width * dtype.itemsize,
                            offset=start)
        rows = np.lib.stride_tricks.as_strided(raw, shape=(count, width * dtype.itemsize), strides=(stride, 1))
        out = np.ascontiguousarray(rows).view(dtype).reshape(count, width).astype(np.float64)
    if acc.get("normalized"):
        info = np.iinfo(dtype)
        out = out / info.max if info.min == 0 else np.maximum(out / info.max, -1.0)
    return out[:, 0] if width == 1 else out
