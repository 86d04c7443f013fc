"""What every rasterization backend shares: the `RasterOutput` it returns and the opacity check
its compositing relies on. Backends (cpu.py, gsplat_backend.py) and the public wrapper
(rasterize.py) import this module; it imports none of them."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class RasterOutput:
    """One rendered view (H x W pixels, N Gaussians, C colour channels).

    rgb: (H, W, C) colour composited over `background`.
    alpha: (H, W) accumulated opacity.
    depth: (H, W) expected camera z of the visible Gaussians (sum w z / alpha), 0 where alpha = 0.
    means2d: (N, 2) projected centres; after backward, `means2d.grad` is the screen-space
        gradient the densification strategy accumulates (see `screen_space_grad_norm`).
    radii: (N, 2) int32 footprint half extents in pixels (alpha >= 1/255 region), 0 if culled.
    visible: (N,) bool, radii > 0: add to a per-Gaussian visibility count.
    backend: which backend rendered: "torch", "cpu" or "gsplat".
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor
    visible: Tensor
    backend: str


def check_opacity_range(opacities: Tensor) -> None:
    """ValueError unless every opacity is in [0, 1] (probabilities, not logits)."""
    if opacities.numel() and (opacities.min() < 0 or opacities.max() > 1):
        raise ValueError(f"opacities: expected values in [0, 1] (apply sigmoid to logits), got "
                         f"[{opacities.min().item():.4g}, {opacities.max().item():.4g}]")
