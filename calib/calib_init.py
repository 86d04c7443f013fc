"""The starting point of a rig calibration: per-camera intrinsics and board poses, then the rig's
extrinsics by chaining shared board views over the camera graph, then one pose per board frame.

Every relative pose and board pose candidate is scored on all the views it should explain, so
that a single planar-PnP flip cannot poison the start of the bundle adjustment.
"""
from __future__ import annotations

import numpy as np

from headcap.calib.bundle import project_corners
from headcap.calib.camera import invert_rigid
from headcap.calib.detect import Detection
from headcap.calib.projection import DISTORTION_MODELS


def average_poses(poses: list[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean rotation and median translation of [4, 4] rigid transforms."""
    stack = np.stack(poses)
    u, _, vt = np.linalg.svd(stack[:, :3, :3].sum(axis=0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.median(stack[:, :3, 3], axis=0)
    return out


def camera_graph_components(usable: dict[str, list[Detection]]) -> list[list[str]]:
    """Cameras linked when they see the board in the same frame; the connected pieces."""
    cams = list(usable)
    parent = {c: c for c in cams}

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    by_frame: dict[str, list[str]] = {}
    for c, dets in usable.items():
        for d in dets:
            by_frame.setdefault(d.frame, []).append(c)
    for members in by_frame.values():
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    groups: dict[str, list[str]] = {}
    for c in cams:
        groups.setdefault(find(c), []).append(c)
    return list(groups.values())


def init_intrinsics(cam: str, dets: list[Detection], size: tuple[int, int], distortion_model: str,
                    fix_k3: bool, warnings: list[str]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One camera on its own with cv2.calibrateCamera: (K [3, 3], distortion [n_dist],
    cam_from_board [4, 4] per detection). With fewer than 3 views only the focal length is free."""
    import cv2

    w, h = size
    obj = [d.object_points.astype(np.float32) for d in dets]
    img = [d.corners.astype(np.float32) for d in dets]
    K0 = np.array([[max(w, h), 0, (w - 1) / 2], [0, max(w, h), (h - 1) / 2], [0, 0, 1.0]])
    flags = cv2.CALIB_USE_INTRINSIC_GUESS
    if len(dets) < 3:
        flags |= (cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_ASPECT_RATIO
                  | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3)
    elif fix_k3 or distortion_model != "opencv":
        flags |= cv2.CALIB_FIX_K3
    # a starting point for the bundle adjustment, which refines it: a few iterations suffice
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 10, 1e-9)
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, (w, h), K0.copy(), np.zeros(5), flags=flags,
                                                     criteria=criteria)
    if not np.isfinite(rms) or rms > 5:
        warnings.append(f"camera {cam!r}: its own initial calibration has RMS {rms:.2f} px over frames "
                        f"{[d.frame for d in dets][:10]}; the board may be misdetected")
    poses = []
    for rv, tv in zip(rvecs, tvecs):
        m = np.eye(4)
        m[:3, :3] = cv2.Rodrigues(rv)[0]
        m[:3, 3] = tv.ravel()
        poses.append(m)
    d = np.zeros(DISTORTION_MODELS[distortion_model])
    if distortion_model == "opencv":
        d = np.asarray(dist, np.float64).ravel()[:5]
    return K, d, poses


def solve_pnp(dets: list[Detection], K: np.ndarray, model: str, dist: np.ndarray) -> list[np.ndarray]:
    """cam_from_board [4, 4] per detection with known intrinsics (corners undistorted first)."""
    import cv2
    import torch

    from headcap.calib.projection import undistort_pixels

    poses = []
    for d in dets:
        pts = d.corners if model == "none" else undistort_pixels(
            torch.as_tensor(d.corners), torch.as_tensor(K), model, torch.as_tensor(dist)).numpy()
        ok, rv, tv = cv2.solvePnP(d.object_points, pts, K, None, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            ok, rv, tv = cv2.solvePnP(d.object_points, pts, K, None)
        m = np.eye(4)
        m[:3, :3] = cv2.Rodrigues(rv)[0]
        m[:3, 3] = np.asarray(tv).ravel()
        poses.append(m)
    return poses


def view_rms(cam_from_board: np.ndarray, det: Detection, K: np.ndarray, dist: np.ndarray, model: str) -> float:
    """Reprojection RMS (px) of a detection under a candidate pose; inf when behind the camera."""
    pc = det.object_points @ cam_from_board[:3, :3].T + cam_from_board[:3, 3]
    if (pc[:, 2] <= 1e-6).any():
        return float("inf")
    intr = np.concatenate([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], dist])
    pix = project_corners(np.broadcast_to(intr, (len(pc), len(intr))), model, pc)
    return float(np.sqrt(np.mean(np.sum((pix - det.corners) ** 2, axis=1))))


def views_rms(cam_from_board: np.ndarray, dets: list[Detection], intr: np.ndarray, model: str) -> np.ndarray:
    """`view_rms` of many (pose, detection) pairs at once: cam_from_board [P, 4, 4], dets [P],
    intr [P, 4 + n_dist] (fx, fy, cx, cy, distortion). Returns [P] (inf when behind a camera)."""
    n = np.array([len(d.ids) for d in dets])
    pair = np.repeat(np.arange(len(dets)), n)
    obj = np.concatenate([d.object_points for d in dets])
    pc = (cam_from_board[pair, :3, :3] @ obj[:, :, None])[..., 0] + cam_from_board[pair, :3, 3]
    pix = project_corners(intr[pair], model, pc)
    sq = np.sum((pix - np.concatenate([d.corners for d in dets])) ** 2, axis=1)
    out = np.sqrt(np.bincount(pair, sq, len(dets)) / n)
    behind = np.bincount(pair, pc[:, 2] <= 1e-6, len(dets)) > 0
    return np.where(behind, np.inf, out)


def _intr(K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    return np.concatenate([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], dist])


def _consistent_mean(candidates: list[np.ndarray], scores: list[float]) -> np.ndarray:
    """Average of the candidates that explain the views nearly as well as the best one."""
    best = min(scores)
    return average_poses([c for c, e in zip(candidates, scores) if e <= 3 * best + 1.0])


def chain_extrinsics(cams: list[str], usable: dict[str, list[Detection]], view_pose: dict, K: dict, dist: dict,
                     model: str, reference: str) -> dict[str, np.ndarray]:
    """cam_from_world [4, 4] per camera, the reference camera at the identity: a maximum spanning
    tree over the camera graph (edge weight = shared frames), each edge the consistent mean of
    the relative poses its shared frames give. view_pose[(camera, frame)] is cam_from_board."""
    frames_of = {c: {d.frame for d in usable[c]} for c in cams}
    det_of = {(c, d.frame): d for c in cams for d in usable[c]}
    cam_from_world = {reference: np.eye(4)}
    while len(cam_from_world) < len(cams):
        _, a, b = max(((len(frames_of[a] & frames_of[b]), a, b) for a in cam_from_world for b in cams
                       if b not in cam_from_world), key=lambda t: t[0])
        shared = sorted(frames_of[a] & frames_of[b])
        rel = np.stack([view_pose[(b, f)] @ invert_rigid(view_pose[(a, f)]) for f in shared])
        a_views = np.stack([view_pose[(a, g)] for g in shared])
        poses = (rel[:, None] @ a_views[None]).reshape(-1, 4, 4)  # candidate i on frame g
        rms = views_rms(poses, [det_of[(b, g)] for _ in shared for g in shared],
                        np.broadcast_to(_intr(K[b], dist[b]), (len(poses), 4 + len(dist[b]))), model)
        score = np.median(rms.reshape(len(shared), len(shared)), axis=1)
        cam_from_world[b] = _consistent_mean(list(rel), list(score)) @ cam_from_world[a]
    return cam_from_world


def init_board_poses(cams: list[str], usable: dict[str, list[Detection]], view_pose: dict, K: dict, dist: dict,
                     model: str, cam_from_world: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """world_from_board [4, 4] per frame: the consistent mean of what each camera that saw it says."""
    det_of = {(c, d.frame): d for c in cams for d in usable[c]}
    frames = sorted({f for (_, f) in det_of})
    world_from_board = {}
    for f in frames:
        seen = [c for c in cams if (c, f) in det_of]
        cand = np.stack([invert_rigid(cam_from_world[c]) @ view_pose[(c, f)] for c in seen])
        cfw = np.stack([cam_from_world[c] for c in seen])
        poses = (cfw[None] @ cand[:, None]).reshape(-1, 4, 4)  # candidate i seen by camera j
        intr = np.stack([_intr(K[c], dist[c]) for c in seen])
        rms = views_rms(poses, [det_of[(c, f)] for _ in seen for c in seen], np.tile(intr, (len(seen), 1)), model)
        world_from_board[f] = _consistent_mean(list(cand), list(np.median(rms.reshape(len(seen), len(seen)), axis=1)))
    return world_from_board
