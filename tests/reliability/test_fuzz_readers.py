"""Fuzzing the file readers and the option checks (issue #19): valid files mutated field by field,
byte by byte and token by token, and random ones. A reader either returns or raises a ValueError
(FileFormatError and the other input errors are ValueErrors) naming the file; never a TypeError,
KeyError, IndexError, OverflowError, ZeroDivisionError, struct.error, cv2.error, RecursionError,
a crash or a hang.

Budget: a fixed seed (derandomize) and 40-80 examples per reader, a few seconds each.
"""
from __future__ import annotations

import copy
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headcap.calib.formats import colmap, nerfstudio, nersemble, opencv_yaml
from headcap.calib.rig_io import read_rig, rig_to_dict
from headcap.core.fileio import read_npz
from reliability_inputs import tiny_rig

#: HEADCAP_FUZZ_EXAMPLES=2000 (say) for a longer local campaign; CI keeps the small fixed budget
_SCALE = max(1, int(os.environ.get("HEADCAP_FUZZ_EXAMPLES", "80"))) / 80
FUZZ = settings(max_examples=int(80 * _SCALE), deadline=None, derandomize=_SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=int(40 * _SCALE))

JSON_LEAF = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
             | st.sampled_from([0, -1, 1, 2**63, 10**400, 1e308, -0.0, 1e-320])
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
             | st.sampled_from(["", "..", "../x", "/etc/passwd", "a\nb", "[/]", "\x00", "cam00"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=5)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=12)


def _paths(node, prefix=()):
    """Every (container path) location in a JSON tree: a list of key tuples."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc, data):
    """One field replaced, deleted, or a new key added, somewhere in a copy of `doc`."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = data.draw(st.sampled_from(_paths(doc)), label="path")
        op = data.draw(st.sampled_from(["replace", "delete", "add"]), label="op")
        if not where:
            if op == "replace":
                doc = data.draw(JSON_VALUE, label="root")
            continue
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        if op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=6), label="key")] = data.draw(JSON_VALUE, label="value")
        else:
            parent[last] = data.draw(JSON_VALUE, label="value")
    return doc


def _bytes_mutation(raw: bytes, data) -> bytes:
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "splice"]), label="byte op")
    if not raw:
        return data.draw(st.binary(max_size=64))
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    if op == "flip":
        return raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
    if op == "truncate":
        return raw[:pos]
    if op == "insert":
        return raw[:pos] + data.draw(st.binary(min_size=1, max_size=16)) + raw[pos:]
    end = data.draw(st.integers(pos, len(raw)), label="end")
    return raw[:pos] + raw[end:] + raw[pos:end]


def _expect_value_error_or_result(read, path):
    try:
        read(path)
    except ValueError as exc:
        assert str(Path(path).name) in str(exc) or str(Path(path).parent) in str(exc), exc
    except FileNotFoundError as exc:  # a COLMAP folder missing one of its files
        assert str(path) in str(exc), exc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _fresh(workdir: Path, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    return folder / name


# --- JSON formats: field mutations ------------------------------------------------------------
def _json_docs():
    rig = tiny_rig()
    return {
        "rig.json": (rig_to_dict(rig), read_rig),
        "camera_params.json": (nersemble.rig_to_nersemble(rig.__class__({c.id: c.undistorted() for c in rig})),
                               nersemble.read_nersemble),
        "transforms.json": (nerfstudio.rig_to_transforms(rig), nerfstudio.read_nerfstudio),
    }


@pytest.mark.parametrize("name", ["rig.json", "camera_params.json", "transforms.json"])
@FUZZ
@given(data=st.data())
def test_json_rig_readers_survive_field_mutations(name, data, workdir):
    """Old: TypeError/OverflowError/ZeroDivisionError tracebacks, booleans read as focal lengths."""
    doc, read = _json_docs()[name]
    path = _fresh(workdir, name)
    text = json.dumps(_mutate(doc, data))
    path.write_text(text)
    with _no_warning_check():
        _expect_value_error_or_result(read, path)


class _no_warning_check:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@pytest.mark.parametrize("name", ["rig.json", "camera_params.json", "transforms.json"])
@FEW
@given(data=st.data())
def test_json_rig_readers_survive_byte_mutations(name, data, workdir):
    doc, read = _json_docs()[name]
    path = _fresh(workdir, name)
    path.write_bytes(_bytes_mutation(json.dumps(doc, indent=1).encode(), data))
    with _no_warning_check():
        _expect_value_error_or_result(read, path)


def test_read_json_refuses_booleans_where_numbers_belong(workdir):
    doc = rig_to_dict(tiny_rig())
    doc["cameras"][0]["distortion"] = [True, 0, 0, 0, 0]
    path = _fresh(workdir, "rig.json")
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"cameras\[0\] \(cam00\)\.distortion.*bool"):
        read_rig(path)


# --- session.json -----------------------------------------------------------------------------
def _session_doc() -> dict:
    return {"schema_version": 1, "name": "s", "fps": 30.0, "frame_count": 2, "cameras": ["cam00", "cam01"],
            "frames": [{"index": i, "timestamp": i / 30.0,
                        "images": {c: f"images/{c}/{i:06d}.png" for c in ("cam00", "cam01")},
                        "masks": {c: f"masks/{c}/{i:06d}.png" for c in ("cam00", "cam01")}} for i in range(2)],
            "rig": "rig.json", "calibration": {"cam00": ["calibration/cam00/000.png"]}, "extra": {"k": [1, 2]}}


@FUZZ
@given(data=st.data())
def test_session_reader_survives_field_mutations(data, workdir):
    from headcap.capture.session import read_session

    path = _fresh(workdir, "session.json")
    path.write_text(json.dumps(_mutate(_session_doc(), data)))
    _expect_value_error_or_result(read_session, path)


def test_session_fixture_is_valid(workdir):
    from headcap.capture.session import read_session

    path = _fresh(workdir, "session.json")
    path.write_text(json.dumps(_session_doc()))
    assert read_session(path).frame_count == 2


# --- COLMAP -----------------------------------------------------------------------------------
def _colmap_folder(workdir: Path, binary: bool) -> Path:
    folder = _fresh(workdir, "model")
    (colmap.write_colmap_binary if binary else colmap.write_colmap_text)(tiny_rig(), folder)
    return folder


@FUZZ
@given(data=st.data())
def test_colmap_text_survives_token_mutations(data, workdir):
    folder = _colmap_folder(workdir, binary=False)
    name = data.draw(st.sampled_from(["cameras.txt", "images.txt"]), label="file")
    lines = (folder / name).read_text().splitlines()
    data_lines = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    i = data.draw(st.sampled_from(data_lines), label="line")
    tokens = lines[i].split()
    j = data.draw(st.integers(0, len(tokens) - 1), label="token")
    tokens[j] = data.draw(st.sampled_from(["-1", "0", "nan", "inf", "1e999", "99999999999999999999", "x",
                                           "2147483648", "-0", "1.5", "SIMPLE_RADIAL", "OPENCV_FISHEYE",
                                           "FOV", "1" * 5000]) | st.text(min_size=1, max_size=6).filter(
        lambda s: not any(ch.isspace() for ch in s)), label="value")
    if data.draw(st.booleans(), label="drop a token"):
        tokens.pop(data.draw(st.integers(0, len(tokens) - 1)))
    lines[i] = " ".join(tokens)
    (folder / name).write_text("\n".join(lines) + "\n")
    _expect_value_error_or_result(colmap.read_colmap, folder)


@FUZZ
@given(data=st.data())
def test_colmap_binary_survives_byte_mutations(data, workdir):
    folder = _colmap_folder(workdir, binary=True)
    name = data.draw(st.sampled_from(["cameras.bin", "images.bin"]), label="file")
    (folder / name).write_bytes(_bytes_mutation((folder / name).read_bytes(), data))
    _expect_value_error_or_result(colmap.read_colmap, folder)


def test_colmap_binary_write_refuses_what_it_cannot_pack(tmp_path):
    """Old: struct.error traceback (a field beyond its binary width)."""
    from headcap.calib.formats._common import ExportError

    with pytest.raises(ExportError, match="cam00"):
        colmap._pack(tmp_path, "cam00", "WIDTH/HEIGHT/PARAMS", "<iiQQ", 1, 1, 2**64, 1)


# --- OpenCV YAML / XML ------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_opencv_yaml_survives_text_mutations(data, workdir):
    suffix = data.draw(st.sampled_from([".yaml", ".xml"]), label="suffix")
    text = opencv_yaml.rig_to_opencv_text(tiny_rig(), f"rig{suffix}")
    op = data.draw(st.sampled_from(["bytes", "nest", "value"]), label="op")
    if op == "bytes":
        raw = _bytes_mutation(text.encode(), data)
    elif op == "nest":
        depth = data.draw(st.sampled_from([10, 70, 500, 5000, 200_000]), label="depth")
        opener, closer = data.draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("<a>", "</a>")]), label="brackets")
        pos = data.draw(st.integers(0, len(text)), label="pos")
        raw = (text[:pos] + opener * depth + closer * depth + text[pos:]).encode()
    else:
        pos = data.draw(st.integers(0, len(text) - 1), label="pos")
        raw = (text[:pos] + data.draw(st.sampled_from(["1e999", "-1", "true", ".nan", "99999999999", "\"\\n\""]))
               + text[pos + 1:]).encode()
    path = _fresh(workdir, f"rig{suffix}")
    path.write_bytes(raw)
    _expect_value_error_or_result(opencv_yaml.read_opencv_yaml, path)


def test_nesting_depth_of_real_files_is_small():
    for suffix in (".yaml", ".xml"):
        assert opencv_yaml.nesting_depth(opencv_yaml.rig_to_opencv_text(tiny_rig(), f"rig{suffix}")) < 16


# --- npz --------------------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_npz_reader_survives_byte_mutations(data, workdir):
    buffer = io.BytesIO()
    compressed = data.draw(st.booleans(), label="compressed")
    arrays = {"vertices": np.arange(30.0).reshape(10, 3), "faces": np.arange(9, dtype=np.int32).reshape(3, 3)}
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    path = _fresh(workdir, "model.npz")
    path.write_bytes(_bytes_mutation(buffer.getvalue(), data))
    _expect_value_error_or_result(read_npz, path)


# --- options ------------------------------------------------------------------------------------
COUNT = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([0, 1, 2, 3, -1, 10**6, 2**31, 2**63])


@FUZZ
@given(cameras=COUNT, frames=COUNT, resolution=COUNT, calib_frames=COUNT, iterations=COUNT, held_out=COUNT,
       seed=COUNT)
def test_demo_options_are_validated(cameras, frames, resolution, calib_frames, iterations, held_out, seed):
    """Old: `--iterations -5`, `--held-out` >= `--cameras`, negative seeds were accepted."""
    from headcap.demo import DemoConfig

    try:
        config = DemoConfig(cameras=cameras, frames=frames, resolution=resolution, calib_frames=calib_frames,
                            iterations=iterations, held_out=held_out, seed=seed)
    except ValueError as exc:
        assert str(exc).startswith("demo: --"), exc
        return
    assert 1 <= config.held_out < config.cameras <= 256 and config.iterations >= 1 and 0 <= config.seed < 2**63


@FUZZ
@given(cameras=COUNT, frames=COUNT, threads=COUNT, calib_frames=COUNT, seed=COUNT)
def test_synth_options_are_validated(cameras, frames, threads, calib_frames, seed):
    """Old: `--threads 1000000` reached torch.set_num_threads (a segfault)."""
    from headcap.core.limits import max_threads
    from headcap.studio.synthesize import StudioConfig

    try:
        config = StudioConfig(cameras=cameras, frames=frames, threads=threads, calib_frames=calib_frames, seed=seed)
    except ValueError as exc:
        assert str(exc).startswith("synth: field"), exc
        return
    assert 1 <= config.threads <= max_threads() and config.cameras <= 1024


@FUZZ
@given(workers=COUNT, start=COUNT, stride=COUNT, end=st.none() | COUNT,
       resize=st.none() | st.sampled_from(["512", "0", "-4", "99999999", "640x480", "100000x100000", "x", "1x"]))
def test_ingest_options_are_validated(workers, start, stride, end, resize):
    from argparse import Namespace

    from headcap.commands.ingest import check_options

    args = Namespace(workers=workers, start=start, stride=stride, end=end, resize=resize)
    try:
        check_options(args)
    except ValueError as exc:
        assert str(exc).startswith("--"), exc
        return
    assert 0 <= workers <= 1024 and start >= 0 and stride >= 1 and (end is None or end > start)


def test_opencv_matrix_with_a_missing_cols_key_is_named(workdir):
    """Found by this fuzzer: FileNode.mat() on `rows: 4` without `cols` wrote past its buffer
    (heap corruption, 'double free or corruption' later); the matrix is now read field by field."""
    text = opencv_yaml.rig_to_opencv_text(tiny_rig(), "rig.yaml").replace("cols: 4", "c-1ls: 4", 1)
    path = _fresh(workdir, "rig.yaml")
    path.write_text(text)
    with pytest.raises(ValueError, match=r"cam_from_world\.cols"):
        opencv_yaml.read_opencv_yaml(path)


def test_opencv_matrix_data_must_be_numbers(workdir):
    text = opencv_yaml.rig_to_opencv_text(tiny_rig(), "rig.yaml").replace("data: [ 80.,", "data: [ abc,", 1)
    path = _fresh(workdir, "rig.yaml")
    path.write_text(text)
    with pytest.raises(ValueError, match=r"camera_matrix\.data\[0\].*abc"):
        opencv_yaml.read_opencv_yaml(path)


# --- glTF binary ------------------------------------------------------------------------------
def _glb(workdir, mutate=None) -> Path:
    import struct as _struct

    from headcap.avatar.export.glb import GltfBuilder, read_glb, write_glb_bytes

    builder = GltfBuilder()
    builder.accessor(np.arange(12, dtype=np.float32).reshape(4, 3))
    path = _fresh(workdir, "mesh.glb")
    write_glb_bytes(path, builder.glb())
    if mutate is not None:
        doc, binary = read_glb(path)
        mutate(doc)
        text = json.dumps(doc).encode()
        text += b" " * (-len(text) % 4)
        body = _struct.pack("<II", len(text), 0x4E4F534A) + text + _struct.pack("<II", len(binary), 0x004E4942) + binary
        path.write_bytes(_struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)
    return path


@pytest.mark.parametrize("field,value", [("count", -5), ("count", 0), ("count", True), ("count", 10**9),
                                         ("byteOffset", -8), ("byteOffset", 10**6)])
def test_glb_accessor_fields_are_checked(workdir, field, value):
    """Old: a negative glTF accessor count was accepted (numpy read a negative-length buffer)."""
    from headcap.avatar.export.glb import read_accessor, read_glb

    doc, binary = read_glb(_glb(workdir, lambda d: d["accessors"][0].__setitem__(field, value)))
    with pytest.raises(ValueError, match=r"accessors\[0\]"):
        read_accessor(doc, binary, 0)


def test_glb_round_trip_still_reads(workdir):
    from headcap.avatar.export.glb import read_accessor, read_glb

    doc, binary = read_glb(_glb(workdir))
    assert read_accessor(doc, binary, 0).shape == (4, 3)


@FEW
@given(data=st.data())
def test_glb_reader_survives_byte_mutations(data, workdir):
    from headcap.avatar.export.glb import read_accessor, read_glb

    path = _glb(workdir)
    path.write_bytes(_bytes_mutation(path.read_bytes(), data))
    try:
        doc, binary = read_glb(path)
        for i in range(len(doc.get("accessors", [])) if isinstance(doc, dict) else 0):
            read_accessor(doc, binary, i)
    except ValueError:
        pass


def test_nerfstudio_camera_model_of_another_json_type_is_named(workdir):
    """Found by this fuzzer: `"camera_model": []` raised TypeError (unhashable list)."""
    doc = nerfstudio.rig_to_transforms(tiny_rig())
    doc["camera_model"] = []
    path = _fresh(workdir, "transforms.json")
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="camera_model"):
        nerfstudio.read_nerfstudio(path)


def test_npz_member_flagged_encrypted_is_named(workdir):
    """Found by this fuzzer: one flipped flag bit made zipfile raise RuntimeError ("password required")."""
    buffer = io.BytesIO()
    np.savez(buffer, vertices=np.zeros((4, 3)))
    raw = bytearray(buffer.getvalue())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(signature)
        raw[pos + flag_at] |= 0x01
    path = _fresh(workdir, "model.npz")
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model.npz"):
        read_npz(path)
