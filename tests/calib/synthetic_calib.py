"""Synthetic rigs and board observations with known ground truth, shared by
tests/calib/test_calibrate.py and benchmarks/bm_calibrate.py."""
from __future__ import annotations

import numpy as np

from headcap.calib.boards import BoardSpec, ray_directions, render_board_view
from headcap.calib.camera import Camera, Rig, invert_rigid, look_at
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


def board_poses(n_frames: int, rng: np.random.Generator, spec: BoardSpec, arc_deg=200.0, spread=0.12, tilt=0.45) -> list[np.ndarray]:
    """world_from_board per frame: the board near the origin, its printed face turned towards a
    random direction of the camera arc, tilted and rolled."""
    bw, bh = spec.size
    out = []
    for _ in range(n_frames):
        # face a random camera direction (+ jitter) so the end cameras of the arc get as many views
        az = np.radians(rng.choice(np.linspace(-arc_deg / 2, arc_deg / 2, 16)) + rng.normal(0, 12))
        face = np.array([np.sin(az), 0.0, -np.cos(az)])  # towards the cameras
        centre = rng.normal(0, spread, 3)
        cam_like = look_at(centre + face, centre, up=(0, 1, 0))  # a frame whose z looks back at the board
        rot = _rot(rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt), rng.uniform(-0.35, 0.35))
        world_from_board = invert_rigid(cam_like)
        world_from_board[:3, :3] = world_from_board[:3, :3] @ rot
        # board origin so the board centre sits at `centre`
        world_from_board[:3, 3] = centre - world_from_board[:3, :3] @ np.array([bw / 2, bh / 2, 0])
        out.append(world_from_board)
    return out


def _rot(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


def projected_detections(rig: Rig, spec: BoardSpec, poses: list[np.ndarray], rng: np.random.Generator,
                         noise_px=0.3, outlier_fraction=0.0, min_corners=6, max_angle_deg=70.0) -> dict[str, list[Detection]]:
    """Board corners projected into every camera with Gaussian noise (per-axis sigma noise_px);
    a corner counts when it is in front, inside the image and the board faces the camera."""
    obj = spec.object_points()
    out: dict[str, list[Detection]] = {c: [] for c in rig.ids}
    for j, wfb in enumerate(poses):
        world = obj @ wfb[:3, :3].T + wfb[:3, 3]
        normal_towards = -wfb[:3, 2]
        for cam in rig:
            view = cam.centre - world.mean(axis=0)
            cosang = view @ normal_towards / np.linalg.norm(view)
            if cosang < np.cos(np.radians(max_angle_deg)):
                continue
            pix, depth = cam.project(world)
            pix, depth = pix.numpy(), depth.numpy()
            ok = (depth > 0) & (pix[:, 0] >= 0) & (pix[:, 0] <= cam.width - 1) & (pix[:, 1] >= 0) & (pix[:, 1] <= cam.height - 1)
            if ok.sum() < min_corners:
                continue
            ids = np.nonzero(ok)[0]
            p = pix[ids] + rng.normal(0, noise_px, (len(ids), 2))
            if outlier_fraction > 0:
                bad = rng.random(len(ids)) < outlier_fraction
                p[bad] += rng.uniform(5, 20, (bad.sum(), 2)) * rng.choice([-1, 1], (bad.sum(), 2))
            out[cam.id].append(Detection(cam.id, f"{j:03d}", "", (cam.width, cam.height), ids, p, obj[ids]))
    return out


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


def align_rigs(est: Rig, gt: Rig) -> Rig:
    """`est` moved rigidly (no scale: calibration is metric) onto `gt`, so the comparison
    measures the rig's shape, not the arbitrary gauge: the rotation is the chordal mean of the
    per-camera orientation differences, the translation matches the centroids."""
    u, _, vt = np.linalg.svd(sum(gt[c.id].world_from_cam[:3, :3] @ c.cam_from_world[:3, :3] for c in est))
    rot = u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt
    a = np.stack([c.centre for c in est])
    b = np.stack([gt[c.id].centre for c in est])
    gt_from_est = np.eye(4)
    gt_from_est[:3, :3] = rot
    gt_from_est[:3, 3] = b.mean(0) - rot @ a.mean(0)
    return est.transformed(invert_rigid(gt_from_est))


def pose_errors(est: Rig, gt: Rig) -> dict[str, np.ndarray]:
    """Per camera: relative focal error, principal point error (px), centre error (m) and
    rotation error (degrees) after `align_rigs`."""
    a = align_rigs(est, gt)
    out = {"focal": [], "pp": [], "centre": [], "rot_deg": []}
    for c in gt.ids:
        out["focal"].append(np.abs(np.diag(a[c].K)[:2] / np.diag(gt[c].K)[:2] - 1).max())
        out["pp"].append(np.abs(a[c].K[:2, 2] - gt[c].K[:2, 2]).max())
        out["centre"].append(np.linalg.norm(a[c].centre - gt[c].centre))
        r = a[c].cam_from_world[:3, :3] @ gt[c].cam_from_world[:3, :3].T
        out["rot_deg"].append(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
    return {k: np.asarray(v) for k, v in out.items()}
