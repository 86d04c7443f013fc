"""Learned registration (issue #16): the network on any camera count, the shipped weights against
ground truth on a held-out synthetic session (through `headcap register --method learned`), and
bad weights."""
import json

import numpy as np
import pytest
import torch

from headcap.cli import main
from headcap.core.fileio import read_npz
from headcap.reconstruct.head_loaders import load_head_model
from headcap.reconstruct.learned_registration.data import SceneConfig, sample_scene
from headcap.reconstruct.learned_registration.model import (DEFAULT_WEIGHTS, LearnedRegNet, NetConfig, load_weights,
                                                            locate_head, predict_vertices, prepare_views,
                                                            rotation_centre)
from headcap.reconstruct.learned_registration.train import surface_mask

#: the shipped weights on the held-out session below measured 5.9 mm median (frames 5.7 and 6.2 mm)
MAX_MEDIAN_MM = 7.0
#: ... against 20.8 mm for the no-image baseline (mean head upright at the volume centre + the mean
#: offset learnt: what the network outputs before training), 3.5x: required at least 2.5x
MIN_GAIN_OVER_BASELINE = 2.5


@pytest.fixture(scope="module")
def model():
    return load_head_model("default")


def test_any_camera_count(model):
    """1, 2 and 5 cameras of a random rig (with or without masks): finite vertices of the template."""
    torch.manual_seed(0)
    c = NetConfig(num_identity=model.num_identity, num_expression=model.num_expression, num_joints=model.num_joints)
    net = LearnedRegNet(c).eval()
    centre_head = torch.from_numpy(rotation_centre(model))
    scene = sample_scene(model, np.random.default_rng(3), SceneConfig(cameras=(5, 5), resolution=(96,)))
    for k, use_masks in ((1, True), (2, False), (5, True)):
        cams, imgs = scene["cameras"][:k], scene["images"][:k]
        centre = locate_head(cams, scene["masks"][:k] if use_masks else None)
        assert np.all(np.isfinite(centre))
        views = prepare_views(imgs, cams, c, centre)
        assert views.crops.shape[0] == k and views.valid.any(dim=1).all()
        with torch.no_grad():
            verts, params = predict_vertices(net, model, [views], centre_head)
        assert verts.shape == (1, model.num_vertices, 3) and torch.isfinite(verts).all()
    # mask-centroid triangulation places the head within a few cm of its rotation centre
    truth = scene["world_from_head"][:3, :3] @ centre_head.numpy() + scene["world_from_head"][:3, 3]
    assert np.linalg.norm(locate_head(scene["cameras"], scene["masks"]) - truth) < 0.06


def test_shipped_weights_on_held_out_session(tmp_path, model):
    """`headcap register --method learned` with the shipped weights on a session never seen in training
    (its own seed, 8 cameras): same files as the classic route, median error under the measured
    threshold and far below the no-image baseline (a test random or untrained weights fail)."""
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    session = tmp_path / "s"
    synthesize_session(StudioConfig(cameras=8, frames=2, resolution=160, calib_frames=0, seed=9001), session)
    assert main(["register", str(session), "--method", "learned", "--overlays", "0"]) == 0
    meshes = read_npz(session / "registration" / "meshes.npz")
    params = read_npz(session / "registration" / "params.npz")
    summary = json.loads((session / "registration" / "summary.json").read_text())
    gt = read_npz(session / "ground_truth" / "vertices.npz")["vertices"]
    assert meshes["vertices"].shape == gt.shape and meshes["faces"].shape[1] == 3
    assert meshes["confidence"].shape == gt.shape[:2] and params["world_from_head"].shape == (2, 4, 4)
    assert summary["method"] == "learned" and summary["frames"] == 2
    mask = surface_mask(model)
    err = np.linalg.norm(meshes["vertices"] - gt, axis=2)[:, mask] * 1e3
    median = float(np.median(err))
    assert abs(median - summary["error_mm_median"]) < 0.5

    # the no-image baseline on the same frames: zero output layer (mean head at the volume centre,
    # translated by the learnt mean offset)
    net, _, _ = load_weights()
    net.out.weight.data.zero_()
    bias = net.out.bias.data.clone()
    net.out.bias.data.zero_()
    net.out.bias.data[3:6] = bias[3:6]
    from headcap.reconstruct.learned_registration.infer import read_view_images
    from headcap.capture.session import read_session

    s = read_session(session)
    rig = s.load_rig()
    cams = [rig[c] for c in s.cameras]
    base = []
    for t in range(2):
        images, masks = read_view_images(s, t, list(s.cameras))
        views = prepare_views(images, cams, net.config, locate_head(cams, masks))
        with torch.no_grad():
            v, _ = predict_vertices(net, model, [views], torch.from_numpy(rotation_centre(model)))
        base.append(np.linalg.norm(v[0].double().numpy() - gt[t], axis=1)[mask] * 1e3)
    baseline = float(np.median(np.concatenate(base)))
    assert median < MAX_MEDIAN_MM, (median, baseline)
    assert median * MIN_GAIN_OVER_BASELINE < baseline, (median, baseline)


def test_bad_weights(tmp_path, capsys):
    with pytest.raises(ValueError, match="no learned-registration weights"):
        load_weights(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a learned-registration checkpoint"):
        load_weights(junk)
    assert DEFAULT_WEIGHTS.is_file()
    # the command: exit 2 with one line naming the file, before any work
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    session = tmp_path / "s"
    synthesize_session(StudioConfig(cameras=2, frames=1, resolution=32, calib_frames=0, seed=1), session)
    assert main(["register", str(session), "--method", "learned", "--weights", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "junk.safetensors" in err and "not a learned-registration checkpoint" in err
    assert not (session / "registration").exists()
