"""CUDA rendering through gsplat (optional extra `headcap[cuda]`), adapted to headcap's API.

Differences from the CPU kernel and the reference, which users see as small image differences:
gsplat bins with a 3.33-sigma radius rather than the exact alpha >= 1/255 footprint (a
Gaussian's faint skirt beyond 3.33 sigma is dropped), and it samples pixel i at x = i + 0.5, so
K's principal point is shifted by +0.5 px before the call. `means2d` is gsplat's own (1, N, 2)
tensor (gsplat pixel convention, i.e. ours + 0.5) so that its .grad, which densification reads,
is populated by gsplat's backward.
This path needs a CUDA GPU; it is not exercised on CPU-only CI.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .raster_output import RasterOutput
from .sh import sh_degree_from_coeffs


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                     colors: Tensor | None, sh_coeffs: Tensor | None, K: Tensor,
                     cam_from_world: Tensor, width: int, height: int, background: Tensor,
                     near: float, far: float, eps2d: float):
    """Same contract as rasterize_gaussians (CUDA tensors); returns a RasterOutput."""
    import gsplat

    k_gsplat = K.clone()
    k_gsplat[0, 2] += 0.5
    k_gsplat[1, 2] += 0.5
    if colors is not None:
        feats, sh_degree, channels = colors, None, colors.shape[1]
    else:
        feats, sh_degree, channels = sh_coeffs, sh_degree_from_coeffs(sh_coeffs.shape[1]), 3
    render, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, feats, cam_from_world[None], k_gsplat[None], width,
        height, near_plane=near, far_plane=far, eps2d=eps2d, sh_degree=sh_degree, packed=False,
        backgrounds=None, render_mode="RGB+ED")
    alpha = alphas[0, ..., 0]
    rgb = render[0, ..., :channels] + (1.0 - alpha)[..., None] * background
    depth = torch.where(alpha > 1e-10, render[0, ..., channels], torch.zeros_like(alpha))
    radii = meta["radii"][0].to(torch.int32)
    if radii.dim() == 1:
        radii = radii[:, None].expand(-1, 2)
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    return RasterOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=means2d,
                        radii=radii, visible=(radii > 0).all(dim=-1), backend="gsplat")
