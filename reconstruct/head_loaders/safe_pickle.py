"""A pickle reader for model files (FLAME, SMPL-style) that never imports or runs pickled code.

Every global a pickle names goes through `find_class`, which answers from a fixed table:
numpy's array/dtype/scalar rebuilders, latin-1 bytes, set/frozenset, and inert stand-ins for chumpy `Ch` and scipy sparse
matrices that only record their state. Anything else (os.system, builtins.eval, a chumpy
expression node, ...) raises `UnsafePickleError` before it can be called. chumpy and scipy are
never imported; stand-ins are turned into numpy arrays afterwards by `to_plain`.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

__all__ = ["UnsafePickleError", "load_model_pickle", "to_plain"]


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list, or has a shape we refuse."""


#: distinct objects an unpickled model may hold (FLAME 2023 has a few hundred)
MAX_NODES = 1_000_000
#: objects counted once per reference: what a recursive walk such as `to_plain` visits. A few
#: hundred bytes of pickle can share one list 60 levels deep, i.e. 2**60 nodes to walk.
MAX_TREE_NODES = 10_000_000
MAX_DEPTH = 100
MAX_ARRAY_BYTES = 1 << 32


class _Frozen(type):
    """Metaclass: a pickle's BUILD opcode cannot set attributes on these classes."""

    def __setattr__(cls, name, value):
        raise UnsafePickleError(f"refusing to set attribute {name!r} on {cls.__name__}")


class _SafeCallable:
    """Wraps an allowed function so that a pickle cannot rebind its attributes either."""

    __slots__ = ("_fn",)

    def __init__(self, fn) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args):
        return self._fn(*args)

    def __setattr__(self, name, value):
        raise UnsafePickleError(f"refusing to set attribute {name!r} on an allowed global")


class _StandIn(metaclass=_Frozen):
    """Records the state a pickle gives an object; never behaves like the original."""

    kind = "object"

    def __init__(self, *args) -> None:
        if args:
            raise UnsafePickleError(f"{self.kind}: unexpected constructor arguments in pickle")
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state


class _ChStandIn(_StandIn):
    kind = "chumpy.ch.Ch"


class _SparseStandIn(_StandIn):
    kind = "scipy sparse matrix"
    layout = "csc"


class _CscStandIn(_SparseStandIn):
    layout = "csc"


class _CsrStandIn(_SparseStandIn):
    layout = "csr"


class _ObjectMarker(metaclass=_Frozen):
    """What the pickle's `object` resolves to: only ever a `_reconstructor` argument."""


def _reconstructor(cls, base, state):
    # copyreg._reconstructor would call base.__new__ / base.__init__ with pickled arguments;
    # this one only builds our own stand-ins.
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not _ObjectMarker or state is not None:
        raise UnsafePickleError(f"refusing copyreg._reconstructor({cls!r}, {base!r}, ...)")
    return cls.__new__(cls)


def _numpy_global(name: str):
    try:
        from numpy._core import multiarray as core_multiarray, numeric as core_numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as core_multiarray, numeric as core_numeric
    table = {
        "_reconstruct": core_multiarray._reconstruct,
        "scalar": core_multiarray.scalar,
        "_frombuffer": core_numeric._frombuffer,
    }
    return table[name]


def _ndarray_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing numpy _reconstruct of {subtype!r}")
    try:
        count = int(np.prod([int(n) for n in shape], dtype=object)) if isinstance(shape, tuple) else int(shape)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError) as exc:
        raise UnsafePickleError(f"numpy _reconstruct with shape {shape!r}, dtype {dtype!r} ({exc})") from None
    if count < 0 or count * itemsize > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"numpy _reconstruct asks for shape {shape!r} of {dtype!r}, over the "
                                f"{MAX_ARRAY_BYTES:,}-byte limit")
    return _numpy_global("_reconstruct")(np.ndarray, shape, dtype)


def _dtype(*args):
    return np.dtype(*args)


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"refusing numpy scalar of dtype {dtype!r}")
    return _numpy_global("scalar")(dtype, data)


def _frombuffer(buffer, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"refusing numpy buffer of dtype {dtype!r}")
    return _numpy_global("_frombuffer")(buffer, dtype, shape, order)


def _codecs_encode(text, encoding="utf-8"):
    # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocols 0-2.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED: dict = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _SafeCallable(_ndarray_reconstruct)
    _ALLOWED[(_module, "scalar")] = _SafeCallable(_scalar)
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _SafeCallable(_frombuffer)
_ALLOWED[("_codecs", "encode")] = _SafeCallable(_codecs_encode)
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = _SafeCallable(_dtype)
for _module in ("copy_reg", "copyreg"):
    _ALLOWED[(_module, "_reconstructor")] = _SafeCallable(_reconstructor)
for _module in ("__builtin__", "builtins"):
    _ALLOWED[(_module, "object")] = _ObjectMarker
    _ALLOWED[(_module, "set")] = set
    _ALLOWED[(_module, "frozenset")] = frozenset
_ALLOWED[("chumpy.ch", "Ch")] = _ChStandIn
for _module in ("scipy.sparse.csc", "scipy.sparse._csc"):
    _ALLOWED[(_module, "csc_matrix")] = _CscStandIn
for _module in ("scipy.sparse.csr", "scipy.sparse._csr"):
    _ALLOWED[(_module, "csr_matrix")] = _CsrStandIn


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("chumpy"):
                hint = " (a chumpy expression, not a plain Ch array: re-save the file with chumpy's .r values)"
            raise UnsafePickleError(f"refusing to load global {module}.{name}{hint}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing persistent ids in pickle")


def load_model_pickle(path: str | Path) -> dict:
    """Read a model pickle into a dict of plain numpy arrays / Python scalars.

    Raises UnsafePickleError (a ValueError) naming the file and the refused global.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    try:
        # latin1: Python 2 pickles carry numpy buffers as byte strings.
        obj = _RestrictedUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # malformed pickles raise many types; report them as bad input
        raise ValueError(f"{path}: not a readable model pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict of model arrays, got {type(obj).__name__}")
    check_graph(obj, str(path))
    return {str(k): to_plain(v, f"{path}:{k}") for k, v in obj.items()}


def _children(node) -> list:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    if isinstance(node, _StandIn):
        state = getattr(node, "state", None)
        return [] if state is None else [state]
    return []


def check_graph(root, where: str = "pickle") -> int:
    """Refuse an unpickled object graph that is cyclic, nested deeper than MAX_DEPTH, holds more
    than MAX_NODES distinct objects, or expands to more than MAX_TREE_NODES when every reference is
    walked. Shared objects are sized once (memo by id), so the check itself is linear in the
    distinct objects. Returns the expanded size."""
    size: dict[int, int] = {}
    on_path = {id(root)}
    frames = [[root, _children(root), 0, 1]]
    while frames:
        frame = frames[-1]
        node, kids, i, _ = frame
        if i < len(kids):
            frame[2] += 1
            child = kids[i]
            cid = id(child)
            if cid in size:
                frame[3] += size[cid]
                continue
            if cid in on_path:
                raise UnsafePickleError(f"{where}: the pickled objects form a cycle (a container holds itself)")
            grandkids = _children(child)
            if not grandkids:
                size[cid] = 1
                frame[3] += 1
            elif len(frames) >= MAX_DEPTH:
                raise UnsafePickleError(f"{where}: pickled containers nested more than {MAX_DEPTH} levels deep")
            else:
                on_path.add(cid)
                frames.append([child, grandkids, 0, 1])
        else:
            frames.pop()
            on_path.discard(id(node))
            total = frame[3]
            size[id(node)] = total
            if total > MAX_TREE_NODES:
                raise UnsafePickleError(f"{where}: the pickle's shared references expand to more than "
                                        f"{MAX_TREE_NODES:,} objects (a reference bomb, not model data)")
            if frames:
                frames[-1][3] += total
        if len(size) > MAX_NODES:
            raise UnsafePickleError(f"{where}: more than {MAX_NODES:,} distinct objects (not model data)")
    return size.get(id(root), 1)


def to_plain(value, where: str = "pickle"):
    """Replace stand-ins by numpy arrays: Ch -> its `x`, sparse -> dense float64."""
    if isinstance(value, _ChStandIn):
        state = getattr(value, "state", None)
        state = state if isinstance(state, dict) else {}
        if "x" not in state:
            raise UnsafePickleError(f"{where}: chumpy Ch without an 'x' array")
        return np.asarray(to_plain(state["x"], where))
    if isinstance(value, _SparseStandIn):
        return _sparse_to_dense(value, where)
    if isinstance(value, _StandIn):
        raise UnsafePickleError(f"{where}: unsupported object {value.kind}")
    if isinstance(value, dict):
        return {k: to_plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v, where) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise UnsafePickleError(f"{where}: object arrays are not model data")
    return value


def _sparse_to_dense(value: _SparseStandIn, where: str) -> np.ndarray:
    state = getattr(value, "state", None)
    state = state if isinstance(state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    try:
        data = np.asarray(state["data"], dtype=np.float64)
        indices = np.asarray(state["indices"], dtype=np.int64)
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        rows, cols = (int(s) for s in shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafePickleError(f"{where}: sparse matrix state is incomplete ({exc})") from None
    major, minor = (cols, rows) if value.layout == "csc" else (rows, cols)
    if len(indptr) != major + 1 or indptr[-1] != len(data) or len(indices) != len(data):
        raise UnsafePickleError(f"{where}: inconsistent {value.layout} arrays")
    if len(indices) and (indices.min() < 0 or indices.max() >= minor):
        raise UnsafePickleError(f"{where}: {value.layout} indices outside [0, {minor})")
    dense = np.zeros((major, minor), dtype=np.float64)
    counts = np.diff(indptr)
    if (counts < 0).any():
        raise UnsafePickleError(f"{where}: {value.layout} indptr is not monotone")
    np.add.at(dense, (np.repeat(np.arange(major), counts), indices), data)
    return dense.T if value.layout == "csc" else dense
