"""Fingerprints the runner caches on: configs, input files, code and the software around them."""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

CODE_SUFFIXES = (".py", ".cpp", ".cu", ".h")
_CHUNK = 1 << 20


def canonical(value):
    """A JSON-ready form of a config value: dataclasses as dicts, paths and enums as strings,
    tuples as lists; non-finite floats as strings so that the JSON stays standard."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} has no canonical JSON form")


def digest(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_fingerprint(path: Path) -> str:
    """Content hash of a file, or of every file under a folder (relative names included, so a
    renamed file changes it; hidden files and folders are not part of the data)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: stage input does not exist")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0" + file_sha256(file).encode() + b"\n")
    return h.hexdigest()


@lru_cache(maxsize=None)
def code_fingerprint(modules: tuple[str, ...]) -> str:
    """Hash of the source files of `modules` (a package counts with everything under it, kernel
    sources included), plus headcap's version: an edited stage invalidates its cached results."""
    h = hashlib.sha256(headcap_version().encode())
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"pipeline: stage code module {name!r} cannot be found")
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            files = sorted(p for root in spec.submodule_search_locations for p in Path(root).rglob("*")
                           if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts)
            base = Path(next(iter(spec.submodule_search_locations)))
        else:
            files, base = [origin], origin.parent
        for file in files:
            h.update(f"{name}:{file.relative_to(base).as_posix()}\0".encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def headcap_version() -> str:
    try:
        from importlib.metadata import version

        return version("headcap")
    except Exception:
        return "0.1.0"


def software_versions() -> dict[str, str]:
    """Versions recorded beside every stage's outputs."""
    versions = {"headcap": headcap_version(), "python": platform.python_version(),
                "platform": platform.platform()}
    for name in ("numpy", "torch", "cv2", "scipy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions
