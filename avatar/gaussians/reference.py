"""Pure-torch Gaussian compositing: the specification every backend is tested against.

For each pixel p (centre at integer coordinates) and the Gaussians sorted front to back by
camera depth (ties by index):

    power_i = -0.5 (a dx^2 + c dy^2) - b dx dy,   dx = p_x - mean_x, dy = p_y - mean_y
    alpha_i = min(0.999, o_i exp(power_i)), skipped when power_i > 0 or alpha_i < 1/255
    T_i     = prod_{j<i} (1 - alpha_j)                   (skipped Gaussians count as alpha = 0)
    Gaussian i is used while T_i (1 - alpha_i) > 1e-4    (early termination)
    out     = sum_used f_i alpha_i T_i,  alpha_out = 1 - prod_used (1 - alpha_i)

Autograd through these expressions gives the gradients. Fully differentiable and fp64-capable.
`chunk` splits the image into square blocks and keeps only the Gaussians whose footprint
(`extents`) reaches each block, so large scenes fit in memory; `checkpoint=True` recomputes each
block in the backward pass instead of storing it.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

MAX_ALPHA = 0.999
MIN_ALPHA = 1.0 / 255.0
MIN_TRANSMITTANCE = 1e-4


def composite_pixels(px: Tensor, py: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor,
                     feats: Tensor) -> tuple[Tensor, Tensor]:
    """Composite Gaussians (already sorted front to back) at pixel positions.

    px, py: (P,); means2d (M, 2); conics (M, 3); opacities (M,); feats (M, C).
    Returns features (P, C) and alpha (P,).
    """
    dx = px[:, None] - means2d[None, :, 0]
    dy = py[:, None] - means2d[None, :, 1]
    a, b, c = conics[None, :, 0], conics[None, :, 1], conics[None, :, 2]
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = (opacities[None, :] * torch.exp(power)).clamp_max(MAX_ALPHA)
    used = (power <= 0) & (alpha >= MIN_ALPHA)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    t_after = torch.cumprod(one_minus, dim=1)
    t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
    alive = t_after > MIN_TRANSMITTANCE
    weights = torch.where(alive, alpha * t_before, torch.zeros_like(alpha))
    t_final = torch.where(alive, one_minus, torch.ones_like(one_minus)).prod(dim=1)
    return weights @ feats, 1.0 - t_final


def _tile_ranges(means2d: Tensor, extents: Tensor, width: int, height: int, chunk: int):
    """Inclusive block ranges (N, 4) = (bx0, bx1, by0, by1) of each footprint; bx0 > bx1 if none."""
    m = means2d.detach().double()
    e = extents.detach().double()
    c0 = torch.ceil(m[:, 0] - e[:, 0]).clamp_min(0)
    c1 = torch.floor(m[:, 0] + e[:, 0]).clamp_max(width - 1)
    r0 = torch.ceil(m[:, 1] - e[:, 1]).clamp_min(0)
    r1 = torch.floor(m[:, 1] + e[:, 1]).clamp_max(height - 1)
    ok = (e[:, 0] > 0) & (e[:, 1] > 0) & (c0 <= c1) & (r0 <= r1)
    ranges = torch.stack([c0, c1, r0, r1], dim=-1).long() // chunk
    ranges[~ok] = torch.tensor([1, 0, 1, 0])
    return ranges


def rasterize_reference(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                        depths: Tensor, extents: Tensor, width: int, height: int,
                        chunk: int | None = 16, checkpoint: bool = False) -> tuple[Tensor, Tensor]:
    """Composite screen-space Gaussians into an image (the spec).

    means2d (N, 2), conics (N, 3), opacities (N,), feats (N, C), depths (N,), extents (N, 2)
    (0 = culled). chunk=None composites every non-culled Gaussian at every pixel, ignoring the
    footprints (used to check that footprint culling never changes the image).
    Returns features (H, W, C) and alpha (H, W).
    """
    n, channels = feats.shape
    dtype, device = feats.dtype, feats.device
    visible = (extents[:, 0] > 0) & (extents[:, 1] > 0)
    order = torch.argsort(depths.detach(), stable=True)
    order = order[visible[order]]
    if chunk is None:
        ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                                torch.arange(width, dtype=dtype, device=device), indexing="ij")
        out, alpha = composite_pixels(xs.reshape(-1), ys.reshape(-1), means2d[order],
                                      conics[order], opacities[order], feats[order])
        return out.reshape(height, width, channels), alpha.reshape(height, width)

    ranges = _tile_ranges(means2d, extents, width, height, chunk)[order]
    tiles_x, tiles_y = -(-width // chunk), -(-height // chunk)
    local = torch.arange(chunk, dtype=dtype, device=device)
    ly, lx = torch.meshgrid(local, local, indexing="ij")
    lx, ly = lx.reshape(-1), ly.reshape(-1)
    blocks = []
    for ty in range(tiles_y):
        in_row = (ranges[:, 2] <= ty) & (ranges[:, 3] >= ty)
        for tx in range(tiles_x):
            sel = order[in_row & (ranges[:, 0] <= tx) & (ranges[:, 1] >= tx)]
            if sel.numel() == 0:
                blocks.append(torch.cat([torch.zeros(chunk * chunk, channels, dtype=dtype,
                                                     device=device),
                                         torch.zeros(chunk * chunk, 1, dtype=dtype,
                                                     device=device)], dim=1))
                continue
            args = (lx + tx * chunk, ly + ty * chunk, means2d[sel], conics[sel], opacities[sel],
                    feats[sel])
            if checkpoint:
                out, alpha = _checkpoint(composite_pixels, *args, use_reentrant=False)
            else:
                out, alpha = composite_pixels(*args)
            blocks.append(torch.cat([out, alpha[:, None]], dim=1))
    image = torch.stack(blocks).reshape(tiles_y, tiles_x, chunk, chunk, channels + 1)
    image = image.permute(0, 2, 1, 3, 4).reshape(tiles_y * chunk, tiles_x * chunk, channels + 1)
    image = image[:height, :width]
    return image[..., :channels], image[..., channels]
