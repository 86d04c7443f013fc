"""Inputs for the reliability tests (issue #19): a tiny valid rig in every format, and the hostile
files the campaign found (decompression bombs, reference-bomb pickles, deep nesting)."""
from __future__ import annotations

import functools
import json
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from headcap.calib.camera import Camera, Rig, look_at


def tiny_rig() -> Rig:
    cams = []
    for i, x in enumerate((-0.3, 0.3)):
        K = np.array([[80.0, 0.0, 31.5], [0.0, 82.0, 23.5], [0.0, 0.0, 1.0]])
        cams.append(Camera(f"cam{i:02d}", 64, 48, K, "opencv", np.array([0.01, -0.002, 0.0, 0.0, 0.0]),
                           look_at([x, 0.0, -1.0], [0.0, 0.0, 0.0])))
    return Rig({c.id: c for c in cams})


def rig_dict() -> dict:
    from headcap.calib.rig_io import rig_to_dict

    return rig_to_dict(tiny_rig())


def write_json_text(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid greyscale PNG of width x height black pixels: ~400 KB on disk, `width * height`
    bytes (x3 in colour) once decoded."""
    path.write_bytes(_png_bomb_bytes(width, height))
    return path


@functools.lru_cache(maxsize=None)
def _png_bomb_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    parts = [comp.compress(row * 500) for _ in range(height // 500)]
    parts.append(comp.compress(row * (height % 500)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def npz_bomb(path: Path, nbytes: int, name: str = "vertices") -> Path:
    """A real .npz whose one float64 member inflates to `nbytes` of zeros (deflate: ~1000:1)."""
    count = nbytes // 8
    header = _npy_header((count,), "<f8")
    info = zipfile.ZipInfo(f"{name}.npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as archive, archive.open(info, "w", force_zip64=True) as member:
        member.write(header)
        block = bytes(1 << 24)
        left = count * 8
        while left:
            member.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


def npz_lying_header(path: Path, shape=(1_000_000, 1_000_000)) -> Path:
    """An .npz whose .npy header claims `shape` but holds 8 bytes (numpy would try to allocate it)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("vertices.npy", _npy_header(shape, "<f8") + bytes(8))
    return path


def _npy_header(shape, descr: str) -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def pickle_reference_bomb(path: Path, levels: int = 60) -> Path:
    """~450 bytes that unpickle to one list shared 2**levels ways: a recursive walk never ends."""
    node: list = []
    for _ in range(levels):
        node = [node, node]
    path.write_bytes(pickle.dumps({"v_template": node, "f": node}, protocol=2))
    return path


def deep_yaml(depth: int = 100_000) -> str:
    return "%YAML:1.0\n---\ncameras: " + "[" * depth + "]" * depth + "\n"
