"""EWA projection of 3D Gaussians to screen-space conics (pure torch, differentiable, fp64-capable).

Conventions: OpenCV camera axes, `K` with pixel centres at integer coordinates (pixel column i
is sampled at x = i). gsplat samples pixel i at x = i + 0.5, so gsplat's means2d for a camera
`K'` with cx' = cx + 0.5, cy' = cy + 0.5 equal ours + 0.5 (see docs/gaussians.md).

Footprint: a Gaussian contributes to a pixel only where its alpha = o * exp(-d^T S^-1 d / 2)
reaches 1/255. That region is the ellipse d^T S^-1 d <= 2 ln(255 o), whose axis-aligned half
extents are sqrt(2 ln(255 o) * S_xx) and sqrt(2 ln(255 o) * S_yy). These opacity-aware extents
are exact, so tile binning never changes the image (unlike gsplat's fixed 3-sigma radius).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_ALPHA = 1.0 / 255.0
# Float rounding of exp() near the 1/255 cut must never put a contributing pixel outside the
# extent, so the binning extent is padded slightly.
_EXTENT_PAD_REL = 1e-3
_EXTENT_PAD_ABS = 1e-2


@dataclass
class ProjectedGaussians:
    """Screen-space Gaussians for one camera (N Gaussians).

    means2d: (N, 2) pixel centres (x right, y down; pixel i centre at i).
    conics: (N, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]] after the low-pass filter.
    cov2d: (N, 2, 2) 2D covariance after the low-pass filter.
    depths: (N,) camera-space z, used for sorting and depth rendering.
    extents: (N, 2) float half extents of the alpha >= 1/255 footprint in pixels, 0 if culled.
    radii: (N, 2) int32 ceil(extents), 0 if culled.
    """

    means2d: Tensor
    conics: Tensor
    cov2d: Tensor
    depths: Tensor
    extents: Tensor
    radii: Tensor


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N, 4) quaternions (w, x, y, z), any norm -> (N, 3, 3) rotation matrices."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance R S S^T R^T. quats (N, 4) wxyz, scales (N, 3) linear -> (N, 3, 3)."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                      K: Tensor, cam_from_world: Tensor, width: int, height: int,
                      near: float = 0.01, far: float = 1e10,
                      eps2d: float = 0.3) -> ProjectedGaussians:
    """Project world Gaussians with the EWA splatting approximation.

    means (N, 3), quats (N, 4) wxyz, scales (N, 3) linear, opacities (N,) in [0, 1],
    K (3, 3), cam_from_world (4, 4). Gaussians with z outside (near, far), opacity below 1/255,
    a degenerate 2D covariance or a footprint outside the image get extents/radii 0.
    """
    R = cam_from_world[:3, :3]
    t = cam_from_world[:3, 3]
    p_cam = means @ R.T + t
    cov_cam = R @ quat_scale_to_covar(quats, scales) @ R.T

    x, y, z = p_cam.unbind(-1)
    in_depth = (z > near) & (z < far)
    # Culled Gaussians still go through the algebra: keep it finite so no NaN reaches autograd.
    zs = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = K[0, 0], K[1, 1]
    skew, cx, cy = K[0, 1], K[0, 2], K[1, 2]
    u, v = x / zs, y / zs
    means2d = torch.stack([fx * u + skew * v + cx, fy * v + cy], dim=-1)

    # The Jacobian is evaluated at a direction clamped to 1.3x the field of view (as 3DGS and
    # gsplat do): near-grazing Gaussians off screen would otherwise get huge, unstable footprints.
    # The image spans [-0.5, W - 0.5] with integer pixel centres.
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - 0.5 - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = (cx + 0.5) / fx + 0.3 * tan_fovx
    lim_y_pos = (height - 0.5 - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = (cy + 0.5) / fy + 0.3 * tan_fovy
    uc = torch.maximum(torch.minimum(u, lim_x_pos), -lim_x_neg)
    vc = torch.maximum(torch.minimum(v, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, skew / zs, -(fx * uc + skew * vc) / zs,
                     zero, fy / zs, -fy * vc / zs], dim=-1).reshape(-1, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    sxx, sxy, syy = cov2d[:, 0, 0], 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0]), cov2d[:, 1, 1]
    det = sxx * syy - sxy * sxy
    ok_det = det > 0
    det_s = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([syy / det_s, -sxy / det_s, sxx / det_s], dim=-1)

    with torch.no_grad():
        op = opacities.detach()
        level = 2.0 * torch.log((op * 255.0).clamp_min(1.0))
        ext_x = torch.sqrt((level * sxx.detach()).clamp_min(0.0))
        ext_y = torch.sqrt((level * syy.detach()).clamp_min(0.0))
        extents = torch.stack([ext_x, ext_y], dim=-1) * (1.0 + _EXTENT_PAD_REL) + _EXTENT_PAD_ABS
        mx, my = means2d.detach().unbind(-1)
        on_screen = ((mx + extents[:, 0] >= 0) & (mx - extents[:, 0] <= width - 1)
                     & (my + extents[:, 1] >= 0) & (my - extents[:, 1] <= height - 1))
        keep = (in_depth & ok_det & (op >= MIN_ALPHA) & on_screen
                & torch.isfinite(extents).all(dim=-1))
        extents = torch.where(keep[:, None], extents, torch.zeros_like(extents))
        radii = torch.ceil(extents).to(torch.int32)
    return ProjectedGaussians(means2d=means2d, conics=conics, cov2d=cov2d, depths=z,
                              extents=extents, radii=radii)


def camera_center(cam_from_world: Tensor) -> Tensor:
    """World position of the camera centre, (3,)."""
    R = cam_from_world[:3, :3]
    return -(R.T @ cam_from_world[:3, 3])

