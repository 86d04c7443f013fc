"""Synthetic calibration boards with known ground truth: the board poses a person holding a
ChArUco board in front of a rig would make, and the corner observations of those poses.

One generator for the whole project: the synthetic studio (`headcap synth`) renders its
calibration frames from `board_poses_facing` (images: boards.render_board_view), and the
calibration tests and benchmarks use the same poses, projected (`projected_detections`) or
rendered and detected.
"""
from __future__ import annotations

import math

import numpy as np

from headcap.calib.boards import BoardSpec
from headcap.calib.camera import Camera, Rig
from headcap.calib.detect import Detection


def _rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


def board_poses_facing(cameras: Rig | list[Camera], count: int, spec: BoardSpec, rng: np.random.Generator, *,
                       centre=(0.0, 0.0, 0.0), spread_m: float = 0.05, tilt_deg: float = 25.0,
                       roll_deg: float = 20.0, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """world_from_board [count, 4, 4] (board frame: calib.boards, z into the board).

    Pose k turns the board's printed face to camera floor((k + 0.5) n / count) of the n cameras,
    so the poses are spread evenly over the rig (each camera faced about count / n times); the
    board's centre is `centre` plus N(0, spread_m) per axis (metres); the board is then tilted
    about its own x and y axes by U(-tilt_deg, tilt_deg) each and rolled about its normal by
    U(-roll_deg, roll_deg). Board x is horizontal (perpendicular to `up`, the world's up) before
    the tilts.
    """
    cams = list(cameras)
    if not cams:
        raise ValueError("cameras: expected at least one camera")
    if count < 0:
        raise ValueError(f"count: expected a number of poses >= 0, got {count}")
    up = np.asarray(up, dtype=np.float64)
    width, height = spec.size
    tilt, roll = math.radians(tilt_deg), math.radians(roll_deg)
    out = np.zeros((count, 4, 4))
    for k in range(count):
        camera = cams[min(len(cams) - 1, int((k + 0.5) * len(cams) / count))]
        board_centre = np.asarray(centre, dtype=np.float64) + rng.normal(0.0, spread_m, 3)
        normal = camera.centre - board_centre
        normal /= np.linalg.norm(normal)
        x = np.cross(up, normal)
        if np.linalg.norm(x) < 1e-6:  # a camera straight above or below: any horizontal x will do
            x = np.cross([1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 0.0, 1.0], normal)
        x /= np.linalg.norm(x)
        z = -normal
        facing = np.stack([x, np.cross(z, x), z], axis=1)
        rx, ry = rng.uniform(-tilt, tilt, 2)
        rot = facing @ _rotation_xyz(rx, ry, rng.uniform(-roll, roll))
        out[k, :3, :3] = rot
        out[k, :3, 3] = board_centre - rot @ np.array([width / 2, height / 2, 0.0])
        out[k, 3, 3] = 1.0
    return out


def projected_detections(rig: Rig, spec: BoardSpec, world_from_board, rng: np.random.Generator,
                         noise_px: float = 0.3, outlier_fraction: float = 0.0, min_corners: int = 6,
                         max_angle_deg: float = 70.0) -> dict[str, list[Detection]]:
    """Board corners projected into every camera (lens distortion included), with Gaussian noise
    of per-axis sigma noise_px and a fraction of gross outliers (5-20 px per axis). A corner
    counts when it is in front of the camera and inside the image, and the board faces the camera
    within max_angle_deg; a view with fewer than min_corners corners is dropped. Frame names are
    the pose indices, "000", "001", ..."""
    obj = spec.object_points()
    out: dict[str, list[Detection]] = {c: [] for c in rig.ids}
    for j, wfb in enumerate(world_from_board):
        world = obj @ wfb[:3, :3].T + wfb[:3, 3]
        normal_towards = -wfb[:3, 2]
        for cam in rig:
            view = cam.centre - world.mean(axis=0)
            cosang = view @ normal_towards / np.linalg.norm(view)
            if cosang < np.cos(np.radians(max_angle_deg)):
                continue
            pix, depth = cam.project(world)
            pix, depth = pix.numpy(), depth.numpy()
            ok = ((depth > 0) & (pix[:, 0] >= 0) & (pix[:, 0] <= cam.width - 1) & (pix[:, 1] >= 0)
                  & (pix[:, 1] <= cam.height - 1))
            if ok.sum() < min_corners:
                continue
            ids = np.nonzero(ok)[0]
            p = pix[ids] + rng.normal(0, noise_px, (len(ids), 2))
            if outlier_fraction > 0:
                bad = rng.random(len(ids)) < outlier_fraction
                p[bad] += rng.uniform(5, 20, (bad.sum(), 2)) * rng.choice([-1, 1], (bad.sum(), 2))
            out[cam.id].append(Detection(cam.id, f"{j:03d}", "", (cam.width, cam.height), ids, p, obj[ids]))
    return out
