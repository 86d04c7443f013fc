"""Synthetic rigs and rendered board observations with known ground truth, shared by
tests/calib/test_calibrate.py and benchmarks/bm_calibrate.py. Board poses and projected corners
come from the library (calib.synthetic_boards), rig errors from calib.rig_compare."""
from __future__ import annotations

import numpy as np

from headcap.calib.boards import BoardSpec, ray_directions, render_board_view
from headcap.calib.camera import Camera, Rig, look_at
from headcap.calib.detect import BoardDetector, Detection


def ring_rig(n_cams: int, rng: np.random.Generator, width=800, height=600, radius=1.2, arc_deg=200.0,
             focal=1000.0, distortion=True) -> Rig:
    """Cameras on an arc around the origin (y-up world), all looking at the centre."""
    cams = []
    for i, az in enumerate(np.radians(np.linspace(-arc_deg / 2, arc_deg / 2, n_cams))):
        centre = [radius * np.sin(az), 0.25 * ((i % 3) - 1), -radius * np.cos(az)]
        target = rng.normal(0, 0.03, 3)
        f = focal * rng.uniform(0.9, 1.1)
        K = np.array([[f, 0, width / 2 + rng.uniform(-15, 15)], [0, f * rng.uniform(0.998, 1.002),
                                                                 height / 2 + rng.uniform(-15, 15)], [0, 0, 1]])
        dist = (np.array([rng.uniform(-0.2, 0.05), rng.uniform(-0.05, 0.1), rng.uniform(-1e-3, 1e-3),
                          rng.uniform(-1e-3, 1e-3), 0.0]) if distortion else np.zeros(5))
        cams.append(Camera(f"cam{i:02d}", width, height, K, "opencv", dist, look_at(centre, target, up=(0, 1, 0))))
    return Rig.from_list(cams)


def rendered_detections(rig: Rig, spec: BoardSpec, poses: list[np.ndarray], rng: np.random.Generator,
                        noise_grey=2.0) -> tuple[dict[str, list[Detection]], dict]:
    """Render each view with `render_board_view`, add sensor noise, detect the board."""
    det = BoardDetector(spec)
    out: dict[str, list[Detection]] = {}
    truth: dict = {}
    for cam in rig:
        dirs = ray_directions(cam, 2)
        bg = np.full((cam.height, cam.width), 90, np.uint8)
        out[cam.id] = []
        for j, wfb in enumerate(poses):
            img, visible = render_board_view(cam, spec, wfb, image=bg, directions=dirs)
            noisy = np.clip(img + rng.normal(0, noise_grey, img.shape), 0, 255).astype(np.uint8)
            d = det.detect(noisy, cam.id, f"{j:03d}")
            out[cam.id].append(d)
            truth[(cam.id, f"{j:03d}")] = visible
    return out, truth


COVERAGE_BOARD = "charuco:8x6:0.04:0.03:DICT_5X5_100"


def coverage_case(seed: int, n_cams: int, n_poses: int, width: int, noise_px: float = 0.3, config=None):
    """A seeded ring rig (4:3 images, focal 0.9 x width, 120-degree arc) and projected board
    corners with Gaussian noise, calibrated: (CalibrationResult, true Rig). Raises
    CalibrationError when the seed's poses leave the camera graph in pieces."""
    from headcap.calib.calibrate import CalibrationConfig, calibrate_rig
    from headcap.calib.synthetic_boards import board_poses_facing, projected_detections

    rng = np.random.default_rng(seed)
    spec = BoardSpec.parse(COVERAGE_BOARD)
    truth = ring_rig(n_cams, rng, width=width, height=width * 3 // 4, radius=0.8, focal=0.9 * width, arc_deg=120)
    poses = board_poses_facing(truth, n_poses, spec, rng, spread_m=0.05, tilt_deg=35)
    dets = projected_detections(truth, spec, poses, rng, noise_px=noise_px)
    return calibrate_rig(dets, config or CalibrationConfig()), truth


def standardised_errors(result, truth: Rig) -> dict[str, np.ndarray]:
    """(estimate - truth) / reported 1 sigma per scalar parameter: "intrinsics" (fx, fy, cx, cy of
    every camera), "distortion" (every coefficient the solve left free), "centre" (every axis of
    every camera centre, after the calib.rig_compare alignment the uncertainty refers to)."""
    from headcap.calib.rig_compare import compare_rigs

    truth_from_est = compare_rigs(result.rig, truth).truth_from_estimated
    rot = truth_from_est[:3, :3]
    out: dict[str, list[float]] = {"intrinsics": [], "distortion": [], "centre": []}
    for c in result.rig.ids:
        u, est, true = result.uncertainty[c], result.rig[c], truth[c]
        for name, (i, j) in (("fx", (0, 0)), ("fy", (1, 1)), ("cx", (0, 2)), ("cy", (1, 2))):
            out["intrinsics"].append((est.K[i, j] - true.K[i, j]) / u[name + "_px"])
        for a, b, s in zip(est.distortion, true.distortion, u["distortion"]):
            if s > 0:
                out["distortion"].append((a - b) / s)
        err = rot @ est.centre + truth_from_est[:3, 3] - true.centre
        sd = np.sqrt(np.diag(rot @ np.diag((np.array(u["centre_axes_mm"]) / 1000) ** 2) @ rot.T))
        out["centre"] += list(err / sd)
    return {k: np.array(v) for k, v in out.items()}
