"""Seeded random Gaussian scenes for tests, benchmarks and docs (not used by rendering)."""
from __future__ import annotations

import torch


def pinhole(width: int, height: int, dtype=torch.float64, distance: float = 3.0):
    """K (3, 3) with integer-centred principal point and cam_from_world (4, 4) looking down +z."""
    f = 0.8 * width
    K = torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]],
                     dtype=dtype)
    cam_from_world = torch.eye(4, dtype=dtype)
    cam_from_world[2, 3] = distance
    return K, cam_from_world


def random_scene(n: int, seed: int, dtype=torch.float64, sh_degree: int | None = None,
                 log_scale_mean: float = -3.5, spread: float = 2.4):
    """n Gaussians in a slab in front of `pinhole`'s camera.

    Returns means (n, 3), quats (n, 4), scales (n, 3), opacities (n,), colours (n, 3) or SH
    coefficients (n, (d+1)^2, 3).
    """
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor([spread, spread, 1.0], dtype=torch.float64)
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * box
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.5 + log_scale_mean)
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * 0.85 + 0.05
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.3
    return [t.to(dtype) for t in (means, quats, scales, opacities, colors)]
