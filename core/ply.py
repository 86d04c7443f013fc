"""PLY files as their owners define them (Greg Turk's format, as written by Open3D, MeshLab,
COLMAP, nerfstudio and 3DGS): `ascii 1.0`, `binary_little_endian 1.0` and `binary_big_endian
1.0`, any element order, scalar properties of every PLY type, and `list` properties (faces).

    write_ply(path, {"x": ..., "y": ..., "z": ..., "confidence": ...}, faces=None)
    vertex, faces = read_ply(path)      # vertex: name -> 1-D array; faces: [F,3] int or None

Writing is binary little-endian and atomic. Reading checks every count against the file size
(and against headcap.core.limits-style bounds) before allocating, and names the file and the
field in its errors. Faces with more than three corners are fan-triangulated on reading.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
         "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
         "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_WRITE_NAMES = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short",
                "u4": "uint", "i4": "int"}
#: most elements/list entries read from one file (a header can claim any count)
MAX_ITEMS = 200_000_000


def write_ply(path: str | os.PathLike, vertex: dict[str, np.ndarray], faces: np.ndarray | None = None,
              comments: tuple[str, ...] = ()) -> Path:
    """Write a binary little-endian PLY: one `vertex` element with the given 1-D columns (dtype
    kept when it is a PLY type, else float32) and optionally a `face` element (`vertex_indices`,
    uchar count + int indices). Atomic (temporary file, then rename)."""
    from headcap.core.fileio import atomic_write_bytes

    path = Path(path)
    if not vertex:
        raise ValueError(f"{path}: a PLY vertex element needs at least one property")
    columns, n = [], None
    for name, values in vertex.items():
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{path}: vertex property {name!r} must be 1-D, got shape {arr.shape}")
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise ValueError(f"{path}: vertex property {name!r} has {len(arr)} values, expected {n}")
        code = arr.dtype.str[1:]
        if code not in _WRITE_NAMES:
            code = "f4"
        columns.append((name, "<" + code, arr))
    dtype = np.dtype([(name, code) for name, code, _ in columns])
    rows = np.empty(n, dtype=dtype)
    for name, _, arr in columns:
        rows[name] = arr
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments),
              f"element vertex {n}"]
    header += [f"property {_WRITE_NAMES[code[1:]]} {name}" for name, code, _ in columns]
    body = [rows.tobytes()]
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"{path}: faces must be [F,3], got shape {faces.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= n):
            raise ValueError(f"{path}: face indices must lie in [0, {n}), got {faces.min()}..{faces.max()}")
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        face_rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        face_rows["n"] = 3
        face_rows["v"] = faces
        body.append(face_rows.tobytes())
    data = ("\n".join(header) + "\nend_header\n").encode("ascii") + b"".join(body)
    atomic_write_bytes(path, data)
    return path


def _parse_header(data: bytes, path: Path):
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise ValueError(f"{path}: the header's end_header line is not terminated")
    lines = data[:end].decode("ascii", errors="replace").replace("\r", "").splitlines()
    fmt, elements = None, []
    for number, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            if len(parts) != 3 or parts[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise ValueError(f"{path}: header line {number}: unknown format {' '.join(parts[1:])!r}")
            fmt = parts[1]
        elif parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError(f"{path}: header line {number}: bad element line {line!r}")
            count = int(parts[2])
            if count > MAX_ITEMS:
                raise ValueError(f"{path}: element {parts[1]!r} claims {count} items (limit {MAX_ITEMS})")
            elements.append({"name": parts[1], "count": count, "props": []})
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path}: header line {number}: property before any element")
            if parts[1:2] == ["list"]:
                if len(parts) != 5 or parts[2] not in TYPES or parts[3] not in TYPES:
                    raise ValueError(f"{path}: header line {number}: bad list property {line!r}")
                elements[-1]["props"].append((parts[4], TYPES[parts[2]], TYPES[parts[3]]))
            else:
                if len(parts) != 3 or parts[1] not in TYPES:
                    raise ValueError(f"{path}: header line {number}: bad property {line!r}")
                elements[-1]["props"].append((parts[2], TYPES[parts[1]], None))
        else:
            raise ValueError(f"{path}: header line {number}: unknown keyword {parts[0]!r}")
    if fmt is None:
        raise ValueError(f"{path}: no format line in the header")
    return fmt, elements, newline + 1


def _read_binary(body: memoryview, offset: int, element: dict, order: str, path: Path):
    props, count = element["props"], element["count"]
    if all(kind is None for _, _, kind in props):
        dtype = np.dtype([(name, order + code) for name, code, _ in props])
        size = count * dtype.itemsize
        if offset + size > len(body):
            raise ValueError(f"{path}: element {element['name']!r} needs {size} bytes, "
                             f"{max(0, len(body) - offset)} left in the file")
        rows = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        return {name: rows[name].astype(rows[name].dtype.newbyteorder("=")) for name in dtype.names}, offset + size
    # an element with list properties: rows of varying length. Fast path for the common case of
    # one list whose rows all have the same length (triangle faces), else row by row.
    if len(props) == 1 and count and offset + np.dtype(props[0][1]).itemsize <= len(body):
        name, code, item = props[0]
        n0 = int(np.frombuffer(body, order + code, 1, offset)[0])
        dtype = np.dtype([("n", order + code), ("v", order + item, (max(n0, 0),))])
        if n0 >= 0 and offset + count * dtype.itemsize <= len(body):
            rows = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            if (rows["n"] == n0).all():
                return {name: rows["v"].astype(item)}, offset + count * dtype.itemsize
    values: dict[str, list] = {name: [] for name, _, _ in props}
    for _ in range(count):
        for name, code, item in props:
            if item is None:
                width = np.dtype(code).itemsize
                if offset + width > len(body):
                    raise ValueError(f"{path}: element {element['name']!r} ends early (file truncated)")
                values[name].append(np.frombuffer(body, order + code, 1, offset)[0])
                offset += width
            else:
                width = np.dtype(code).itemsize
                if offset + width > len(body):
                    raise ValueError(f"{path}: element {element['name']!r} ends early (file truncated)")
                n = int(np.frombuffer(body, order + code, 1, offset)[0])
                offset += width
                item_width = np.dtype(item).itemsize
                if n < 0 or offset + n * item_width > len(body):
                    raise ValueError(f"{path}: list {name!r} of element {element['name']!r} claims {n} "
                                     "entries beyond the end of the file")
                values[name].append(np.frombuffer(body, order + item, n, offset).astype(item))
                offset += n * item_width
    return {name: (np.array(values[name]) if item is None else values[name]) for name, _, item in props}, offset


def _read_ascii(tokens: list[str], position: int, element: dict, path: Path):
    props, count = element["props"], element["count"]
    values: dict[str, list] = {name: [] for name, _, _ in props}
    try:
        for _ in range(count):
            for name, code, item in props:
                if item is None:
                    values[name].append(float(tokens[position]))
                    position += 1
                else:
                    n = int(tokens[position])
                    if n < 0:
                        raise ValueError
                    values[name].append(np.array(tokens[position + 1:position + 1 + n], dtype=np.float64).astype(item))
                    if len(values[name][-1]) != n:
                        raise IndexError
                    position += 1 + n
    except IndexError:
        raise ValueError(f"{path}: element {element['name']!r} ends early (file truncated)") from None
    except ValueError:
        raise ValueError(f"{path}: element {element['name']!r}: a value is not a number") from None
    out = {}
    for name, code, item in props:
        out[name] = np.array(values[name]).astype(code) if item is None else values[name]
    return out, position


def _triangles(lists, path: Path) -> np.ndarray:
    if isinstance(lists, np.ndarray):
        lists = list(lists)
    tris = []
    for polygon in lists:
        polygon = np.asarray(polygon, dtype=np.int64)
        if len(polygon) < 3:
            raise ValueError(f"{path}: a face has {len(polygon)} corners (at least 3 needed)")
        for k in range(1, len(polygon) - 1):
            tris.append((polygon[0], polygon[k], polygon[k + 1]))
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def read_ply(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read a PLY file: (vertex properties name -> 1-D array, triangles [F,3] int64 or None).
    Other elements (edges, materials) are skipped; faces come from the `face` element's
    `vertex_indices` (or `vertex_index`) list, fan-triangulated."""
    path = Path(path)
    data = path.read_bytes()
    fmt, elements, start = _parse_header(data, path)
    result: dict[str, dict] = {}
    if fmt == "ascii":
        tokens = data[start:].decode("ascii", errors="replace").split()
        position = 0
        for element in elements:
            result[element["name"]], position = _read_ascii(tokens, position, element, path)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        body, offset = memoryview(data), start
        for element in elements:
            result[element["name"]], offset = _read_binary(body, offset, element, order, path)
    if "vertex" not in result:
        raise ValueError(f"{path}: no vertex element")
    vertex = result["vertex"]
    faces = None
    if "face" in result:
        face = result["face"]
        key = "vertex_indices" if "vertex_indices" in face else "vertex_index" if "vertex_index" in face else None
        if key is None:
            raise ValueError(f"{path}: the face element has no vertex_indices list")
        faces = _triangles(face[key], path)
        count = len(next(iter(vertex.values()))) if vertex else 0
        if len(faces) and (faces.min() < 0 or faces.max() >= count):
            raise ValueError(f"{path}: face indices {faces.min()}..{faces.max()} outside the {count} vertices")
    return vertex, faces


def read_points(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A point cloud or mesh PLY as arrays: `points` [N,3] float64 and, when present, `normals`
    [N,3], `colors` [N,3] uint8, `confidence` [N], and `faces` [F,3]."""
    path = Path(path)
    vertex, faces = read_ply(path)
    missing = [k for k in ("x", "y", "z") if k not in vertex]
    if missing:
        raise ValueError(f"{path}: vertex element lacks {missing}")
    out = {"points": np.stack([vertex[k] for k in ("x", "y", "z")], 1).astype(np.float64)}
    if all(k in vertex for k in ("nx", "ny", "nz")):
        out["normals"] = np.stack([vertex[k] for k in ("nx", "ny", "nz")], 1).astype(np.float64)
    if all(k in vertex for k in ("red", "green", "blue")):
        out["colors"] = np.stack([vertex[k] for k in ("red", "green", "blue")], 1).astype(np.uint8)
    if "confidence" in vertex:
        out["confidence"] = vertex["confidence"].astype(np.float64)
    if faces is not None:
        out["faces"] = faces
    if not np.isfinite(out["points"]).all():
        raise ValueError(f"{path}: vertex positions hold NaN or infinity")
    return out


def write_points(path: str | os.PathLike, points: np.ndarray, normals: np.ndarray | None = None,
                 confidence: np.ndarray | None = None, colors: np.ndarray | None = None,
                 faces: np.ndarray | None = None) -> Path:
    """Write points (float32) with optional normals, confidence, uchar colours and triangles."""
    points = np.asarray(points, dtype=np.float32)
    vertex = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32)
        vertex.update(nx=normals[:, 0], ny=normals[:, 1], nz=normals[:, 2])
    if colors is not None:
        colors = np.asarray(colors, dtype=np.uint8)
        vertex.update(red=colors[:, 0], green=colors[:, 1], blue=colors[:, 2])
    if confidence is not None:
        vertex["confidence"] = np.asarray(confidence, dtype=np.float32)
    return write_ply(path, vertex, faces)
