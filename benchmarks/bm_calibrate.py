"""Rig calibration benchmark: 16 cameras x 40 frames of a ChArUco board, 0.3 px corner noise
(per axis) and 0.5% gross outliers, solved by headcap and by OpenCV's own route
(cv2.calibrateCamera per camera, then cv2.stereoCalibrate along a spanning tree of the camera
graph), timed in the same run, both scored against the ground truth (calib.rig_compare: the
columns are the worst camera's errors after aligning each rig to the truth).

    python benchmarks/bm_calibrate.py [--frames 40] [--seeds 3]
    python benchmarks/bm_calibrate.py --coverage [--seeds 20]

--coverage sweeps synthetic rigs (128-1600 px, 4-16 cameras, 6-40 poses, projected corners with
0.3 px noise, tests/calib/synthetic_calib.coverage_case) over seeds and prints how often the
reported 1-sigma uncertainty covers the true error (a 1-sigma bound should: ~68%; 2 sigma ~95%),
and how many cameras with a focal error beyond 1% were not flagged (must be 0).

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
from synthetic_calib import coverage_case, ring_rig, standardised_errors  # noqa: E402

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


SWEEP = ((128, 4, 6), (128, 16, 40), (256, 4, 10), (256, 8, 12), (640, 8, 20), (640, 16, 12), (1600, 4, 40),
         (1600, 16, 40))


def coverage(seeds: int, rows: list[int] | None = None) -> None:
    from headcap.calib.calibrate import CalibrationError

    print(f"1-sigma coverage over {seeds} seeds per row (projected corners, 0.3 px noise); "
          "'bad' = cameras with focal error > 1%, 'silent' = bad ones without a focal warning")
    print(f"{'px':>5} {'cams':>4} {'poses':>5} {'runs':>4} | {'intr <1s':>8} {'<2s':>5} | {'centre <1s':>10} {'<2s':>5} | "
          f"{'dist <1s':>8} | {'max focal err %':>15} {'bad':>4} {'silent':>6} {'s/run':>6}")
    total = {"intrinsics": [], "centre": [], "distortion": []}
    all_bad = all_silent = 0
    for width, cams, poses in [SWEEP[i] for i in rows] if rows else SWEEP:
        z = {k: [] for k in total}
        runs = bad = silent = 0
        worst = 0.0
        t = time.perf_counter()
        for seed in range(seeds):
            try:
                res, truth = coverage_case(seed, cams, poses, width)
            except CalibrationError:
                continue
            runs += 1
            for k, v in standardised_errors(res, truth).items():
                z[k].append(np.abs(v))
            for row in compare_rigs(res.rig, truth).rows():
                worst = max(worst, row["focal_error_pct"])
                if row["focal_error_pct"] > 1.0:
                    bad += 1
                    silent += "focal" not in res.uncertain.get(row["camera"], [])
        dt = (time.perf_counter() - t) / max(runs, 1)
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in z.items()}
        for k in total:
            total[k].append(cat[k])
        all_bad, all_silent = all_bad + bad, all_silent + silent
        print(f"{width:>5} {cams:>4} {poses:>5} {runs:>4} | {np.mean(cat['intrinsics'] < 1):>8.1%} "
              f"{np.mean(cat['intrinsics'] < 2):>5.1%} | {np.mean(cat['centre'] < 1):>10.1%} {np.mean(cat['centre'] < 2):>5.1%} | "
              f"{np.mean(cat['distortion'] < 1):>8.1%} | {worst:>15.2f} {bad:>4} {silent:>6} {dt:>6.2f}")
    a = {k: np.concatenate(v) for k, v in total.items()}
    print(f"all: intrinsics {np.mean(a['intrinsics'] < 1):.1%} within 1 sigma ({np.mean(a['intrinsics'] < 2):.1%} within 2, "
          f"{len(a['intrinsics'])} values), centres {np.mean(a['centre'] < 1):.1%} ({np.mean(a['centre'] < 2):.1%}, "
          f"{len(a['centre'])}), distortion {np.mean(a['distortion'] < 1):.1%}; focal > 1%: {all_bad} cameras, "
          f"{all_silent} without a warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--coverage", action="store_true", help="the uncertainty coverage sweep instead of the timing")
    ap.add_argument("--rows", type=str, default="", help="with --coverage: comma-separated SWEEP rows to run (default all)")
    args = ap.parse_args()
    if args.coverage:
        coverage(args.seeds, [int(r) for r in args.rows.split(",") if r])
        return
    print(f"16 cameras x {args.frames} frames, 1600x1200, board {BOARD}, noise 0.3 px/axis, 0.5% outliers")
    print(f"{'seed':>4} {'corners':>7} | {'method':<22} {'time s':>7} {'RMS px':>7} {'focal %':>8} {'pp px':>6} "
          f"{'centre mm':>9} {'rot deg':>8}")
    ratios = []
    for seed in range(1, args.seeds + 1):
        r = run(args.frames, seed)
        ratios.append(r["t_ours"] / r["t_cv"])
        for name, key, t, rms in (("headcap BA", "ours", r["t_ours"], r["rms_ours"]),
                                  ("cv2 calib+stereo chain", "cv", r["t_cv"], r["rms_cv"])):
            e = r[key]
            print(f"{seed:>4} {r['corners']:>7} | {name:<22} {t:>7.2f} {rms:>7.4f} {e['focal_error_pct']:>8.3f} "
                  f"{e['principal_point_error_px']:>6.2f} {e['centre_error_mm']:>9.2f} {e['rotation_error_deg']:>8.4f}")
        print(f"     speed ratio headcap/OpenCV: {r['t_ours'] / r['t_cv']:.2f}x time "
              f"(OpenCV RMS is its per-camera figure; its chain never re-solves intrinsics with the rig)")
    print(f"median time ratio headcap/OpenCV over {len(ratios)} seeds: {np.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
