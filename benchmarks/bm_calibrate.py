"""Rig calibration benchmark: 16 cameras x 40 frames of a ChArUco board, 0.3 px corner noise
(per axis) and 0.5% gross outliers, solved by headcap and by OpenCV's own route
(cv2.calibrateCamera per camera, then cv2.stereoCalibrate along a spanning tree of the camera
graph), timed in the same run, both scored against the ground truth (calib.rig_compare: the
columns are the worst camera's errors after aligning each rig to the truth).

    python benchmarks/bm_calibrate.py [--frames 40] [--seeds 3]

multical (PyPI 0.4.0) is not compared: it pins opencv-contrib-python 4.6 (which needs numpy<2,
so it cannot share headcap's environment), and in a separate venv it does not import on
Python 3.11 ("mutable default <class 'multical.config.arguments.PathOpts'> for field paths").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "calib")]

from headcap.calib.boards import BoardSpec  # noqa: E402
from headcap.calib.calibrate import CalibrationConfig, calibrate_rig, camera_graph_components  # noqa: E402
from headcap.calib.camera import Camera, Rig  # noqa: E402
from headcap.calib.rig_compare import compare_rigs  # noqa: E402
from headcap.calib.synthetic_boards import board_poses_facing, projected_detections  # noqa: E402
from synthetic_calib import ring_rig  # noqa: E402

BOARD = "charuco:14x10:0.035:0.026:DICT_5X5_100"


def opencv_route(dets, sizes) -> tuple[Rig, float]:
    """Per-camera calibrateCamera, then stereoCalibrate (intrinsics fixed) along a maximum
    spanning tree of shared frames from the first camera. Returns the rig and the mean of the
    per-camera RMS values OpenCV reports."""
    import cv2

    cams = list(dets)
    K, D, rms = {}, {}, []
    for c in cams:
        obj = [d.object_points.astype(np.float32) for d in dets[c]]
        img = [d.corners.astype(np.float32) for d in dets[c]]
        r, K[c], D[c], _, _ = cv2.calibrateCamera(obj, img, sizes[c], None, None)
        rms.append(r)
    by = {c: {d.frame: d for d in dets[c]} for c in cams}
    cam_from_world = {cams[0]: np.eye(4)}
    while len(cam_from_world) < len(cams):
        n, a, b = max(((len(by[a].keys() & by[b].keys()), a, b) for a in cam_from_world for b in cams
                       if b not in cam_from_world), key=lambda t: t[0])
        obj, pa, pb = [], [], []
        for f in sorted(by[a].keys() & by[b].keys()):
            ids = np.intersect1d(by[a][f].ids, by[b][f].ids)
            if len(ids) < 6:
                continue
            ia = np.searchsorted(by[a][f].ids, ids)
            ib = np.searchsorted(by[b][f].ids, ids)
            obj.append(by[a][f].object_points[ia].astype(np.float32))
            pa.append(by[a][f].corners[ia].astype(np.float32))
            pb.append(by[b][f].corners[ib].astype(np.float32))
        out = cv2.stereoCalibrate(obj, pa, pb, K[a], D[a], K[b], D[b], sizes[a], flags=cv2.CALIB_FIX_INTRINSIC)
        R, T = out[5], out[6]
        b_from_a = np.eye(4)
        b_from_a[:3, :3], b_from_a[:3, 3] = R, T.ravel()
        cam_from_world[b] = b_from_a @ cam_from_world[a]
    rig = Rig.from_list([Camera(c, *sizes[c], K[c], "opencv", D[c].ravel()[:5], cam_from_world[c]) for c in cams])
    return rig, float(np.mean(rms))


def run(frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    spec = BoardSpec.parse(BOARD)
    gt = ring_rig(16, rng, width=1600, height=1200, radius=0.6, focal=1200)
    poses = board_poses_facing(gt, frames, spec, rng, spread_m=0.1, tilt_deg=40.0)
    dets = projected_detections(gt, spec, poses, rng, noise_px=0.3, outlier_fraction=0.005, max_angle_deg=75)
    assert len(camera_graph_components({c: v for c, v in dets.items()})) == 1
    sizes = {c.id: (c.width, c.height) for c in gt}
    t = time.perf_counter()
    ours = calibrate_rig(dets, CalibrationConfig())
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    cv_rig, cv_rms = opencv_route(dets, sizes)
    t_cv = time.perf_counter() - t
    e_ours, e_cv = compare_rigs(ours.rig, gt).summary()["max"], compare_rigs(cv_rig, gt).summary()["max"]
    return {"corners": sum(len(d.ids) for v in dets.values() for d in v), "t_ours": t_ours, "t_cv": t_cv,
            "rms_ours": ours.rms, "rms_cv": cv_rms, "ours": e_ours, "cv": e_cv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    print(f"16 cameras x {args.frames} frames, 1600x1200, board {BOARD}, noise 0.3 px/axis, 0.5% outliers")
    print(f"{'seed':>4} {'corners':>7} | {'method':<22} {'time s':>7} {'RMS px':>7} {'focal %':>8} {'pp px':>6} "
          f"{'centre mm':>9} {'rot deg':>8}")
    for seed in range(1, args.seeds + 1):
        r = run(args.frames, seed)
        for name, key, t, rms in (("headcap BA", "ours", r["t_ours"], r["rms_ours"]),
                                  ("cv2 calib+stereo chain", "cv", r["t_cv"], r["rms_cv"])):
            e = r[key]
            print(f"{seed:>4} {r['corners']:>7} | {name:<22} {t:>7.2f} {rms:>7.4f} {e['focal_error_pct']:>8.3f} "
                  f"{e['principal_point_error_px']:>6.2f} {e['centre_error_mm']:>9.2f} {e['rotation_error_deg']:>8.4f}")
        print(f"     speed ratio headcap/OpenCV: {r['t_ours'] / r['t_cv']:.2f}x time "
              f"(OpenCV RMS is its per-camera figure; its chain never re-solves intrinsics with the rig)")


if __name__ == "__main__":
    main()
