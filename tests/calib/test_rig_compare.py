"""calib.rig_compare: known perturbations give known errors; the gauge (a rigid motion, or a
similarity with with_scale) of the estimated world does not change them."""
import math

import numpy as np
import pytest

from headcap.calib.camera import Camera, Rig, look_at
from headcap.calib.rig_compare import METRICS, align_rig, compare_rigs, rotation_angle_deg


def _rig(n=5) -> Rig:
    cams = []
    for i in range(n):
        az = math.radians(-60 + 120 * i / max(n - 1, 1))
        centre = [math.sin(az), 0.1 * (i % 2), -math.cos(az)]
        K = [[500.0 + 10 * i, 0, 320], [0, 505.0 + 10 * i, 240], [0, 0, 1]]
        cams.append(Camera(f"cam{i:02d}", 640, 480, K, "none", [], look_at(centre, [0, 0, 0], up=(0, 1, 0))))
    return Rig.from_list(cams)


def _rotation(axis, angle_rad) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * k @ k


def _motion(seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.eye(4)
    m[:3, :3] = scale * _rotation(rng.normal(size=3), rng.uniform(0.3, 3.0))
    m[:3, 3] = rng.normal(0, 2, 3)
    return m


def _moved(rig: Rig, new_from_old: np.ndarray) -> Rig:
    """The same cameras in a world where x_new = new_from_old x_old (a similarity): the camera
    centres and orientations move, cam_from_world absorbs it."""
    scale = float(np.cbrt(np.linalg.det(new_from_old[:3, :3])))
    rot, trans = new_from_old[:3, :3] / scale, new_from_old[:3, 3]
    out = []
    for c in rig:
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3] = rot @ c.world_from_cam[:3, :3]
        world_from_cam[:3, 3] = scale * rot @ c.centre + trans
        out.append(c.replace(cam_from_world=np.linalg.inv(world_from_cam)))
    return Rig.from_list(out)


def test_identical_rigs_have_zero_error():
    truth = _rig()
    errors = compare_rigs(truth, truth)
    for m in METRICS:
        assert errors.values(m).max() < 1e-9, m
    assert errors.missing == () and errors.scale == 1.0
    np.testing.assert_allclose(errors.truth_from_estimated, np.eye(4), atol=1e-15)


def test_known_intrinsic_perturbation_gives_known_errors():
    truth = _rig()
    cam = truth["cam02"]
    K = cam.K.copy()
    K[0, 0] *= 1.01  # +1 % fx
    K[1, 1] *= 0.98  # -2 % fy: the focal error is the larger of the two
    K[0, 2] += 3.0
    K[1, 2] -= 4.0  # a 3-4-5 principal point shift
    estimated = Rig.from_list([c if c.id != "cam02" else c.replace(K=K) for c in truth])
    rows = {r["camera"]: r for r in compare_rigs(estimated, truth).rows()}
    assert rows["cam02"]["focal_error_pct"] == pytest.approx(2.0, rel=1e-12)
    assert rows["cam02"]["principal_point_error_px"] == pytest.approx(5.0, rel=1e-12)
    assert rows["cam02"]["centre_error_mm"] < 1e-9 and rows["cam02"]["rotation_error_deg"] < 1e-9
    assert rows["cam00"]["focal_error_pct"] == 0.0 and rows["cam00"]["principal_point_error_px"] == 0.0
    assert set(rows["cam00"]) == {"camera", *METRICS}


def _with_world_from_cam(rig: Rig, cam_id: str, world_from_cam: np.ndarray) -> Rig:
    return Rig.from_list([c.replace(cam_from_world=np.linalg.inv(world_from_cam)) if c.id == cam_id else c
                          for c in rig])


def test_known_rotation_perturbation_gives_known_errors():
    """One of 5 cameras turned by 0.5 deg about its own centre: the chordal mean takes 1/5 of
    it (to first order), leaving 0.4 deg on that camera and 0.1 deg on the others."""
    truth = _rig()
    world_from_cam = truth["cam01"].world_from_cam.copy()
    world_from_cam[:3, :3] = _rotation([0, 1, 0], math.radians(0.5)) @ world_from_cam[:3, :3]
    errors = compare_rigs(_with_world_from_cam(truth, "cam01", world_from_cam), truth)
    rot = errors.values("rotation_error_deg")
    assert rot[1] == pytest.approx(0.4, rel=1e-3)
    assert np.allclose(np.delete(rot, 1), 0.1, rtol=1e-3)
    assert errors.values("focal_error_pct").max() == 0.0


def test_known_centre_perturbation_gives_known_errors():
    """One of 5 cameras moved 3 mm: orientations agree, so the alignment is a pure translation
    by 1/5 of the shift, leaving 2.4 mm on that camera and 0.6 mm on each other one."""
    truth = _rig()
    world_from_cam = truth["cam03"].world_from_cam.copy()
    world_from_cam[:3, 3] += [0.003, 0.0, 0.0]
    errors = compare_rigs(_with_world_from_cam(truth, "cam03", world_from_cam), truth)
    centre = errors.values("centre_error_mm")
    assert centre[3] == pytest.approx(2.4, rel=1e-9)
    assert np.allclose(np.delete(centre, 3), 0.6, rtol=1e-9)
    assert errors.values("rotation_error_deg").max() < 1e-9


def test_errors_do_not_depend_on_the_estimated_world_frame():
    rng = np.random.default_rng(0)
    truth = _rig(6)
    noisy = []
    for c in truth:
        K = c.K.copy()
        K[:2, :2] *= 1 + rng.normal(0, 0.003)
        K[:2, 2] += rng.normal(0, 1.0, 2)
        world_from_cam = c.world_from_cam.copy()
        world_from_cam[:3, :3] = _rotation(rng.normal(size=3), math.radians(0.2)) @ world_from_cam[:3, :3]
        world_from_cam[:3, 3] += rng.normal(0, 0.002, 3)
        noisy.append(c.replace(K=K, cam_from_world=np.linalg.inv(world_from_cam)))
    estimated = Rig.from_list(noisy)
    reference = compare_rigs(estimated, truth)
    assert reference.values("rotation_error_deg").max() > 0.05  # the perturbation is there
    for seed in range(3):
        moved = _moved(estimated, _motion(seed))
        errors = compare_rigs(moved, truth)
        for m in METRICS:
            np.testing.assert_allclose(errors.values(m), reference.values(m), rtol=1e-7, atol=1e-9, err_msg=m)
        # and the alignment undoes the motion
        np.testing.assert_allclose(errors.truth_from_estimated @ _motion(seed), reference.truth_from_estimated,
                                   atol=1e-9)


def test_with_scale_removes_a_global_scale_and_without_it_shows_as_centre_error():
    truth = _rig()
    moved = _moved(truth, _motion(4, scale=1.5))
    scaled = compare_rigs(moved, truth, with_scale=True)
    assert scaled.scale == pytest.approx(1 / 1.5, rel=1e-12)
    assert scaled.values("centre_error_mm").max() < 1e-9 and scaled.values("rotation_error_deg").max() < 1e-6
    rigid = compare_rigs(moved, truth)
    assert rigid.scale == 1.0 and rigid.values("centre_error_mm").max() > 100
    assert rigid.values("rotation_error_deg").max() < 1e-6  # rotations do not see a scale


def test_two_cameras_are_enough_to_align():
    """Two camera centres leave the rotation about their baseline free; orientations fix it."""
    truth = Rig.from_list(list(_rig())[:2])
    errors = compare_rigs(_moved(truth, _motion(7)), truth)
    assert errors.values("centre_error_mm").max() < 1e-9 and errors.values("rotation_error_deg").max() < 1e-6


def test_summary_missing_cameras_and_bad_input():
    truth = _rig()
    estimated = Rig.from_list([c for c in truth if c.id != "cam04"])
    errors = compare_rigs(estimated, truth)
    assert errors.missing == ("cam04",) and len(errors.cameras) == 4
    summary = errors.summary()
    assert summary["cameras"] == 4 and summary["missing"] == ["cam04"]
    assert set(summary["max"]) == set(summary["median"]) == set(METRICS)
    with pytest.raises(ValueError, match="metric"):
        errors.values("focal")
    other = Rig.from_list([Camera("x", 640, 480, np.eye(3) * [500, 500, 1] + [[0, 0, 320], [0, 0, 240], [0, 0, 0]])])
    with pytest.raises(ValueError, match="no camera id in common"):
        compare_rigs(other, truth)
    small = Rig.from_list([c.replace(width=320) if c.id == "cam01" else c for c in truth])
    with pytest.raises(ValueError, match="cam01.*320x480"):
        compare_rigs(small, truth)


def test_rotation_angle_is_exact_near_zero():
    for angle in (1e-9, 1e-5, 0.3, 3.0):
        assert rotation_angle_deg(_rotation([1, 2, 3], angle)) == pytest.approx(math.degrees(angle), rel=1e-9)
    assert align_rig(_rig(), _rig()).shape == (4, 4)
