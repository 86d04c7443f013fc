"""Small shared helpers for reading and writing headcap's files safely."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


class FileFormatError(ValueError):
    """A file that cannot be read: carries the file, the field and the value at fault."""

    def __init__(self, path, field: str, message: str):
        self.path = str(path)
        self.field = field
        super().__init__(f"{path}: field '{field}': {message}")


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def read_text(path) -> str:
    """A UTF-8 text file, with errors that name the file (missing, not text)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FileFormatError(path, "<file>", "is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, "<file>", f"not UTF-8 text ({exc})") from None


def read_json(path) -> object:
    """Parse a JSON file, rejecting NaN/Infinity literals, with errors that name the file."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise FileFormatError(path, "<file>", f"invalid or truncated JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise FileFormatError(path, "<file>", "JSON nested too deeply to be a headcap file") from None
    except ValueError as exc:
        # the parser cannot say where the NaN/Infinity sat: parse again leniently and find it
        where = _first_nonfinite(json.loads(text))
        if where is None:
            raise FileFormatError(path, "<file>", str(exc)) from None
        raise FileFormatError(path, where[0], f"non-finite value {where[1]!r}") from None


def _first_nonfinite(node, prefix: str = ""):
    """(json path, value) of the first NaN/inf number in a parsed JSON tree, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return prefix or "<root>", node
    if isinstance(node, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for name, child in items:
        found = _first_nonfinite(child, name)
        if found is not None:
            return found
    return None


def read_npz(path) -> dict:
    """Every array of an .npz of plain arrays, read eagerly and never unpickled, with errors that
    name the file (a truncated or corrupt archive, a pickled object array, a lone .npy)."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            # numpy would call any other file "pickled data" and suggest allow_pickle
            raise FileFormatError(path, "<file>", f"not an .npz archive (starts with {magic!r})")
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise FileFormatError(path, "<file>", "a single array, not an .npz archive of named arrays")
        with data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except FileFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise FileFormatError(path, "<file>", f"not a readable .npz of plain arrays "
                              f"({type(exc).__name__}: {exc})") from None


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def require(mapping, key: str, path, prefix: str = "", types=None):
    """mapping[key] or a FileFormatError naming `prefix.key`."""
    name = f"{prefix}{key}"
    if not isinstance(mapping, dict):
        raise FileFormatError(path, prefix.rstrip(".") or "<root>", f"expected an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise FileFormatError(path, name, "missing")
    value = mapping[key]
    if types is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types)):
        raise FileFormatError(path, name, f"expected {_type_names(types)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FileFormatError(path, name, f"non-finite value {value!r}")
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def safe_relative_path(root, relative: str, path_of_manifest, field: str) -> Path:
    """Resolve `relative` under `root`, refusing absolute paths and anything escaping `root`."""
    if not isinstance(relative, str) or not relative:
        raise FileFormatError(path_of_manifest, field, f"expected a relative path, got {relative!r}")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise FileFormatError(path_of_manifest, field, f"absolute path {relative!r} not allowed (paths are relative to the session)")
    root_resolved = Path(root).resolve()
    full = (root_resolved / rel).resolve()
    if full != root_resolved and root_resolved not in full.parents:
        raise FileFormatError(path_of_manifest, field, f"path {relative!r} escapes the session folder {root_resolved}")
    return full
