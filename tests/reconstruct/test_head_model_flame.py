"""FLAME loader on a tiny FLAME-format file written here (FLAME itself is never shipped), and the
restricted unpickler against malicious pickles."""
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from headcap.reconstruct.head_loaders.safe_pickle import UnsafePickleError, load_model_pickle
from headcap.reconstruct.head_loaders import load_flame, load_head_model

NUM_V, NUM_J = 40, 5


def flame_arrays(seed: int = 0) -> dict:
    """Arrays with FLAME's keys, shapes and dtypes (300 shape + 100 expression modes)."""
    rng = np.random.default_rng(seed)
    template = rng.normal(scale=0.05, size=(NUM_V, 3))
    template[:, 2] += 0.05
    regressor = np.zeros((NUM_J, NUM_V))
    for j in range(NUM_J):
        cols = rng.choice(NUM_V, size=4, replace=False)
        regressor[j, cols] = rng.dirichlet(np.ones(4))
    weights = rng.dirichlet(np.ones(NUM_J) * 0.3, size=NUM_V)
    return {
        "v_template": template,
        "f": rng.integers(0, NUM_V, size=(60, 3)).astype(np.uint32),
        "shapedirs": rng.normal(scale=1e-3, size=(NUM_V, 3, 400)),
        "posedirs": rng.normal(scale=1e-3, size=(NUM_V, 3, 9 * (NUM_J - 1))),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


class _FakeCh:
    """Pickles exactly like chumpy.ch.Ch: class chumpy.ch.Ch, state = __dict__ minus caches."""

    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    def __getstate__(self):
        return dict(self.__dict__)


def dump_flame_pickle(path, arrays: dict, protocol: int) -> None:
    """Write a FLAME-style pkl: shapedirs as a chumpy Ch, J_regressor as scipy csc."""
    module_ch = types.ModuleType("chumpy.ch")
    _FakeCh.__module__, _FakeCh.__qualname__, _FakeCh.__name__ = "chumpy.ch", "Ch", "Ch"
    module_ch.Ch = _FakeCh
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = module_ch
    try:
        payload = dict(arrays)
        payload["shapedirs"] = _FakeCh(arrays["shapedirs"])
        payload["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def reference_flame(arrays: dict, shape, expr, pose) -> tuple[np.ndarray, np.ndarray]:
    """Independent numpy FLAME/SMPL forward (smplx's lbs written out with scipy rotations)."""
    betas = np.concatenate([shape, expr])
    v_shaped = arrays["v_template"] + arrays["shapedirs"] @ betas
    joints = arrays["J_regressor"] @ v_shaped
    mats = Rotation.from_rotvec(pose).as_matrix()
    feature = (mats[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + arrays["posedirs"] @ feature
    parents = [-1, 0, 1, 1, 1]
    world = np.zeros((NUM_J, 4, 4))
    for j in range(NUM_J):
        local = np.eye(4)
        local[:3, :3] = mats[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
        world[j] = local if parents[j] < 0 else world[parents[j]] @ local
    posed_joints = world[:, :3, 3].copy()
    skin = world.copy()
    skin[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    blended = np.einsum("vj,jab->vab", arrays["weights"], skin)
    verts = np.einsum("vab,vb->va", blended[:, :3, :3], v_posed) + blended[:, :3, 3]
    return verts, posed_joints


@pytest.mark.parametrize("protocol", [1, 2, 4, 5])
def test_flame_pickle_with_chumpy_and_sparse_loads_without_chumpy(tmp_path, protocol):
    arrays = flame_arrays()
    path = tmp_path / "generic_model.pkl"
    dump_flame_pickle(path, arrays, protocol)
    assert "chumpy" not in sys.modules
    model = load_flame(path, dtype=torch.float64)
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    assert model.num_identity == 300 and model.num_expression == 100
    assert model.joint_names == ["global", "neck", "jaw", "eye_left", "eye_right"] or \
        model.joint_names == ["global", "neck", "jaw", "eye_right", "eye_left"]
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    assert np.array_equal(model.joint_regressor.numpy(), arrays["J_regressor"])
    assert np.array_equal(model.identity_basis.numpy(), arrays["shapedirs"][:, :, :300].transpose(2, 0, 1))
    assert np.array_equal(model.faces.numpy(), arrays["f"].astype(np.int64))

    rng = np.random.default_rng(1)
    shape, expr = rng.normal(size=300), rng.normal(size=100)
    pose = rng.normal(scale=0.3, size=(NUM_J, 3))
    out = model(
        identity=torch.from_numpy(shape)[None], expression=torch.from_numpy(expr)[None],
        joint_rotations=torch.from_numpy(pose)[None],
    )
    verts, joints = reference_flame(arrays, shape, expr, pose)
    assert np.abs(out.vertices[0].numpy() - verts).max() < 1e-12
    assert np.abs(out.joints[0].numpy() - joints).max() < 1e-12


def test_flame_eye_names_follow_joint_side(tmp_path):
    arrays = flame_arrays(seed=2)
    reg = np.zeros((NUM_J, NUM_V))
    reg[:, :NUM_J] = np.eye(NUM_J)
    arrays["J_regressor"] = reg
    arrays["v_template"][3] = [0.03, 0.0, 0.08]  # joint 3 on the subject's left (+x)
    arrays["v_template"][4] = [-0.03, 0.0, 0.08]
    path = tmp_path / "flame2023.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    model = load_head_model(f"flame:{path}", dtype=torch.float64)
    assert model.joint_names[3:] == ["eye_left", "eye_right"]
    arrays["v_template"][[3, 4]] = arrays["v_template"][[4, 3]]
    np.savez(path, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    assert load_flame(path).joint_names[3:] == ["eye_right", "eye_left"]


def test_flame_npz_equals_pickle(tmp_path):
    arrays = flame_arrays(seed=3)
    pkl, npz = tmp_path / "m.pkl", tmp_path / "m.npz"
    dump_flame_pickle(pkl, arrays, 2)
    np.savez(npz, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    a, b = load_flame(pkl, dtype=torch.float64), load_flame(npz, dtype=torch.float64)
    for name in ("template", "identity_basis", "expression_basis", "pose_correctives", "joint_regressor", "lbs_weights"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_flame_missing_key_and_bad_shape(tmp_path):
    arrays = flame_arrays()
    path = tmp_path / "m.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "weights" and isinstance(v, np.ndarray)})
    with pytest.raises(ValueError, match="weights"):
        load_flame(path)
    arrays["posedirs"] = arrays["posedirs"][:, :, :30]
    np.savez(path, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    with pytest.raises(ValueError, match="posedirs"):
        load_flame(path)


class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize("payload_class", [_SystemPayload, _EvalPayload])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch, payload_class, nested):
    marker = tmp_path / "pwned"
    payload = payload_class(f"touch {marker}")
    obj = {"v_template": np.zeros((3, 3)), "shapedirs": [payload]} if nested else payload
    raw = pickle.dumps(obj, protocol=2)  # names the real os.system (posix.system) / eval
    calls = []
    monkeypatch.setattr(os, "system", lambda cmd: calls.append(cmd) or 0)
    path = tmp_path / "evil.pkl"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError, match="refusing to load global (posix|os|builtins|__builtin__)\\.(system|eval)"):
        load_model_pickle(path)
    with pytest.raises(ValueError):
        load_head_model(f"flame:{path}")
    assert not marker.exists() and calls == []


def test_reconstructor_and_build_tricks_are_refused(tmp_path):
    cases = {
        # copyreg._reconstructor(numpy.ndarray, object, None): allowed names, forbidden class
        "reconstructor": b"ccopyreg\n_reconstructor\n(cnumpy\nndarray\nc__builtin__\nobject\nNtR.",
        # BUILD on an allowed class itself, trying to replace an attribute
        "build_on_class": b"cchumpy.ch\nCh\n(N}S'kind'\nS'pwned'\nstb.",
        # a chumpy expression node is refused with a hint
        "chumpy_expression": b"cchumpy.ch_ops\nadd\n.",
        "persistent_id": b"P1\n.",
    }
    for name, raw in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(raw)
        with pytest.raises(ValueError):
            load_model_pickle(path)
    from headcap.reconstruct.head_loaders.safe_pickle import _ChStandIn

    assert _ChStandIn.kind == "chumpy.ch.Ch"
    with pytest.raises(UnsafePickleError, match="chumpy expression"):
        load_model_pickle(tmp_path / "chumpy_expression.pkl")


def test_non_dict_and_garbage_pickles(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="dict"):
        load_model_pickle(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable"):
        load_model_pickle(path)
    path.write_bytes(pickle.dumps({"a": np.array([object()], dtype=object)}, protocol=2))
    with pytest.raises(ValueError):
        load_model_pickle(path)


def _py2_str(raw: bytes) -> bytes:
    """A Python 2 `str` (SHORT_BINSTRING / BINSTRING): how cPickle stored array buffers."""
    import struct

    return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw


def _py2_array(array: np.ndarray) -> bytes:
    """The opcodes Python 2's cPickle (protocol 2) wrote for a numpy array."""
    import struct

    array = np.ascontiguousarray(array)
    code = {np.dtype("<f8"): b"f8", np.dtype("<u4"): b"u4", np.dtype("<i4"): b"i4"}[array.dtype]
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in array.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(code) + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"<")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(array.tobytes()) + b"tb")


def _py2_dict(items: dict) -> bytes:
    out = b"}"
    for key, value in items.items():
        out += _py2_str(key.encode()) + value + b"s"
    return out


def test_python2_flame_pickle_with_latin1_buffers(tmp_path):
    """FLAME 2020's generic_model.pkl is a Python 2 cPickle: byte strings, copy_reg, chumpy."""
    arrays = flame_arrays(seed=4)
    csc = scipy.sparse.csc_matrix(arrays["J_regressor"])
    sparse_state = _py2_dict({
        "_shape": b"(K\x05K" + bytes([NUM_V]) + b"t", "data": _py2_array(csc.data),
        "indices": _py2_array(csc.indices.astype("<i4")), "indptr": _py2_array(csc.indptr.astype("<i4")),
        "format": _py2_str(b"csc"), "maxprint": b"K2",
    })
    ch_state = _py2_dict({"x": _py2_array(arrays["shapedirs"]), "_itr": b"N",
                          "_dirty_vars": b"c__builtin__\nset\n](" + _py2_str(b"x") + b"e\x85R"})
    items = {key: _py2_array(arrays[key].astype("<u4" if key in ("f", "kintree_table") else "<f8"))
             for key in ("v_template", "f", "posedirs", "weights", "kintree_table")}
    items["J_regressor"] = (b"ccopy_reg\n_reconstructor\n(cscipy.sparse.csc\ncsc_matrix\nc__builtin__\nobject\nNtR"
                            + sparse_state + b"b")
    items["shapedirs"] = b"cchumpy.ch\nCh\n)\x81" + ch_state + b"b"
    items["bs_style"] = _py2_str(b"lbs")
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(b"\x80\x02" + _py2_dict(items) + b".")
    model = load_flame(path, dtype=torch.float64)
    npz = tmp_path / "same.npz"
    np.savez(npz, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    reference = load_flame(npz, dtype=torch.float64)
    for name in ("template", "identity_basis", "expression_basis", "pose_correctives", "joint_regressor", "lbs_weights", "faces", "parents"):
        assert torch.equal(getattr(model, name), getattr(reference, name)), name
