"""Registration, step 1: the rigid pose of a head model in a frame's point cloud.

  rigid_from_landmarks(model_landmarks, landmarks3d)   Kabsch on triangulated iBUG-68 points
  icp(source, source_normals, cloud, init)             robust point-to-plane ICP (cloud -> model)
  multi_start_icp(source, source_normals, cloud)       ICP from rotations covering SO(3), best kept

ICP matches every (subsampled) cloud point to its nearest model vertex, so a partial cloud (one
side of the face, holes) is explained by part of the model rather than pulling the whole model
onto it. Transforms are 4x4 `target_from_source` (here: world_from_head).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from headcap.core.align import similarity_fit

__all__ = ["PointCloud", "ICPResult", "rigid_from_landmarks", "icp", "multi_start_icp", "start_rotations",
           "transform_points", "rotation_about", "IBUG_RIGID"]

# iBUG-68 points that sit on bone or cartilage and move little with expression: brows' inner
# ends, nose bridge and tip, nostrils, eye corners. The jaw contour and lips are left out.
IBUG_RIGID = np.array([19, 20, 21, 22, 23, 24, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])


@dataclass
class PointCloud:
    """One frame's geometry: points [N, 3] and unit normals [N, 3] (world metres), confidence [N]."""

    points: np.ndarray
    normals: np.ndarray
    confidence: np.ndarray

    def __post_init__(self):
        self._tree = None

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree

    def subsample(self, count: int, rng: np.random.Generator) -> "PointCloud":
        if len(self.points) <= count:
            return self
        keep = np.sort(rng.choice(len(self.points), count, replace=False))
        return PointCloud(self.points[keep], self.normals[keep], self.confidence[keep])


@dataclass
class ICPResult:
    transform: np.ndarray  # [4, 4] target_from_source
    rms: float             # point-to-plane RMS over the inliers (m)
    inlier_fraction: float
    cost: float            # what multi_start_icp ranks by (lower is better)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def _rotvec_matrix(w: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def rotation_about(axis_angle, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rotation by an axis-angle vector (radians) about `centre`."""
    out = np.eye(4)
    out[:3, :3] = _rotvec_matrix(np.asarray(axis_angle, np.float64))
    out[:3, 3] = np.asarray(centre) - out[:3, :3] @ np.asarray(centre)
    return out


def rigid_from_landmarks(model_landmarks: np.ndarray, landmarks3d: np.ndarray,
                         subset: np.ndarray = IBUG_RIGID) -> np.ndarray | None:
    """world_from_head [4, 4] aligning the model's iBUG-68 landmark vertices (head frame, [68, 3])
    to triangulated ones ([68, 3] world, NaN where missing), over `subset` with one round of
    outlier rejection; None when fewer than 4 usable points."""
    src, dst = np.asarray(model_landmarks, np.float64)[subset], np.asarray(landmarks3d, np.float64)[subset]
    ok = np.isfinite(dst).all(1) & np.isfinite(src).all(1)
    if ok.sum() < 4:
        return None
    for _ in range(2):
        _, rot, trans = similarity_fit(src[ok], dst[ok], with_scale=False)
        err = np.linalg.norm(src @ rot.T + trans - dst, axis=1)
        keep = ok & (err < max(3.0 * np.median(err[ok]), 0.01))
        if keep.sum() < 4 or keep.sum() == ok.sum():
            break
        ok = keep
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, trans
    return out


def icp(source: np.ndarray, source_normals: np.ndarray, cloud: PointCloud, init: np.ndarray,
        iterations: int = 30, max_distance: float = 0.02, normal_cos: float = 0.3,
        trim: float = 0.9) -> ICPResult:
    """Point-to-plane ICP moving `source` (model vertices [M, 3] with normals, head frame) onto
    `cloud`. Each cloud point takes its nearest transformed source vertex; pairs farther than
    max_distance, with normals disagreeing (cos < normal_cos), or beyond the `trim` quantile of
    distances are dropped; the rest are weighted by a Geman-McClure kernel."""
    transform = np.array(init, np.float64)
    pts, nrm = cloud.points, cloud.normals
    sigma = max_distance / 2
    rms, inl = np.inf, 0.0
    for it in range(iterations):
        src = transform_points(transform, source)
        src_n = source_normals @ transform[:3, :3].T
        dist, idx = cKDTree(src).query(pts, distance_upper_bound=max_distance)
        ok = np.isfinite(dist)
        if ok.sum() < 6:
            break
        idx_ok = np.where(ok, idx, 0)
        ok &= (np.einsum("ij,ij->i", src_n[idx_ok], nrm) > normal_cos)
        if ok.sum() < 6:
            break
        cut = np.quantile(dist[ok], trim)
        ok &= dist <= cut
        s, n, p = src[idx_ok[ok]], src_n[idx_ok[ok]], pts[ok]
        r = np.einsum("ij,ij->i", n, s - p)
        w = sigma ** 2 / (sigma ** 2 + r ** 2) ** 2 * sigma ** 2
        # linearised: n . (s + w x s + t - p) = 0 -> [s x n, n] [w; t] = -r
        centre = s.mean(0)
        a = np.concatenate([np.cross(s - centre, n), n], axis=1)
        ata = (a * w[:, None]).T @ a + 1e-9 * np.eye(6)
        x = np.linalg.solve(ata, -(a * w[:, None]).T @ r)
        step = rotation_about(x[:3], centre)
        step[:3, 3] += x[3:]
        transform = step @ transform
        rms = float(np.sqrt(np.mean(r ** 2)))
        inl = float(ok.mean())
        sigma = max(min(sigma, 3.0 * rms), 5e-4)
        if np.linalg.norm(x[:3]) < 1e-6 and np.linalg.norm(x[3:]) < 1e-7:
            break
    src = transform_points(transform, source)
    src_n = source_normals @ transform[:3, :3].T
    dist, idx = cKDTree(src).query(pts)
    agree = np.einsum("ij,ij->i", src_n[idx], nrm)
    plane = np.abs(np.einsum("ij,ij->i", src_n[idx], src[idx] - pts))
    # unexplained, distant or back-facing cloud points cost the full gate
    cost = float(np.mean(np.where((agree > normal_cos) & (dist < max_distance), np.minimum(plane, max_distance),
                                  max_distance)))
    return ICPResult(transform, rms, inl, cost)


def start_rotations(count: int = 48) -> np.ndarray:
    """[count, 3, 3] rotations spread over SO(3): forward directions on a Fibonacci sphere times
    four rolls (count is rounded down to a multiple of 4)."""
    dirs = max(count // 4, 1)
    i = np.arange(dirs) + 0.5
    z = 1 - 2 * i / dirs
    phi = np.pi * (1 + 5 ** 0.5) * i
    fwd = np.stack([np.sqrt(1 - z ** 2) * np.cos(phi), np.sqrt(1 - z ** 2) * np.sin(phi), z], 1)
    out = []
    for f in fwd:
        helper = np.array([0.0, 1.0, 0.0]) if abs(f[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, f)
        x /= np.linalg.norm(x)
        y = np.cross(f, x)
        base = np.stack([x, y, f], 1)  # head +z -> f
        for roll in range(4):
            out.append(base @ _rotvec_matrix(np.array([0.0, 0.0, roll * np.pi / 2])))
    return np.stack(out)


def multi_start_icp(source: np.ndarray, source_normals: np.ndarray, cloud: PointCloud, starts: int = 48,
                    coarse_points: int = 600, max_distance: float = 0.03, seed: int = 0) -> ICPResult:
    """Rigid pose with no initial guess: coarse ICP from `starts` rotations (the translation puts
    the centroid of the model's half facing the cloud on the cloud's centroid), the lowest cost
    refined on the full cloud."""
    rng = np.random.default_rng(seed)
    coarse = cloud.subsample(coarse_points, rng)
    sub = rng.choice(len(source), min(len(source), 3 * coarse_points), replace=False)
    src, src_n = source[sub], source_normals[sub]
    mean_normal = coarse.normals.mean(0)
    best = None
    for rot in start_rotations(starts):
        facing = (src_n @ rot.T) @ mean_normal > 0
        if facing.sum() < 10:
            continue
        init = np.eye(4)
        init[:3, :3] = rot
        init[:3, 3] = coarse.points.mean(0) - rot @ src[facing].mean(0)
        res = icp(src, src_n, coarse, init, iterations=10, max_distance=max_distance)
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        raise ValueError("multi_start_icp: the model has no vertices facing the cloud's normals")
    return icp(source, source_normals, cloud, best.transform, iterations=30, max_distance=0.01)
