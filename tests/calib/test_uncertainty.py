"""Calibration uncertainty (calib/uncertainty.py), priors and warnings (calib/observability.py):
the reported 1-sigma bounds cover the true errors at the rate a 1-sigma bound should, no
calibration with a focal error beyond 1% goes without a warning, and the rig file carries the
uncertainties. The big sweep (128-1600 px, 4-16 cameras, 6-40 poses) is benchmarks/bm_calibrate.py
--coverage."""
from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_calib import coverage_case, ring_rig, standardised_errors

from headcap.calib.boards import BoardSpec
from headcap.calib.bundle import BundleProblem, Observation, schur_reduce
from headcap.calib.calibrate import CalibrationConfig, CalibrationError
from headcap.calib.rig_compare import compare_rigs
from headcap.calib.rig_io import read_rig, read_rig_uncertainty, rig_uncertainty_from_dict, write_rig
from headcap.calib.synthetic_boards import board_poses_facing, projected_detections


def _problem(model: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    spec = BoardSpec.parse("charuco:8x6:0.04:0.03:DICT_5X5_100")
    rig = ring_rig(3, rng, width=640, height=480, radius=0.8, focal=700)
    dets = projected_detections(rig, spec, board_poses_facing(rig, 5, spec, rng, tilt_deg=30), rng)
    obs = [Observation(c, d.frame, d.ids, d.corners, d.object_points) for c in dets for d in dets[c]]
    prob = BundleProblem(list(dets), sorted({o.frame for o in obs}), obs, model)
    x = rng.normal(0, 0.3, prob.n_params)
    intr, cams, boards = prob.unpack(x)
    intr[:, :4] = [700, 710, 320, 240]
    intr[:, 4:] *= 0.1
    cams[:, 3:] = [0, 0, 1.0]
    return prob, prob.pack(intr, cams, boards), rng


@pytest.mark.parametrize("model", ["opencv", "none"])
def test_analytic_jacobian_matches_central_differences(model):
    prob, x, _ = _problem(model)
    keep = np.ones(len(prob.pix), bool)
    keep[::3] = False
    r, J = prob.jacobian_blocks(x, keep)
    J_num = prob._numeric_blocks(x, keep)
    assert np.abs(J - J_num).max() < 1e-7 * np.abs(J_num).max()
    assert np.abs(r - prob.residuals(x, keep)).max() < 1e-9


def test_schur_complement_is_the_camera_block_of_the_inverse():
    rng = np.random.default_rng(1)
    n_cam, n_boards = 9, 4
    blocks = [(lambda m: m @ m.T + np.eye(6))(rng.normal(size=(6, 6))) for _ in range(n_boards)]
    V = np.zeros((6 * n_boards, 6 * n_boards))
    for i, blk in enumerate(blocks):
        V[6 * i:6 * i + 6, 6 * i:6 * i + 6] = blk
    W = rng.normal(size=(n_cam, 6 * n_boards))
    spd = rng.normal(size=(n_cam, n_cam))
    A = np.block([[W @ np.linalg.inv(V) @ W.T + spd @ spd.T + np.eye(n_cam), W], [W.T, V]])
    S, _, _ = schur_reduce(A, n_cam)
    assert np.allclose(np.linalg.inv(S), np.linalg.inv(A)[:n_cam, :n_cam], rtol=1e-8, atol=1e-12)


def test_one_sigma_covers_the_true_error_and_no_bad_rig_is_silent():
    """20 seeds of a 4-camera, 8-pose, 640 px rig (projected corners, 0.3 px noise): about 68% of
    the standardised errors within 1 (a band, 55-82%), about 95% within 2; every camera whose
    focal length is off by more than 1% is flagged for its focal uncertainty."""
    z = {"intrinsics": [], "centre": []}
    bad_focal = flagged = 0
    for seed in range(20):
        try:
            res, truth = coverage_case(seed, 4, 8, 640)
        except CalibrationError:  # a seed whose poses split the camera graph
            continue
        e = standardised_errors(res, truth)
        for k in z:
            z[k].append(e[k])
        for row in compare_rigs(res.rig, truth).rows():
            if row["focal_error_pct"] > 1.0:
                bad_focal += 1
                flagged += "focal" in res.uncertain.get(row["camera"], [])
    for k, v in z.items():
        a = np.abs(np.concatenate(v))
        assert 0.55 < np.mean(a < 1) < 0.82, (k, np.mean(a < 1), len(a))
        assert np.mean(a < 2) > 0.88, (k, np.mean(a < 2))
    assert flagged == bad_focal


def test_priors_auto_never_always():
    res, truth = coverage_case(3, 3, 6, 320, config=CalibrationConfig(priors="never"))
    assert res.priors == [] and res.notes == []
    # the data cannot determine k3 of a 3-camera 6-pose rig: auto regularises it and says so
    auto, _ = coverage_case(3, 3, 6, 320)
    assert any(p["name"] == "k3" for p in auto.priors) and auto.notes
    assert all(auto.uncertainty[c]["distortion_px"] < res.uncertainty[c]["distortion_px"] for c in auto.rig.ids)
    always, _ = coverage_case(3, 3, 6, 320, config=CalibrationConfig(priors="always"))
    assert len(always.priors) == 3 * 7  # k2 p1 p2 k3 cx cy fx=fy per camera
    # with a big, well-covered rig the principal points are determined: not regularised
    big, _ = coverage_case(1, 4, 16, 1280)
    assert not [p for p in big.priors if p["name"] in ("cx", "cy")]


def test_warnings_name_the_camera_the_number_and_the_poses_to_add():
    res, _ = coverage_case(2, 3, 6, 320)
    assert res.uncertain
    cam, what = next(iter(res.uncertain.items()))
    line = next(w for w in res.warnings if w.startswith(f"camera {cam!r}:") and "(1 sigma)" in w)
    if "focal" in what:
        assert "focal length to" in line and "tilted 30-45 degrees" in line
    if "centre" in what:
        assert "sees together with" in line
    strict = CalibrationConfig(warn_focal_pct=100, warn_principal_point_px=1e3, warn_distortion_px=1e3,
                               warn_centre_mm=1e3, warn_rotation_deg=1e3)
    loose, _ = coverage_case(2, 3, 6, 320, config=strict)
    assert loose.uncertain == {} and not any("(1 sigma)" in w for w in loose.warnings)


def test_rig_json_carries_uncertainty_and_readers_tolerate_it(tmp_path):
    res, _ = coverage_case(0, 3, 6, 320)
    path = tmp_path / "rig.json"
    write_rig(res.rig, path, res.uncertainty)
    back = read_rig(path)
    assert back.ids == res.rig.ids
    assert read_rig_uncertainty(path) == json.loads(json.dumps(res.uncertainty))
    write_rig(res.rig, tmp_path / "plain.json")
    assert read_rig_uncertainty(tmp_path / "plain.json") == {}
    data = json.loads(path.read_text())
    data["cameras"][0]["uncertainty"] = "garbage"
    data["cameras"][1]["uncertainty"] = {"focal_pct": 0.2, "bad": {"nested": 1}, "flag": True}
    assert rig_uncertainty_from_dict(data) == {res.rig.ids[1]: {"focal_pct": 0.2},
                                               res.rig.ids[2]: res.uncertainty[res.rig.ids[2]]}
