"""The Khronos glTF-Validator (npm gltf-validator, installed by .ci/run) on every kind of file
`headcap export` writes."""
import json
import struct

import numpy as np

from export_clients import validate
from headcap.avatar.export.glb import read_glb
from headcap.avatar.export.gltf import export_head_glb
from headcap.avatar.export.splats import Splats, write_splat_glb
from headcap.reconstruct.head_loaders import load_head_model, load_ict_facekit
from headcap.avatar.export.splat_rig import bind_splats
from export_fixtures import model_vertices, random_sequence


def evaluate_head(model, seq, frame):
    return model_vertices(model, seq, frame)

SPLAT_PREFIX = "KHR_gaussian_splatting:"


def _errors(report):
    return [m for m in report["issues"]["messages"] if m["severity"] == 0]


def _renamed_copy(path, out):
    """The same file with the extension's attribute semantics renamed to application-specific
    ones (leading underscore), which glTF 2.0 core allows, so the validator checks their accessors."""
    doc, binary = read_glb(path)
    for mesh in doc["meshes"]:
        for prim in mesh["primitives"]:
            prim["attributes"] = {("_" + k.replace(":", "_") if k.startswith(SPLAT_PREFIX) else k): v
                                  for k, v in prim["attributes"].items()}
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 4)
    out.write_bytes(struct.pack("<III", 0x46546C67, 2, 28 + len(text) + len(binary))
                    + struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942)
                    + binary)
    return out


def test_head_mesh_exports_have_no_errors_or_warnings(tmp_path, test_data):
    head = load_head_model("default")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    export_head_glb(head, tmp_path / "animated.glb", sequence=random_sequence(head, 6), texture=texture)
    export_head_glb(head, tmp_path / "static.glb")
    ict = load_ict_facekit(test_data / "ict_facekit" / "ict_facekit_light_model.npz")
    export_head_glb(ict, tmp_path / "ict.glb", sequence=random_sequence(ict, 2))
    reports = validate(tmp_path / "animated.glb", tmp_path / "static.glb", tmp_path / "ict.glb")
    for report in reports:
        issues = report["issues"]
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, (report["file"], issues["messages"][:5])


def test_splat_export_errors_are_only_the_extension_semantics_the_validator_does_not_know(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    for degree, name in ((0, "dc.glb"), (3, "sh3.glb")):
        k = (degree + 1) ** 2
        splats = Splats(rng.normal(size=(n, 3)) * 0.1, rng.normal(size=(n, 4)), rng.normal(size=(n, 3)) - 5,
                        rng.normal(size=n), rng.normal(size=(n, k, 3)) * 0.3)
        write_splat_glb(tmp_path / name, splats)
        _renamed_copy(tmp_path / name, tmp_path / ("renamed_" + name))
    # splats skinned and morphed with the head (bound to vertices of frame 1 of a sequence)
    head = load_head_model("default")
    seq = random_sequence(head, 3)
    verts = evaluate_head(head, seq, 1)
    splats = Splats(verts[rng.integers(0, len(verts), n)], rng.normal(size=(n, 4)), np.full((n, 3), -6.0),
                    rng.normal(size=n), rng.normal(size=(n, 4, 3)) * 0.3)
    export_head_glb(head, tmp_path / "animated.glb", sequence=seq, splats=bind_splats(head, splats, seq, 1))
    _renamed_copy(tmp_path / "animated.glb", tmp_path / "renamed_animated.glb")
    names = ("dc.glb", "sh3.glb", "animated.glb", "renamed_dc.glb", "renamed_sh3.glb", "renamed_animated.glb")
    reports = validate(*(tmp_path / f for f in names))
    for report in reports[:3]:
        # gltf-validator 2.0.0-dev.3.10 (the newest on npm) predates KHR_gaussian_splatting: it reports
        # the extension as unsupported (info) and each of its attribute semantics as an invalid name
        errors = _errors(report)
        assert errors, "the validator learnt KHR_gaussian_splatting: tighten this test to 0 errors"
        assert {e["code"] for e in errors} == {"MESH_PRIMITIVE_INVALID_ATTRIBUTE"}, errors[:3]
        assert all(e["pointer"].split("/attributes/")[1].startswith(SPLAT_PREFIX) for e in errors)
        assert report["issues"]["numWarnings"] == 0
    for report in reports[3:]:
        assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]["messages"][:5]
