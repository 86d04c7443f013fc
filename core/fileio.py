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


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting (briefly racy with other threads)
    os.umask(mask)
    return mask


def _named_os_error(exc: OSError, path, action: str) -> OSError:
    """The same OSError (same errno, so callers can still test it) with the file named."""
    reason = exc.strerror or str(exc)
    return type(exc)(exc.errno, f"cannot {action} ({reason})", str(path)) if exc.errno else \
        OSError(f"{path}: cannot {action} ({reason})")


def atomic_write_bytes(path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file.

    The file gets the mode an ordinary `open(path, "w")` would give it (0o666 less the umask;
    an existing file keeps its mode): mkstemp's private 0o600 would hide rig.json and reports
    from a studio's other users. Errors (a full disk, a read-only folder) name the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _named_os_error(exc, path, "write") from None
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~current_umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _named_os_error(exc, path, "write") from None
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


#: deeper nesting than any headcap file has; refused before a recursive walk can overflow
MAX_JSON_DEPTH = 64
#: JSON integers beyond 64 bits are not a size, a count or an id anywhere in headcap
MAX_JSON_INT = 2**64


def read_text(path) -> str:
    """A UTF-8 text file, with errors that name the file (missing, not text, a symlink loop)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FileFormatError(path, "<file>", "is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, "<file>", f"not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise _named_os_error(exc, path, "read") from None
    except MemoryError:
        raise FileFormatError(path, "<file>", "too large to read into memory") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_json(path) -> object:
    """Parse a JSON file, rejecting NaN/Infinity literals, duplicate keys, nesting deeper than
    MAX_JSON_DEPTH and integers beyond 64 bits, with errors that name the file and field."""
    path = Path(path)
    return parse_json(read_text(path), path)


def parse_json(text: str, path) -> object:
    """`read_json` for text already read from `path`."""
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except _DuplicateKey as exc:
        raise FileFormatError(path, exc.key, f"duplicate key {exc.key!r} (an object names each key once; "
                              "which value was meant is ambiguous)") from None
    except json.JSONDecodeError as exc:
        raise FileFormatError(path, "<file>", f"invalid or truncated JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise FileFormatError(path, "<file>", f"JSON nested too deeply to be a headcap file (limit {MAX_JSON_DEPTH})") from None
    except ValueError as exc:
        # the parser cannot say where the NaN/Infinity sat: parse again leniently and find it
        try:
            where = _first_nonfinite(json.loads(text))
        except (ValueError, RecursionError):
            where = None
        if where is None:
            raise FileFormatError(path, "<file>", str(exc)) from None
        raise FileFormatError(path, where[0], f"non-finite value {where[1]!r}") from None
    _check_tree(data, path)
    return data


def _check_tree(data, path) -> None:
    """Depth and integer-size limits, walked without recursion."""
    stack = [(data, "", 0)]
    while stack:
        node, name, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise FileFormatError(path, name or "<root>", f"nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, f"{name}.{k}" if name else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{name}[{i}]", depth + 1) for i, v in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= MAX_JSON_INT:
            digits = len(str(abs(node)))
            shown = str(node) if digits <= 40 else f"{str(node)[:20]}... ({digits} digits)"
            raise FileFormatError(path, name or "<root>", f"integer {shown} is too large (beyond 64 bits)")


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


#: default total uncompressed size an .npz may declare (HEADCAP_MAX_NPZ_BYTES overrides it)
DEFAULT_MAX_NPZ_BYTES = 4 * 1024**3


def max_npz_bytes() -> int:
    text = os.environ.get("HEADCAP_MAX_NPZ_BYTES", "").strip()
    try:
        return int(text) if text else DEFAULT_MAX_NPZ_BYTES
    except ValueError:
        raise ValueError(f"environment variable HEADCAP_MAX_NPZ_BYTES: expected a byte count, got {text!r}") from None


def check_npz_members(path, limit: int | None = None) -> None:
    """Check an .npz archive from its zip directory and each member's .npy header, before any
    array is inflated: declared sizes within `limit` (a zip bomb is refused unread), plain dtypes
    (no pickled objects), and shapes that agree with the declared sizes."""
    import zipfile

    import numpy as np

    limit = max_npz_bytes() if limit is None else limit
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(info.file_size for info in members)
        if total > limit:
            biggest = max(members, key=lambda info: info.file_size)
            raise FileFormatError(path, biggest.filename.removesuffix(".npy"),
                                  f"the archive declares {total:,} bytes uncompressed ({biggest.file_size:,} in this "
                                  f"array), over the limit of {limit:,} (raise HEADCAP_MAX_NPZ_BYTES to read it)")
        for info in members:
            field = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy"):
                raise FileFormatError(path, field, "not an .npy member (an .npz holds only arrays)")
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                except (ValueError, EOFError, OSError) as exc:
                    raise FileFormatError(path, field, f"not a readable .npy header ({exc})") from None
                header_bytes = member.tell()
            if dtype.hasobject:
                raise FileFormatError(path, field, f"an object array (dtype {dtype}): pickled data is never loaded")
            count = 1
            for n in shape:
                count *= int(n)
            if count * dtype.itemsize != info.file_size - header_bytes:
                raise FileFormatError(path, field, f"header says shape {shape} of {dtype} ({count * dtype.itemsize:,} "
                                      f"bytes) but the member holds {info.file_size - header_bytes:,} bytes")


def read_npz(path) -> dict:
    """Every array of an .npz of plain arrays, read eagerly and never unpickled, with errors that
    name the file (a truncated or corrupt archive, a pickled object array, a lone .npy, a member
    whose declared size is over the limit: checked before anything is inflated)."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except OSError as exc:
        raise _named_os_error(exc, path, "read") from None
    try:
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            if magic.startswith(b"\x93NUMPY"):
                raise FileFormatError(path, "<file>", "a single array, not an .npz archive of named arrays")
            # numpy would call any other file "pickled data" and suggest allow_pickle
            raise FileFormatError(path, "<file>", f"not an .npz archive (starts with {magic!r})")
        check_npz_members(path)
        data = np.load(path, allow_pickle=False)
        with data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except FileFormatError:
        raise
    except MemoryError:
        raise FileFormatError(path, "<file>", "too large to load into memory") from None
    except (ValueError, EOFError, OSError, RuntimeError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        # OSError: zipfile seeking to offsets a corrupt directory gives (EINVAL); RuntimeError: a
        # member flagged as encrypted; NotImplementedError: a compression method zipfile lacks
        raise FileFormatError(path, "<file>", f"not a readable .npz of plain arrays "
                              f"({type(exc).__name__}: {exc})") from None


def numeric_array(value, path, field: str):
    """A float64 array from a parsed file value (nested lists of numbers). Booleans, strings and
    None are refused (numpy would read `true` as 1.0), as are integers beyond float range."""
    import numpy as np

    stack, seen = [value], 0
    while stack:
        node = stack.pop()
        seen += 1
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, bool) or not isinstance(node, (int, float)):
            raise FileFormatError(path, field, f"expected numbers, found {type(node).__name__} {_short(node, 80)} "
                                  f"in {_short(value)}")
    try:
        return np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise FileFormatError(path, field, f"holds an integer too large for a float: {_short(value)}") from None
    except (TypeError, ValueError):
        raise FileFormatError(path, field, f"not a numeric array (ragged rows?): {_short(value)}") from None


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    if "\x00" in relative:
        raise FileFormatError(path_of_manifest, field, f"path {relative!r} holds a NUL byte")
    try:
        root_resolved = Path(root).resolve()
        full = (root_resolved / rel).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise FileFormatError(path_of_manifest, field, f"path {relative!r} cannot be resolved ({exc})") from None
    if full != root_resolved and root_resolved not in full.parents:
        raise FileFormatError(path_of_manifest, field, f"path {relative!r} escapes the session folder {root_resolved}")
    return full


def read_json_object_or_none(path) -> dict | None:
    """A bookkeeping file (a stage record, a build stamp): its JSON object, or None when it is
    missing, unreadable or not an object (a crash may have left anything there)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fsync_dir(path) -> None:
    """Make renames inside `path` durable (best effort: some filesystems refuse a directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def swap_into_place(work, out, old, on_step=None) -> None:
    """Replace the folder `out` by the finished folder `work`, keeping the previous `out` as
    `old` only for the instant of the swap: remove a stale `old`, rename out -> old, work -> out,
    remove old. Each step is a rename or a removal of a folder nobody reads, so a crash at any
    point leaves `out` old or new (or, between the two renames, the old one in `old` and the new
    one in `work`, which the caller's recovery completes). on_step(name) is called after
    "old-moved", "renamed" and "old-removed" (the fault-injection points)."""
    import shutil

    work, out, old = Path(work), Path(out), Path(old)
    step = on_step or (lambda name: None)
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
        step("old-moved")
    os.replace(work, out)
    step("renamed")
    if old.exists():
        shutil.rmtree(old)
        step("old-removed")
    fsync_dir(out.parent)


def _only_start_debris(folder: Path) -> bool:
    """True when `folder` holds nothing but empty folders and the temporary files an interrupted
    atomic write leaves (`.NAME.XXXX.tmp`): what a run killed while creating its work folder,
    before it could mark the folder as its own, leaves behind. Such a folder holds no one's data."""
    for _, dirs, files in os.walk(folder):
        if any(not (name.startswith(".") and name.endswith(".tmp")) for name in files):
            return False
    return True


def claim_work_dir(work, ours, what: str) -> Path:
    """Start an empty work folder at `work`. A folder already there is removed when `ours(work)`
    says an earlier run of `what` left it, or when it holds only the debris of a run killed
    before it could mark the folder (see _only_start_debris); anything else is refused, naming
    the folder, so a user's own folder of that name is never deleted. Returns `work`."""
    import shutil

    work = Path(work)
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise ValueError(f"{work}: exists and is not a folder left by `{what}`; remove it first")
    if work.exists():
        if not (ours(work) or _only_start_debris(work)):
            raise ValueError(f"{work}: exists and was not left by `{what}`; remove it first")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work
