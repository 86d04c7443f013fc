"""Fit static 3D Gaussians to calibrated, masked multi-view images of one frame.

The smallest complete use of the Gaussian rasterizer: what the avatar trainer does per frame,
without the rig binding to the head model. `headcap demo` uses it to show the rasterizer training
on CPU and to measure novel-view PSNR on held-out cameras.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from headcap.avatar.gaussians import rasterize_gaussians
from headcap.core.threads import dynamic_torch_threads, serial_torch_ops


@dataclass(frozen=True)
class StaticFitConfig:
    iterations: int = 300
    """Optimisation steps; each renders one training view (fwd + bwd)."""
    lr_means: float = 2e-4
    """Adam step for positions, metres."""
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_colors: float = 2.5e-2
    initial_scale: float | None = None
    """Gaussian size at start, metres; default: the mean nearest-neighbour spacing of the points."""
    alpha_weight: float = 0.1
    """Weight of the silhouette term |alpha - mask|."""
    seed: int = 0


@dataclass
class View:
    """One training/evaluation image: an undistorted (pinhole) camera, its image and mask."""

    camera: object
    image: Tensor  # [H, W, 3] float in [0, 1], background already black
    mask: Tensor   # [H, W] float in [0, 1]


@dataclass
class GaussianSet:
    means: Tensor
    log_scales: Tensor
    quats: Tensor
    opacity_logits: Tensor
    colors: Tensor
    history: list[float] = field(default_factory=list)

    def render(self, camera) -> Tensor:
        out = rasterize_gaussians(self.means, self.quats, torch.exp(self.log_scales),
                                  torch.sigmoid(self.opacity_logits), self.colors.clamp(0, 1), camera=camera)
        return out

    @property
    def count(self) -> int:
        return int(self.means.shape[0])


def psnr(prediction: Tensor, target: Tensor) -> float:
    mse = torch.mean((prediction.clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _spacing(points: Tensor) -> float:
    sample = points[torch.linspace(0, points.shape[0] - 1, min(2000, points.shape[0])).long()]
    dist = torch.cdist(sample, points)
    dist[dist == 0] = float("inf")
    return float(dist.min(dim=1).values.median())


def initial_colors(points: Tensor, views: list[View]) -> Tensor:
    """Average colour of each point over the views whose mask covers its projection."""
    total = torch.zeros(points.shape[0], 3, dtype=points.dtype)
    count = torch.zeros(points.shape[0], 1, dtype=points.dtype)
    for view in views:
        pix, depth = view.camera.project(points.double())
        h, w = view.mask.shape
        col = pix[:, 0].round().long()
        row = pix[:, 1].round().long()
        ok = (depth > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        idx = ok.nonzero()[:, 0]
        inside = view.mask[row[idx], col[idx]] > 0.5
        idx = idx[inside]
        total[idx] += view.image[row[idx], col[idx]].to(points.dtype)
        count[idx] += 1
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 0.5))


def fit_static_gaussians(points: Tensor, views: list[View], config: StaticFitConfig = StaticFitConfig(),
                         progress: Callable[[int, int, float], None] | None = None) -> GaussianSet:
    """Optimise Gaussians initialised at `points` [N, 3] to reproduce `views` (L1 + silhouette)."""
    if not views:
        raise ValueError("fit_static_gaussians: no training views")
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"fit_static_gaussians: points must be [N, 3] with N > 0, got {tuple(points.shape)}")
    gen = torch.Generator().manual_seed(config.seed)
    points = points.float()
    n = points.shape[0]
    with dynamic_torch_threads():  # cdist and colour lookups: no spinning pool beside a busy neighbour
        scale = config.initial_scale or _spacing(points)
        colors = initial_colors(points, views).float()
    gs = GaussianSet(
        means=points.clone().requires_grad_(True),
        log_scales=torch.full((n, 3), math.log(scale), requires_grad=True),
        quats=torch.cat([torch.ones(n, 1), torch.zeros(n, 3)], 1).requires_grad_(True),
        opacity_logits=torch.full((n,), 2.0, requires_grad=True),
        colors=colors.requires_grad_(True),
    )
    optim = torch.optim.Adam([
        {"params": [gs.means], "lr": config.lr_means},
        {"params": [gs.log_scales], "lr": config.lr_scales},
        {"params": [gs.quats], "lr": config.lr_quats},
        {"params": [gs.opacity_logits], "lr": config.lr_opacities},
        {"params": [gs.colors], "lr": config.lr_colors},
    ])
    # Small torch ops on one thread, the rasterizer on its own (passive-waiting) threads: with a
    # busy neighbour process, torch's spinning pool made 2 threads 3-10x slower than 1.
    with serial_torch_ops():
        for it in range(config.iterations):
            view = views[int(torch.randint(len(views), (1,), generator=gen))]
            out = gs.render(view.camera)
            loss = (out.rgb - view.image).abs().mean() + config.alpha_weight * (out.alpha - view.mask).abs().mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            gs.history.append(float(loss.detach()))
            if progress is not None:
                progress(it + 1, config.iterations, gs.history[-1])
    for name in ("means", "log_scales", "quats", "opacity_logits", "colors"):
        setattr(gs, name, getattr(gs, name).detach())
    return gs


def load_view(camera, image: np.ndarray, mask: np.ndarray) -> View:
    """Undistort a distorted session image + mask into a pinhole `View` (black background)."""
    img = camera.undistort_image(image)
    msk = camera.undistort_image(mask)
    img_t = torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0
    msk_t = torch.from_numpy(np.ascontiguousarray(msk)).float() / 255.0
    if msk_t.ndim == 3:
        msk_t = msk_t[..., 0]
    return View(camera.undistorted(), img_t * msk_t[..., None], msk_t)
