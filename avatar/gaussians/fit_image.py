"""Fit 3D Gaussians seen by one camera to a photo: an end-to-end check of the differentiable
rasterizer (projection, SH-free colour, compositing, backward) used by tests and docs."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .rasterize import rasterize_gaussians


@dataclass
class ImageFitResult:
    """render: (H, W, 3) final image; psnr: dB against the target; psnr_history: per step."""

    render: Tensor
    psnr: float
    psnr_history: list[float]
    backend: str


def psnr(a: Tensor, b: Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def fit_image(target: Tensor, n_gaussians: int, steps: int, seed: int,
              backend: str = "auto") -> ImageFitResult:
    """Fit n Gaussians on the plane z = 1 (seen by a camera with f = width) to target (H, W, 3).

    Gaussians start on a jittered grid with the target's colour; Adam optimises positions,
    log-scales, rotations, opacity logits and colours. Deterministic for a given seed.
    """
    if target.dim() != 3 or target.shape[2] != 3:
        raise ValueError(f"target: expected (H, W, 3), got {tuple(target.shape)}")
    height, width = target.shape[:2]
    g = torch.Generator().manual_seed(seed)
    f = float(width)
    K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    cam_from_world = torch.eye(4)
    side = math.ceil(math.sqrt(n_gaussians * width / height))
    px = (torch.rand(n_gaussians, generator=g) * width - 0.5)
    py = (torch.rand(n_gaussians, generator=g) * height - 0.5)
    means = torch.stack([(px - K[0, 2]) / f, (py - K[1, 2]) / f,
                         1.0 + 0.01 * torch.rand(n_gaussians, generator=g)], dim=-1)
    spacing = width / side / f
    log_scales = torch.log(torch.full((n_gaussians, 3), 0.7 * spacing))
    quats = torch.zeros(n_gaussians, 4)
    quats[:, 0] = 1.0
    opacity_logits = torch.full((n_gaussians,), 2.0)
    ix = px.round().clamp(0, width - 1).long()
    iy = py.round().clamp(0, height - 1).long()
    colors = target[iy, ix].clone()
    params = [p.requires_grad_() for p in (means, log_scales, quats, opacity_logits, colors)]
    optim = torch.optim.Adam([
        {"params": [params[0]], "lr": 2e-4},
        {"params": [params[1]], "lr": 1e-2},
        {"params": [params[2]], "lr": 1e-2},
        {"params": [params[3]], "lr": 5e-2},
        {"params": [params[4]], "lr": 1e-2},
    ])
    history = []
    render, used = None, backend
    for _ in range(steps):
        out = rasterize_gaussians(params[0], params[2], torch.exp(params[1]),
                                  torch.sigmoid(params[3]), colors=params[4], K=K,
                                  cam_from_world=cam_from_world, width=width, height=height,
                                  backend=backend)
        loss = torch.mean((out.rgb - target) ** 2)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        history.append(-10.0 * math.log10(max(loss.item(), 1e-20)))
        used = out.backend
    with torch.no_grad():
        out = rasterize_gaussians(params[0], params[2], torch.exp(params[1]),
                                  torch.sigmoid(params[3]), colors=params[4], K=K,
                                  cam_from_world=cam_from_world, width=width, height=height,
                                  backend=backend)
        render = out.rgb.clamp(0, 1)
    return ImageFitResult(render=render, psnr=psnr(render, target), psnr_history=history,
                          backend=used)
