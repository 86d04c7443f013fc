"""Identical detections calibrate to bit-identical rigs, whatever OpenCV's thread count."""
import cv2
import numpy as np

from headcap.calib.boards import BoardSpec
from headcap.calib.calibrate import CalibrationConfig, calibrate_rig
from headcap.calib.synthetic_boards import board_poses_facing, projected_detections
from synthetic_calib import ring_rig


def test_calibration_is_bit_reproducible_and_leaves_opencv_threads_alone():
    rng = np.random.default_rng(5)
    spec = BoardSpec.parse("charuco:9x7:0.04:0.03:DICT_5X5_100")
    truth = ring_rig(6, rng, width=640, height=480, radius=0.6, focal=500)
    poses = board_poses_facing(truth, 12, spec, rng, spread_m=0.08, tilt_deg=35.0)
    dets = projected_detections(truth, spec, poses, rng, noise_px=0.3)
    saved = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        runs = [calibrate_rig(dets, CalibrationConfig()) for _ in range(3)]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(saved)
    for other in runs[1:]:
        assert other.rms == runs[0].rms
        for cam in truth.ids:
            a, b = runs[0].rig[cam], other.rig[cam]
            assert np.array_equal(a.K, b.K) and np.array_equal(a.distortion, b.distortion)
            assert np.array_equal(a.cam_from_world, b.cam_from_world)
