"""Head mesh .glb export read back: morph targets, skin, animation, axes and units."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headcap.avatar.export.glb import read_accessor, read_glb
from headcap.avatar.export.gltf import axis_angle_to_quat, export_head_glb, vertex_layout
from headcap.avatar.export.gltf_eval import evaluate_mesh_nodes, quat_to_matrix, target_names
from headcap.avatar.export.sequence import read_sequence
from headcap.reconstruct.head_loaders import load_head_model, load_ict_facekit

from export_fixtures import model_vertices, random_sequence

ARKIT_52 = {
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
}


@pytest.fixture(scope="module")
def default_head():
    return load_head_model("default")


@pytest.fixture(scope="module")
def exported(default_head, tmp_path_factory):
    seq = random_sequence(default_head, frames=5)
    path = tmp_path_factory.mktemp("glb") / "head.glb"
    info = export_head_glb(default_head, path, sequence=seq)
    doc, binary = read_glb(path)
    return seq, info, doc, binary


def test_targets_carry_the_52_arkit_names(exported):
    _, info, doc, _ = exported
    assert set(target_names(doc)) == ARKIT_52
    assert info.morph_targets == target_names(doc)
    assert info.joints == ["root", "neck", "head", "jaw", "eye_left", "eye_right"]
    assert [n["name"] for n in doc["nodes"]][2:] == info.joints


def test_morph_targets_reproduce_every_expression_to_1e4_m(exported, default_head):
    seq, _, doc, binary = exported
    vmap = vertex_layout(default_head).vertex_map
    names = target_names(doc)
    # the static pose: the file's own node weights and TRS, with one target at 1 and the skin at rest
    doc = {**doc, "nodes": [dict(n) for n in doc["nodes"]]}
    for node in doc["nodes"][1:]:
        node.pop("rotation", None)
    doc["nodes"][1].pop("translation", None)
    worst = 0.0
    for e, name in enumerate(names):
        doc["nodes"][0]["weights"] = [1.0 if k == e else 0.0 for k in range(len(names))]
        got = evaluate_mesh_nodes(doc, binary)[0]
        one_hot = torch.zeros(1, default_head.num_expression, dtype=torch.float64)
        one_hot[0, default_head.expression_index(name)] = 1.0
        want = model_vertices(default_head, seq, None, one_hot)[vmap]
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4, worst


def test_animation_reproduces_the_sequence_vertices(exported, default_head):
    seq, info, doc, binary = exported
    vmap = vertex_layout(default_head).vertex_map
    assert info.frames == 5 and doc["animations"][0]["name"] == "sequence"
    times = read_accessor(doc, binary, doc["animations"][0]["samplers"][0]["input"])
    np.testing.assert_allclose(times, seq.timestamps - seq.timestamps[0], atol=1e-6)
    for k in range(seq.num_frames):
        got = evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0]
        want = model_vertices(default_head, seq, k)[vmap]
        assert np.abs(got - want).max() < 1e-5, (k, np.abs(got - want).max())


def test_gltf_axes_and_units_are_y_up_metres(exported):
    _, _, doc, binary = exported
    rest = read_accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    joints = {doc["nodes"][j]["name"]: j for j in doc["skins"][0]["joints"]}
    eye_left = np.array(doc["nodes"][joints["eye_left"]]["translation"])  # children of "head"
    eye_right = np.array(doc["nodes"][joints["eye_right"]]["translation"])
    neck = np.array(doc["nodes"][joints["neck"]]["translation"])  # child of "root"
    height = rest[:, 1].max() - rest[:, 1].min()
    assert 0.15 < height < 0.6  # a head and neck in metres, not centimetres or decimetres
    nose = rest[rest[:, 2].argmax()]  # +Z is the face's front: the foremost vertex is the nose tip
    assert abs(nose[0]) < 0.01 and 0.02 < nose[2] < 0.1
    assert eye_left[0] > 0.02 and eye_right[0] < -0.02  # +X is the subject's left
    assert neck[1] > 0.1  # +Y up: the neck joint sits above the root joint


def test_uv_split_keeps_the_mesh_and_flips_v(default_head):
    layout = vertex_layout(default_head)
    np.testing.assert_array_equal(layout.vertex_map[layout.indices], default_head.faces.numpy())
    uvs = default_head.uvs.numpy()[default_head.face_uvs.numpy()]
    np.testing.assert_allclose(layout.uvs[layout.indices][..., 1], 1.0 - uvs[..., 1], atol=1e-6)


def test_quaternions_match_axis_angle():
    rng = np.random.default_rng(1)
    vecs = np.concatenate([rng.normal(size=(20, 3)), np.zeros((1, 3)), [[1e-10, 0, 0]]])
    np.testing.assert_allclose(quat_to_matrix(axis_angle_to_quat(vecs)), Rotation.from_rotvec(vecs).as_matrix(),
                               atol=1e-12)


def test_ict_facekit_export_reproduces_expressions_and_sequence(test_data, tmp_path):
    ict = load_ict_facekit(test_data / "ict_facekit" / "ict_facekit_light_model.npz")
    seq = random_sequence(ict, frames=2, seed=3)
    export_head_glb(ict, tmp_path / "ict.glb", sequence=seq)
    doc, binary = read_glb(tmp_path / "ict.glb")
    assert target_names(doc) == list(ict.expression_names)
    vmap = vertex_layout(ict).vertex_map
    basis = ict.expression_basis.double().numpy()
    targets = doc["meshes"][0]["primitives"][0]["targets"]
    worst = max(float(np.abs(read_accessor(doc, binary, t["POSITION"]) - basis[e][vmap]).max())
                for e, t in enumerate(targets))
    assert worst < 1e-6, worst
    for k in range(2):
        got = evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0]
        assert np.abs(got - model_vertices(ict, seq, k)[vmap]).max() < 1e-5


def test_sequence_file_round_trip_and_errors(tmp_path, default_head):
    seq = random_sequence(default_head, frames=3)
    np.savez(tmp_path / "seq.npz", identity=seq.identity, expression=seq.expression,
             expression_names=np.array(seq.expression_names), joint_rotations=seq.joint_rotations,
             joint_names=np.array(seq.joint_names), world_from_head=seq.world_from_head)
    back = read_sequence(tmp_path / "seq.npz")
    np.testing.assert_array_equal(back.expression, seq.expression)
    np.testing.assert_allclose(back.timestamps, np.arange(3) / 25.0)
    np.savez(tmp_path / "bad.npz", expression=seq.expression, expression_names=np.array(seq.expression_names))
    with pytest.raises(ValueError, match="bad.npz: missing field"):
        read_sequence(tmp_path / "bad.npz")
    skewed = random_sequence(default_head, frames=2)
    skewed.world_from_head[0, :3, :3] *= 1.1
    with pytest.raises(ValueError, match="not rigid"):
        export_head_glb(default_head, tmp_path / "x.glb", sequence=skewed)
    assert not (tmp_path / "x.glb").exists()


def test_flame_format_pose_correctives_become_exact_morph_targets(tmp_path):
    import importlib.util

    from headcap.reconstruct.head_loaders import load_flame

    spec = importlib.util.spec_from_file_location(
        "flame_fixture", Path(__file__).resolve().parents[1] / "reconstruct" / "test_head_model_flame.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    arrays = fixture.flame_arrays(seed=1)
    np.savez(tmp_path / "flame.npz", **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    flame = load_flame(tmp_path / "flame.npz")
    seq = random_sequence(flame, frames=3, seed=2)
    # FLAME regresses joints from the expressed mesh; glTF joints are fixed per file, so this check
    # holds the expression at zero (identity, every joint rotation and the head pose still move)
    seq.expression[:] = 0.0
    export_head_glb(flame, tmp_path / "flame.glb", sequence=seq)
    doc, binary = read_glb(tmp_path / "flame.glb")
    names = target_names(doc)
    assert names[:100] == [f"exp{i:03d}" for i in range(100)] or len(names) == flame.num_expression + 36
    assert names[-36:] == [f"pose_corrective_{p:03d}" for p in range(36)]
    for k in range(3):
        got = evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0]
        assert np.abs(got - model_vertices(flame, seq, k)).max() < 1e-6
