"""Synthetic per-frame geometry from ground-truth meshes: what a multi-view stereo stage would
hand to registration, with its faults made to order (tests and benchmarks of registration).

    synthetic_scan(vertices, faces, camera_centres, rng, ...) -> ScanPoints

Points are sampled on the triangles with probability proportional to area (a target spacing
sets the count), kept where the surface faces at least one camera (a partial view; no
occlusion test), displaced by Gaussian noise, cut by spherical holes, and joined by uniform
outliers in the bounding box. Normals are the true face normals, tilted by noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScanPoints", "synthetic_scan", "sample_surface", "points_per_pixel_spacing"]


@dataclass
class ScanPoints:
    points: np.ndarray      # [N, 3]
    normals: np.ndarray     # [N, 3]
    confidence: np.ndarray  # [N]
    outlier: np.ndarray     # [N] bool (ground truth: not on the surface)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator):
    """Area-weighted uniform samples: points [count, 3], unit face normals [count, 3]."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / np.maximum(2 * area[face, None], 1e-20)
    return points, normals


def points_per_pixel_spacing(distance_m: float, focal_px: float) -> float:
    """Surface spacing (m) of one pixel at `distance_m` for a focal length in pixels."""
    return distance_m / focal_px


def synthetic_scan(vertices: np.ndarray, faces: np.ndarray, camera_centres: np.ndarray, rng: np.random.Generator,
                   spacing: float = 0.001, noise: float = 0.0002, normal_noise: float = 0.05, holes: int = 3,
                   hole_radius: float = 0.01, outliers: float = 0.01, min_facing: float = 0.2) -> ScanPoints:
    """vertices [V, 3] world metres, faces [F, 3] (the surface to sample), camera_centres [C, 3]."""
    vertices = np.asarray(vertices, np.float64)
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    count = int(area / spacing ** 2)
    points, normals = sample_surface(vertices, faces, count, rng)
    to_cam = camera_centres[None] - points[:, None]
    to_cam /= np.linalg.norm(to_cam, axis=-1, keepdims=True)
    seen = (np.einsum("nc,nkc->nk", normals, to_cam) > min_facing).any(1)
    points, normals = points[seen], normals[seen]
    if holes > 0 and len(points):
        centres = points[rng.choice(len(points), holes, replace=False)]
        far = np.all(np.linalg.norm(points[:, None] - centres[None], axis=-1) > hole_radius, axis=1)
        points, normals = points[far], normals[far]
    n = len(points)
    points = points + normals * rng.normal(0, noise, (n, 1)) + rng.normal(0, noise * 0.5, (n, 3))
    normals = normals + rng.normal(0, normal_noise, (n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    confidence = rng.uniform(0.5, 1.0, n)
    k = int(round(outliers * n))
    lo, hi = points.min(0) - 0.02, points.max(0) + 0.02
    out_p = rng.uniform(lo, hi, (k, 3))
    out_n = rng.normal(size=(k, 3))
    out_n /= np.linalg.norm(out_n, axis=1, keepdims=True)
    return ScanPoints(np.concatenate([points, out_p]), np.concatenate([normals, out_n]),
                      np.concatenate([confidence, rng.uniform(0.2, 1.0, k)]),
                      np.concatenate([np.zeros(n, bool), np.ones(k, bool)]))
