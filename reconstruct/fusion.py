"""Depth fusion and the visual hull.

- `carve_visual_hull(views)`: shape from silhouettes. A voxel grid around the scene is projected
  into every view that has a mask (through its real, distorted camera); a voxel survives unless
  some view sees its centre outside the mask (dilated by the voxel's projected radius, so the
  hull contains every voxel the surface touches), and it must be seen by two masked views. A
  coarse pass finds the head's box, a fine pass carves it. `VisualHull.depth_bounds(view)`
  marches each pixel's ray through the hull: the entry and exit depths bound the stereo search
  (headcap.reconstruct.mvs); `VisualHull.surface()` is the fallback mesh when stereo fails.
- `fuse_depth_maps(views, maps)`: geometric consistency across views. Each depth pixel of each
  view is back-projected, projected into every other view and compared with that view's depth
  there; a point is kept when at least `min_consistent` other views agree within
  `depth_tolerance` (relative) and their normals within `normal_angle_deg`. Kept points are
  averaged along each agreeing view's ray, merged on a `merge_voxel` grid (confidence-weighted)
  and returned with normals (world, outward), confidence (0..1) and colour. The per-view masks of
  consistent pixels feed the TSDF (headcap.reconstruct.surface).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headcap.reconstruct.mvs import DepthMap, View, scene_centre

__all__ = ["HullConfig", "FusionConfig", "VisualHull", "FusedPoints", "carve_visual_hull", "fuse_depth_maps",
           "merge_points", "backproject"]


@dataclass(frozen=True)
class HullConfig:
    voxel: float = 0.003
    """Voxel size of the fine visual hull (metres)."""
    coarse_voxel: float = 0.01
    """Voxel size of the first pass that finds the head's box (metres)."""
    radius: float = 0.2
    """Half-size of the box around the scene centre (the point nearest every optical axis) that
    is carved (metres): a front-facing rig cannot carve behind the head."""
    min_views: int = 2
    """Masked views that must see a voxel for it to be kept."""


@dataclass(frozen=True)
class FusionConfig:
    min_consistent: int = 2
    """Other views whose depth must agree with a pixel's for it to be kept."""
    depth_tolerance: float = 0.003
    """Relative depth difference (of the camera z) under which two views agree."""
    normal_angle_deg: float = 60.0
    """Largest angle between two views' normals that still agree."""
    merge_voxel: float = 0.0005
    """Points closer than this grid (metres) are merged into one (confidence-weighted mean)."""


@dataclass
class VisualHull:
    """occupancy: [nz, ny, nx] float32 (1 inside); origin: world position of voxel (0, 0, 0)'s
    centre [3]; voxel: edge length (metres)."""

    occupancy: Tensor
    origin: np.ndarray
    voxel: float
    masked_views: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.occupancy.shape)

    def contains(self, points) -> np.ndarray:
        """Whether world points [N, 3] lie in an occupied voxel (nearest voxel centre)."""
        p = np.asarray(points, dtype=np.float64)
        idx = np.round((p - self.origin) / self.voxel).astype(np.int64)  # x, y, z
        nz, ny, nx = self.shape
        ok = (idx >= 0).all(1) & (idx[:, 0] < nx) & (idx[:, 1] < ny) & (idx[:, 2] < nz)
        out = np.zeros(len(p), dtype=bool)
        occ = self.occupancy.numpy()
        out[ok] = occ[idx[ok, 2], idx[ok, 1], idx[ok, 0]] > 0.5
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World box (min, max corners) of the occupied voxels, [3] each."""
        occ = self.occupancy.numpy() > 0.5
        if not occ.any():
            raise ValueError("visual hull: empty (the masks share no volume)")
        zz, yy, xx = np.nonzero(occ)
        lo = self.origin + self.voxel * (np.array([xx.min(), yy.min(), zz.min()]) - 0.5)
        hi = self.origin + self.voxel * (np.array([xx.max(), yy.max(), zz.max()]) + 0.5)
        return lo, hi

    def _sample(self, points: Tensor) -> Tensor:
        """Trilinear occupancy at world points [N, 3] (0 outside the grid)."""
        nz, ny, nx = self.shape
        g = (points - torch.as_tensor(self.origin, dtype=points.dtype)) / self.voxel
        size = torch.tensor([nx - 1, ny - 1, nz - 1], dtype=points.dtype).clamp_min(1)
        grid = (2 * g / size - 1).float()
        return F.grid_sample(self.occupancy[None, None], grid[None, None, None], mode="bilinear",
                             padding_mode="zeros", align_corners=True)[0, 0, 0, 0]

    def depth_bounds(self, view: View, margin: float | None = None, stride: int = 4,
                     chunk: int = 8192) -> tuple[Tensor, Tensor]:
        """Per-pixel (near, far) camera depths [H, W] float32 where the pixel's ray (of the
        undistorted pinhole view) is inside the hull, widened by `margin` (default 2 voxels);
        far <= near (both 0) where the ray misses the hull or the pixel is outside the view's mask.
        Rays are marched every `stride` pixels; each pixel takes the widest bounds of the marched
        rays around it."""
        margin = 2 * self.voxel if margin is None else margin
        H, W = view.height, view.width
        hs, ws = -(-H // stride), -(-W // stride)
        near_s, far_s = self._march(view, margin, stride, hs, ws, chunk)
        big = torch.where(far_s > near_s, near_s, torch.full_like(near_s, 1e6))
        near_s = -F.max_pool2d(-big[None, None], 3, stride=1, padding=1)[0, 0]
        far_s = F.max_pool2d(far_s[None, None], 3, stride=1, padding=1)[0, 0]
        near = near_s.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:H, :W]
        far = far_s.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:H, :W]
        ok = far > near
        if view.mask is not None:
            ok &= view.mask
        return torch.where(ok, near, torch.zeros_like(near)), torch.where(ok, far, torch.zeros_like(far))

    def _march(self, view: View, margin: float, stride: int, H: int, W: int, chunk: int) -> tuple[Tensor, Tensor]:
        near = torch.zeros(H * W)
        far = torch.zeros(H * W)
        idx = torch.arange(H * W)
        K = view.K
        world_from_cam = torch.linalg.inv(view.cam_from_world)
        R, c = world_from_cam[:3, :3], world_from_cam[:3, 3]
        lo, hi = self.bounds()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        zc = (np.asarray(view.camera.cam_from_world)[:3, :3] @ corners.T).T[:, 2] + view.camera.cam_from_world[2, 3]
        z0, z1 = max(float(zc.min()), 1e-3), float(zc.max())
        step = self.voxel / 2
        zs = torch.arange(z0, z1 + step, step, dtype=torch.float64)
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            u = (sel % W).double() * stride + (stride - 1) / 2
            v = torch.div(sel, W, rounding_mode="floor").double() * stride + (stride - 1) / 2
            yn = (v - K[1, 2]) / K[1, 1]
            xn = (u - K[0, 2] - K[0, 1] * yn) / K[0, 0]
            d_cam = torch.stack([xn, yn, torch.ones_like(xn)], -1)  # point at z = 1
            d_world = d_cam @ R.T
            pts = c[None, None] + zs[None, :, None] * d_world[:, None]  # [n, S, 3]
            occ = self._sample(pts.reshape(-1, 3)).reshape(len(sel), len(zs)) > 0.5
            hit = occ.any(1)
            first = torch.argmax(occ.int(), 1)
            last = len(zs) - 1 - torch.argmax(occ.flip(1).int(), 1)
            n_ = torch.where(hit, zs[first] - margin, torch.zeros_like(zs[first]))
            f_ = torch.where(hit, zs[last] + margin, torch.zeros_like(zs[last]))
            near[sel] = n_.float().clamp_min(0)
            far[sel] = f_.float()
        return near.reshape(H, W), far.reshape(H, W)

    def surface(self, smooth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The hull's boundary as a triangle mesh (vertices [N, 3] world, faces [F, 3], outward)."""
        from scipy.ndimage import gaussian_filter
        from skimage.measure import marching_cubes

        occ = np.pad(self.occupancy.numpy().astype(np.float32), 1)
        if smooth > 0:
            occ = gaussian_filter(occ, smooth)
        verts, faces, _, _ = marching_cubes(occ, level=0.5)
        # marching_cubes returns (z, y, x) index coordinates of the padded grid
        world = self.origin + self.voxel * (verts[:, ::-1] - 1)
        return world, _outward(world, faces[:, ::-1].copy())


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces wound so the enclosed volume is positive (normals point out of a closed surface)."""
    if len(faces) == 0:
        return faces
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum()
    return faces if volume >= 0 else faces[:, ::-1].copy()


def _carve(points: Tensor, views: list[View], voxel: float, min_views: int) -> Tensor:
    """Which world points [N, 3] survive carving (bool [N])."""
    import cv2

    keep = torch.ones(len(points), dtype=torch.bool)
    seen = torch.zeros(len(points), dtype=torch.int32)
    for v in views:
        if v.mask_raw is None:
            continue
        cam = v.camera
        pix, depth = cam.project(points, dtype=torch.float32)
        radius = math.ceil(0.87 * voxel * cam.K[0, 0] / max(float(depth[depth > 0].min()) if (depth > 0).any() else 1.0,
                                                             1e-3)) + 1
        mask = cv2.dilate(v.mask_raw.astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
        u = torch.round(pix[:, 0]).long()
        w = torch.round(pix[:, 1]).long()
        inside = (depth > 0) & (u >= 0) & (u < cam.width) & (w >= 0) & (w < cam.height)
        m = torch.from_numpy(mask.astype(bool))
        on = torch.zeros_like(inside)
        on[inside] = m[w[inside], u[inside]]
        keep &= ~inside | on
        seen += inside.int()
    return keep & (seen >= min_views)


def _grid(lo: np.ndarray, hi: np.ndarray, voxel: float) -> tuple[np.ndarray, tuple[int, int, int], Tensor]:
    n = np.maximum(np.ceil((hi - lo) / voxel).astype(int) + 1, 2)
    axes = [torch.arange(n[i], dtype=torch.float64) * voxel + lo[i] for i in range(3)]
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
    return lo.copy(), (int(n[2]), int(n[1]), int(n[0])), pts


def carve_visual_hull(views: list[View], config: HullConfig = HullConfig()) -> VisualHull:
    """The visual hull of the views that have masks (see the module docstring)."""
    masked = [v for v in views if v.mask_raw is not None]
    if len(masked) < config.min_views:
        raise ValueError(f"visual hull: {len(masked)} view(s) have a mask, {config.min_views} are needed")
    cams = [v.camera for v in views]
    centre = scene_centre(cams)
    extent = min(c.width / c.K[0, 0] * float(np.linalg.norm(c.centre - centre)) for c in cams)
    half = min(0.75 * extent, config.radius)
    lo, hi = centre - half, centre + half
    origin, shape, pts = _grid(lo, hi, config.coarse_voxel)
    occ = _carve(pts, masked, config.coarse_voxel, config.min_views).reshape(shape)
    coarse = VisualHull(occ.float(), origin, config.coarse_voxel, len(masked))
    lo, hi = coarse.bounds()
    lo, hi = lo - config.coarse_voxel, hi + config.coarse_voxel
    # fine voxels are carved only where the (dilated) coarse hull is occupied
    from scipy.ndimage import binary_dilation

    coarse.occupancy = torch.from_numpy(binary_dilation(occ.numpy(), iterations=1).astype(np.float32))
    origin, shape, pts = _grid(lo, hi, config.voxel)
    candidates = torch.from_numpy(coarse.contains(pts.numpy()))
    idx = torch.nonzero(candidates)[:, 0]
    keep = torch.zeros(len(pts), dtype=torch.bool)
    chunk = 1 << 20
    for s in range(0, len(idx), chunk):
        sel = idx[s:s + chunk]
        keep[sel] = _carve(pts[sel], masked, config.voxel, config.min_views)
    return VisualHull(keep.reshape(shape).float(), origin, config.voxel, len(masked))


def backproject(depth: Tensor, K: Tensor, cam_from_world: Tensor) -> tuple[Tensor, Tensor]:
    """World points [H*W, 3] (float64) of a pinhole depth map [H, W], and the valid flags [H*W]."""
    H, W = depth.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    yn = (ys - K[1, 2]) / K[1, 1]
    xn = (xs - K[0, 2] - K[0, 1] * yn) / K[0, 0]
    d = depth.double()
    p_cam = torch.stack([xn * d, yn * d, d], -1).reshape(-1, 3)
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    return (p_cam - t) @ R, (depth > 0).reshape(-1)


@dataclass
class FusedPoints:
    """points [N, 3] world metres, normals [N, 3] (unit, outward), confidence [N] in [0, 1],
    colors [N, 3] uint8; consistent: per view, the [H, W] bool mask of its depth pixels that
    passed the check (for the TSDF); coverage: fraction of masked pixels with a kept depth."""

    points: np.ndarray
    normals: np.ndarray
    confidence: np.ndarray
    colors: np.ndarray
    consistent: dict[str, Tensor]
    coverage: float


def fuse_depth_maps(views: list[View], maps: list[DepthMap], config: FusionConfig = FusionConfig()) -> FusedPoints:
    """Geometric-consistency fusion of per-view depth maps (see the module docstring)."""
    by_id = {m.view: m for m in maps}
    cos_max = math.cos(math.radians(config.normal_angle_deg))
    all_p, all_n, all_c, all_rgb = [], [], [], []
    consistent: dict[str, Tensor] = {}
    covered = total = 0
    for v in views:
        m = by_id.get(v.id)
        if m is None:
            continue
        H, W = m.depth.shape
        total += int(v.mask.sum()) if v.mask is not None else int((m.depth > 0).sum())
        X, valid = backproject(m.depth, v.K, v.cam_from_world)
        idx = torch.nonzero(valid)[:, 0]
        if len(idx) == 0:
            consistent[v.id] = torch.zeros(H, W, dtype=torch.bool)
            continue
        X = X[idx]
        R_ref = v.cam_from_world[:3, :3]
        n_world = (m.normals.reshape(-1, 3)[idx].double()) @ R_ref  # camera -> world
        count = torch.zeros(len(idx), dtype=torch.int32)
        acc = X.clone()
        acc_n = n_world.clone()
        for o in views:
            mo = by_id.get(o.id)
            if o is v or mo is None:
                continue
            T = o.cam_from_world
            p = X @ T[:3, :3].T + T[:3, 3]
            z = p[:, 2]
            Ko = o.K
            zs = torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
            xn, yn = p[:, 0] / zs, p[:, 1] / zs
            u = torch.round(Ko[0, 0] * xn + Ko[0, 1] * yn + Ko[0, 2]).long()
            w = torch.round(Ko[1, 1] * yn + Ko[1, 2]).long()
            inside = (z > 1e-6) & (u >= 0) & (u < o.width) & (w >= 0) & (w < o.height)
            d_obs = torch.zeros_like(z)
            d_obs[inside] = mo.depth[w[inside], u[inside]].double()
            n_obs = torch.zeros_like(X)
            n_obs[inside] = mo.normals[w[inside], u[inside]].double() @ T[:3, :3]
            agree = inside & (d_obs > 0) & ((d_obs - z).abs() < config.depth_tolerance * z)
            agree &= (n_obs * n_world).sum(-1) > cos_max
            count += agree.int()
            # move the point along the other view's ray to that view's depth
            moved = X + (p * ((d_obs / zs - 1))[:, None]) @ T[:3, :3]
            acc[agree] += moved[agree]
            acc_n[agree] += n_obs[agree]
        keep = count >= config.min_consistent
        mask = torch.zeros(H * W, dtype=torch.bool)
        mask[idx[keep]] = True
        consistent[v.id] = mask.reshape(H, W)
        covered += int(keep.sum())
        if keep.any():
            pts = acc[keep] / (count[keep] + 1)[:, None].double()
            nrm = acc_n[keep]
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            conf = m.confidence.reshape(-1)[idx[keep]].double() * (count[keep].double() / max(len(views) - 1, 1)).clamp(max=1) ** 0.5
            rgb = torch.from_numpy(v.rgb.reshape(-1, 3))[idx[keep]]
            all_p.append(pts.numpy()); all_n.append(nrm.numpy()); all_c.append(conf.numpy()); all_rgb.append(rgb.numpy())
    if not all_p:
        return FusedPoints(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3), np.uint8), consistent, 0.0)
    points, normals, conf, rgb = merge_points(np.concatenate(all_p), np.concatenate(all_n), np.concatenate(all_c),
                                              np.concatenate(all_rgb), config.merge_voxel)
    return FusedPoints(points, normals, conf, rgb, consistent, covered / max(total, 1))


def merge_points(points: np.ndarray, normals: np.ndarray, confidence: np.ndarray, colors: np.ndarray,
                 voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points merged on a `voxel` grid: confidence-weighted mean position, normal and colour;
    the merged confidence is the largest of the cell's."""
    if len(points) == 0 or voxel <= 0:
        return points, normals, confidence, colors
    keys = np.floor(points / voxel).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = inverse.max() + 1
    w = np.maximum(confidence, 1e-6)
    wsum = np.bincount(inverse, w, n)

    def mean(values):
        return np.stack([np.bincount(inverse, w * values[:, i], n) for i in range(values.shape[1])], 1) / wsum[:, None]

    p = mean(points)
    nr = mean(normals)
    nr /= np.maximum(np.linalg.norm(nr, axis=1, keepdims=True), 1e-12)
    col = np.clip(np.round(mean(colors.astype(np.float64))), 0, 255).astype(np.uint8)
    conf = np.zeros(n)
    np.maximum.at(conf, inverse, confidence)
    return p, nr, conf, col
