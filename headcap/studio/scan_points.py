"""Synthetic per-frame geometry from ground-truth meshes: what a multi-view stereo stage would
hand to registration, with its faults made to order (tests and benchmarks of registration).

    synthetic_scan(vertices, faces, camera_centres, rng, ...) -> ScanPoints
    posed_frames(model, expressions, seed) -> (vertices [T, V, 3], world_from_head [T, 4, 4])

Points are sampled on the triangles with probability proportional to area (a target spacing
sets the count), kept where the surface faces at least one camera (a partial view; no
occlusion test), displaced by Gaussian noise, cut by spherical holes, and joined by uniform
outliers in the bounding box. Normals are the true face normals, tilted by noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScanPoints", "synthetic_scan", "sample_surface", "points_per_pixel_spacing", "posed_frames"]


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


def posed_frames(model, expressions: list[dict[str, float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth meshes of a head model (reconstruct.head_model.HeadModel) for registration
    tests and benchmarks: one seeded identity (N(0, 0.5^2) clipped to +-2), frame t with the
    expression weights `expressions[t]` (ARKit names; a name the model splits into halves, such
    as ICT's browInnerUpLeft/Right, sets both; a name the model lacks otherwise is left out), eyes
    turned a little (joints named 'eye'), and a seeded head pose (yaw +-0.2, pitch +-0.1,
    roll +-0.05 rad, +-1 cm).

    Returns vertices [T, V, 3] float64 world metres and world_from_head [T, 4, 4] float64."""
    import torch

    from headcap.studio.motion import euler_to_matrix

    rng = np.random.default_rng(seed)
    T = len(expressions)
    names = list(model.expression_names)
    ident = torch.from_numpy(np.clip(rng.normal(0, 0.5, model.num_identity), -2, 2)).float()
    expr = torch.zeros(T, model.num_expression)
    for t, values in enumerate(expressions):
        for name, value in values.items():
            for target in ([name] if name in names else [name + "Left", name + "Right"]):
                if target in names:
                    expr[t, names.index(target)] = value
    world = np.tile(np.eye(4), (T, 1, 1))
    world[:, :3, :3] = euler_to_matrix(rng.uniform(-0.2, 0.2, T), rng.uniform(-0.1, 0.1, T),
                                       rng.uniform(-0.05, 0.05, T))
    world[:, :3, 3] = rng.uniform(-0.01, 0.01, (T, 3))
    joints = torch.zeros(T, model.num_joints, 3)
    for j, name in enumerate(model.joint_names):
        if "eye" in name:
            joints[:, j, :2] = torch.tensor([0.05, -0.1])
    with torch.no_grad():
        out = model.forward(identity=ident[None].expand(T, -1), expression=expr, joint_rotations=joints,
                            world_from_head=torch.from_numpy(world).float())
    return out.vertices.double().numpy(), world
