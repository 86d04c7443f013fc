"""A surface from the fused geometry: our own truncated signed distance fusion (TSDF) of the
consistent depth pixels, then marching cubes (scikit-image), and point-to-mesh distances for the
error metrics.

TSDF: voxels of `voxel` metres in a band of `truncation` around the fused points. Each view
projects the band's voxel centres into its (undistorted, pinhole) depth map; where the pixel
holds a consistent depth d and the voxel's camera depth z satisfies d - z > -truncation, the view
adds sdf = clip((d - z) / truncation, -1, 1) (positive in front of the surface) with weight = the
pixel's confidence. The zero level set of the weighted mean, restricted to voxels with weight,
is extracted by `skimage.measure.marching_cubes` and kept as the largest connected pieces.
No Poisson: the screened Poisson solvers with a CPU wheel come with Open3D (1.1 GB) or pymeshlab;
the TSDF needs only the depth maps we already have.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from headcap.reconstruct.mvs import DepthMap, View

__all__ = ["SurfaceConfig", "tsdf_surface", "distance_to_mesh", "vertex_normals", "keep_large_components"]


@dataclass(frozen=True)
class SurfaceConfig:
    voxel: float = 0.001
    """TSDF voxel size (metres)."""
    truncation: float = 0.004
    """TSDF truncation distance (metres)."""
    min_weight: float = 1.0
    """Summed weight (confidence x cos(normal, ray) over the views) a voxel needs to take part in
    the surface: higher is more accurate and less complete (docs/reconstruct.md)."""
    min_component: float = 0.02
    """Connected pieces with fewer than this fraction of the largest piece's faces are dropped."""


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [N, 3]."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(n, faces[:, i], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def keep_large_components(vertices: np.ndarray, faces: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop connected pieces (by shared vertices) smaller than min_fraction of the largest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return vertices, faces
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    face_label = label[faces[:, 0]]
    sizes = np.bincount(face_label)
    big = sizes >= min_fraction * sizes.max()
    faces = faces[big[face_label]]
    used = np.unique(faces)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def tsdf_surface(views: list[View], maps: list[DepthMap], points: np.ndarray,
                 consistent: dict[str, Tensor] | None = None,
                 config: SurfaceConfig = SurfaceConfig()) -> tuple[np.ndarray, np.ndarray]:
    """A triangle mesh (vertices [N, 3] world, faces [F, 3], normals facing the cameras) fused
    from the depth maps (only the `consistent` pixels when given) in a band around `points`."""
    from scipy.ndimage import binary_dilation
    from skimage.measure import marching_cubes

    if len(points) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vox, trunc = config.voxel, config.truncation
    pad = trunc + 2 * vox
    lo = points.min(0) - pad
    hi = points.max(0) + pad
    shape = tuple(np.ceil((hi - lo) / vox).astype(int) + 1)  # x, y, z
    idx = np.floor((points - lo) / vox + 0.5).astype(np.int64)
    near = np.zeros(shape[::-1], dtype=bool)  # [z, y, x]
    near[idx[:, 2], idx[:, 1], idx[:, 0]] = True
    radius = int(np.ceil(trunc / vox)) + 1
    near = binary_dilation(near, iterations=radius)
    zz, yy, xx = np.nonzero(near)
    centres = torch.from_numpy(lo + vox * np.stack([xx, yy, zz], 1).astype(np.float64))
    sdf_sum = torch.zeros(len(centres), dtype=torch.float64)
    w_sum = torch.zeros(len(centres), dtype=torch.float64)
    by_id = {m.view: m for m in maps}
    for v in views:
        m = by_id.get(v.id)
        if m is None:
            continue
        depth = m.depth.double()
        if consistent is not None and v.id in consistent:
            depth = torch.where(consistent[v.id], depth, torch.zeros_like(depth))
        conf = m.confidence.double()
        T, K = v.cam_from_world, v.K
        p = centres @ T[:3, :3].T + T[:3, 3]
        z = p[:, 2]
        zs = torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
        xn, yn = p[:, 0] / zs, p[:, 1] / zs
        u = torch.round(K[0, 0] * xn + K[0, 1] * yn + K[0, 2]).long()
        w = torch.round(K[1, 1] * yn + K[1, 2]).long()
        inside = (z > 1e-6) & (u >= 0) & (u < v.width) & (w >= 0) & (w < v.height)
        d = torch.zeros_like(z)
        c = torch.zeros_like(z)
        d[inside] = depth[w[inside], u[inside]]
        c[inside] = conf[w[inside], u[inside]]
        # grazing views measure depth worst: weight by the cosine between normal and ray
        n_cam = torch.zeros_like(p)
        n_cam[inside] = m.normals[w[inside], u[inside]].double()
        cos = (-(n_cam * p).sum(-1) / p.norm(dim=-1).clamp_min(1e-9)).clamp(0, 1)
        c = c * cos
        sdf = d - z
        use = inside & (d > 0) & (sdf > -trunc)
        sdf_sum[use] += (sdf[use] / trunc).clamp(-1, 1) * c[use]
        w_sum[use] += c[use]
    tsdf = np.ones(near.shape, dtype=np.float32)
    weight = np.zeros(near.shape, dtype=np.float32)
    ok = w_sum > 0
    vals = torch.where(ok, sdf_sum / w_sum.clamp_min(1e-12), torch.ones_like(sdf_sum))
    tsdf[zz, yy, xx] = vals.numpy().astype(np.float32)
    weight[zz, yy, xx] = w_sum.numpy().astype(np.float32)
    valid = weight >= config.min_weight
    # a cube is meshed only when all eight corners hold a fused value (an unobserved corner
    # would make a false zero crossing at the band's edge)
    cube = valid.copy()
    cube[-1, :, :] = cube[:, -1, :] = cube[:, :, -1] = False
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                cube[:-1, :-1, :-1] &= valid[dz:dz + valid.shape[0] - 1, dy:dy + valid.shape[1] - 1,
                                             dx:dx + valid.shape[2] - 1]
    if not cube.any() or tsdf[valid].min() > 0 or tsdf[valid].max() < 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    verts, faces, _, _ = marching_cubes(tsdf, level=0.0, mask=cube, allow_degenerate=False)
    world = lo + vox * verts[:, ::-1]
    faces = faces[:, ::-1].astype(np.int64)
    world, faces = keep_large_components(world, faces, config.min_component)
    if len(faces):
        # orient: the normals must face the cameras (positive sdf side)
        normals = vertex_normals(world, faces)
        centre_cams = np.mean([v.camera.centre for v in views], axis=0)
        if np.mean(np.sum(normals * (centre_cams - world), 1) > 0) < 0.5:
            faces = faces[:, ::-1].copy()
    return world, faces


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 16) -> np.ndarray:
    """Euclidean distance of every point [N, 3] to a triangle mesh (exact point-triangle distance
    over the `candidates` triangles whose centroids are nearest; exact when triangles are small
    next to their spacing, an upper bound otherwise)."""
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.zeros(0)
    tri = vertices[faces]  # [F, 3, 3]
    tree = cKDTree(tri.mean(1))
    k = min(candidates, len(faces))
    _, cand = tree.query(points, k=k)
    cand = cand.reshape(len(points), k)
    best = np.full(len(points), np.inf)
    for j in range(k):
        t = tri[cand[:, j]]
        best = np.minimum(best, _point_triangle_distance(points, t[:, 0], t[:, 1], t[:, 2]))
    return best


def _point_triangle_distance(p, a, b, c) -> np.ndarray:
    """Distance from points p [N, 3] to triangles (a, b, c) [N, 3] each."""
    from headcap.reconstruct.registration_fit import closest_on_triangles

    bary = closest_on_triangles(p, a, b, c)
    closest = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    return np.linalg.norm(p - closest, axis=1)
