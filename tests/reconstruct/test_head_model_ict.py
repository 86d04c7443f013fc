"""ICT-FaceKit loader against the upstream OBJ files in ../shared/data/ict_facekit."""
import json
import math

import numpy as np
import pytest
import torch

from headcap.reconstruct.head_loaders._obj import read_obj_vertices
from headcap.reconstruct.head_loaders import load_head_model, load_ict_facekit


@pytest.fixture(scope="module")
def ict(test_data):
    return load_ict_facekit(test_data / "ict_facekit" / "ict_facekit_light_model.npz", dtype=torch.float64)


@pytest.mark.parametrize("kind, name", [("expression", "jawOpen"), ("identity", "identity000")])
def test_rebuild_matches_upstream_obj_to_1e5_cm(ict, test_data, kind, name):
    if kind == "expression":
        coeffs = torch.zeros(1, ict.num_expression, dtype=torch.float64)
        coeffs[0, ict.expression_index(name)] = 1.0
        out = ict(expression=coeffs)
    else:
        coeffs = torch.zeros(1, ict.num_identity, dtype=torch.float64)
        coeffs[0, int(name[-3:])] = 1.0
        out = ict(identity=coeffs)
    reference_cm = read_obj_vertices(test_data / "ict_facekit" / "original" / f"{name}.obj")
    error_cm = np.abs(out.vertices[0].numpy() * 100.0 - reference_cm).max()
    assert error_cm < 1e-5, f"{name}: max error {error_cm:.2e} cm"


def test_neutral_and_topology_match_obj(ict, test_data):
    folder = test_data / "ict_facekit" / "original"
    neutral_cm = read_obj_vertices(folder / "generic_neutral_mesh.obj")
    assert np.abs(ict.template.numpy() * 100.0 - neutral_cm).max() < 1e-5
    # 26,384 polygons (quads + 548 triangles) -> 2 * 26384 - 548 triangles
    assert ict.faces.shape == (2 * 26384 - 548, 3) and ict.uvs.shape == (28911, 2)
    landmarks = json.loads((folder / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    assert ict.landmark_ids.tolist() == landmarks and ict.landmark_convention == "ibug68"


def test_folder_loader_agrees_with_npz(ict, test_data):
    folder_model = load_head_model(f"ict:{test_data / 'ict_facekit' / 'original'}", dtype=torch.float64)
    assert folder_model.expression_names == ["jawOpen"] and folder_model.num_identity == 1
    assert torch.equal(folder_model.faces, ict.faces) and torch.equal(folder_model.face_uvs, ict.face_uvs)
    assert (folder_model.uvs - ict.uvs).abs().max() < 1e-6
    assert (folder_model.template - ict.template).abs().max() < 2e-8  # the npz stores float32 cm
    jaw = ict.expression_basis[ict.expression_index("jawOpen")]
    assert (folder_model.expression_basis[0] - jaw).abs().max() < 1e-9
    assert (folder_model.identity_basis[0] - ict.identity_basis[0]).abs().max() < 1e-9


def test_head_frame_convention_and_arkit_names(ict):
    lm = ict.template[ict.landmark_ids]
    # iBUG 36 = outer corner of the subject's right eye, 45 = of the left eye, 30 = nose tip
    assert lm[36, 0] < -0.03 and lm[45, 0] > 0.03
    assert lm[30, 2] > lm[36, 2] + 0.02 and lm[19, 1] > lm[8, 1] + 0.08  # nose forward, brow above chin
    blink = ict.expression_basis[ict.expression_index("eyeBlinkLeft")].norm(dim=-1)
    assert ict.template[blink > 1e-3, 0].min() > 0  # "Left" is the subject's left (+x)
    for name in ("jawOpen", "mouthSmileLeft", "browInnerUpRight", "cheekPuffLeft", "pupilDilateLeft"):
        ict.expression_index(name)
    extent = ict.template.max(0).values - ict.template.min(0).values
    assert 0.2 < float(extent[0]) < 0.3  # ~25 cm wide incl. ears: metres, not centimetres


def test_eye_joint_rotates_the_eyeball_rigidly_about_its_centre(ict):
    rot = torch.zeros(1, 3, 3, dtype=torch.float64)
    rot[0, ict.joint_names.index("eye_left"), 1] = math.radians(20)
    out = ict(joint_rotations=rot)
    moved = (out.vertices[0] - ict.template).norm(dim=-1) > 1e-12
    assert torch.equal(moved, ict.region_masks["eyeball_left"])
    centre = ict.rest_joints[1]
    before = (ict.template[moved] - centre).norm(dim=-1)
    after = (out.vertices[0, moved] - centre).norm(dim=-1)
    assert (before - after).abs().max() < 1e-12
    # the sclera sphere fit: points lie within 1.3 mm of a 15.8 mm sphere about the joint
    sclera = ict.template[21451:22221]
    radii = (sclera - centre).norm(dim=-1)
    assert abs(float(radii.mean()) - 0.0158) < 1e-3 and float((radii - radii.mean()).abs().max()) < 1.3e-3


def test_eye_joints_follow_identity(ict):
    gen = torch.Generator().manual_seed(0)
    ident = torch.randn(1, ict.num_identity, generator=gen, dtype=torch.float64)
    out = ict(identity=ident)
    for name, (lo, hi) in (("eye_left", (21451, 22221)), ("eye_right", (23021, 23791))):
        sclera = out.vertices[0, lo:hi].numpy()
        design = np.concatenate([2 * sclera, np.ones((len(sclera), 1))], axis=1)
        centre = np.linalg.lstsq(design, (sclera**2).sum(1), rcond=None)[0][:3]
        error = np.abs(out.joints[0, ict.joint_names.index(name)].numpy() - centre).max()
        assert error < 2e-4, f"{name}: joint {error * 1000:.3f} mm from the shaped sclera centre"


def test_missing_files_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="generic_neutral_mesh"):
        load_ict_facekit(tmp_path)
    bad = tmp_path / "x.npz"
    np.savez(bad, neutral_vertices=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="missing fields"):
        load_ict_facekit(bad)
