"""calib.synthetic_boards: board poses that face the rig, and their projected corners."""
import math

import numpy as np
import pytest

from headcap.calib.boards import BoardSpec
from headcap.calib.camera import Camera, Rig, look_at
from headcap.calib.synthetic_boards import board_poses_facing, projected_detections

SPEC = BoardSpec.parse("charuco:7x5:0.05:0.0375:DICT_5X5_100")


def _rig(n=4) -> Rig:
    cams = []
    for i in range(n):
        az = math.radians(-60 + 120 * i / (n - 1))
        centre = [0.8 * math.sin(az), 0.1, 0.8 * math.cos(az)]
        cams.append(Camera(f"cam{i:02d}", 480, 360, [[400, 0, 240], [0, 400, 180], [0, 0, 1]], "none", [],
                           look_at(centre, [0, 0, 0], up=(0, 1, 0))))
    return Rig.from_list(cams)


def test_poses_are_rigid_spread_over_the_cameras_and_face_them():
    rig = _rig()
    poses = board_poses_facing(rig, 8, SPEC, np.random.default_rng(0), spread_m=0.02, tilt_deg=20, roll_deg=15)
    assert poses.shape == (8, 4, 4)
    width, height = SPEC.size
    for k, wfb in enumerate(poses):
        rot = wfb[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0) and np.array_equal(wfb[3], [0, 0, 0, 1])
        centre = wfb[:3, :3] @ [width / 2, height / 2, 0] + wfb[:3, 3]
        assert np.abs(centre).max() < 0.1
        faced = rig[rig.ids[k // 2]]  # 8 poses over 4 cameras: two each, in order
        towards = faced.centre - centre
        cos = -rot[:, 2] @ towards / np.linalg.norm(towards)
        assert cos > math.cos(math.radians(20 * math.sqrt(2) + 1))  # within the two tilts


def test_projected_detections_are_the_projected_corners_without_noise():
    rig = _rig()
    rng = np.random.default_rng(1)
    poses = board_poses_facing(rig, 4, SPEC, rng, spread_m=0.01, tilt_deg=10)
    dets = projected_detections(rig, SPEC, poses, rng, noise_px=0.0)
    assert all(len(v) > 0 for v in dets.values())
    for cam_id, views in dets.items():
        for d in views:
            world = d.object_points @ poses[int(d.frame)][:3, :3].T + poses[int(d.frame)][:3, 3]
            pix, _ = rig[cam_id].project(world)
            np.testing.assert_allclose(d.corners, pix.numpy(), atol=1e-9)
            np.testing.assert_array_equal(d.object_points, SPEC.object_points()[d.ids])


def test_bad_arguments():
    with pytest.raises(ValueError, match="cameras"):
        board_poses_facing([], 3, SPEC, np.random.default_rng(0))
    with pytest.raises(ValueError, match="count"):
        board_poses_facing(_rig(), -1, SPEC, np.random.default_rng(0))
    assert board_poses_facing(_rig(), 0, SPEC, np.random.default_rng(0)).shape == (0, 4, 4)
