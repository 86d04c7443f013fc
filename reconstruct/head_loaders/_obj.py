"""Minimal Wavefront OBJ reading for head-model assets (positions, UVs, polygon faces)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ObjMesh:
    """vertices [V, 3] f64, uvs [T, 2] f64, polygons: list of vertex-index lists (0-based),
    polygon_uvs: matching uv-index lists (or None per polygon), materials: usemtl per polygon,
    groups: the last `g` name before each polygon."""

    vertices: np.ndarray
    uvs: np.ndarray
    polygons: list[list[int]]
    polygon_uvs: list[list[int] | None]
    materials: list[str]
    groups: list[str]


def read_obj_vertices(path: Path) -> np.ndarray:
    """Only the `v` lines of an OBJ: [V, 3] float64 (fast path for blendshape files)."""
    text = _read_text(path)
    rows = [line[2:] for line in text.splitlines() if line.startswith("v ")]
    try:
        values = np.array(" ".join(rows).split(), dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: malformed 'v' line ({exc})") from exc
    if values.size == 0 or values.size % 3:
        raise ValueError(f"{path}: expected 'v x y z' lines, found {values.size} numbers")
    return values.reshape(-1, 3)


def read_obj(path: Path) -> ObjMesh:
    """Positions, UVs and polygon faces (with their uv indices and usemtl group)."""
    return parse_obj(_read_text(path), str(path))


def parse_obj(text: str, path: str = "<obj>") -> ObjMesh:
    """`read_obj` on text already in memory; `path` only names it in errors."""
    verts: list[str] = []
    uvs: list[str] = []
    polygons: list[list[int]] = []
    polygon_uvs: list[list[int] | None] = []
    materials: list[str] = []
    groups: list[str] = []
    material = ""
    group = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("v "):
            verts.append(line[2:])
        elif line.startswith("vt "):
            uvs.append(" ".join(line[3:].split()[:2]))
        elif line.startswith("usemtl "):
            material = line[7:].strip()
        elif line.startswith("g "):
            group = line[2:].strip()
        elif line.startswith("f "):
            corners = line[2:].split()
            if len(corners) < 3:
                raise ValueError(f"{path}:{number}: face with {len(corners)} corners")
            try:
                parts = [c.split("/") for c in corners]
                polygons.append([int(p[0]) - 1 for p in parts])
                has_uv = all(len(p) > 1 and p[1] for p in parts)
                polygon_uvs.append([int(p[1]) - 1 for p in parts] if has_uv else None)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: malformed face {line!r}") from exc
            materials.append(material)
            groups.append(group)
    vertices = np.array(" ".join(verts).split(), dtype=np.float64).reshape(-1, 3)
    uv_array = np.array(" ".join(uvs).split(), dtype=np.float64).reshape(-1, 2)
    if any(i < 0 or i >= len(vertices) for poly in polygons for i in poly):
        raise ValueError(f"{path}: a face indexes a vertex outside [1, {len(vertices)}] (negative OBJ indices are not supported)")
    return ObjMesh(vertices, uv_array, polygons, polygon_uvs, materials, groups)


def triangulate(polygons: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons. Returns triangles [F, 3] and the source polygon of each [F]."""
    tris: list[list[int]] = []
    source: list[int] = []
    for index, poly in enumerate(polygons):
        for k in range(1, len(poly) - 1):
            tris.append([poly[0], poly[k], poly[k + 1]])
            source.append(index)
    return np.array(tris, dtype=np.int64).reshape(-1, 3), np.array(source, dtype=np.int64)


def triangulate_padded(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate a [P, K] polygon array padded with -1. Returns [F, 3] and source [F]."""
    tris = []
    source = []
    for k in range(1, polygons.shape[1] - 1):
        valid = polygons[:, k + 1] >= 0
        tris.append(np.stack([polygons[valid, 0], polygons[valid, k], polygons[valid, k + 1]], axis=1))
        source.append(np.nonzero(valid)[0])
    source_all = np.concatenate(source)
    order = np.argsort(source_all, kind="stable")
    return np.concatenate(tris)[order].astype(np.int64), source_all[order]


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read OBJ file ({exc})") from exc
