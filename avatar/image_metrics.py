"""PSNR and SSIM for avatar evaluation (our own SSIM: Wang et al. 2004, 11x11 Gaussian window,
sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, mean over pixels and channels; the same
definition as skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)` up to the border: we pad by reflection instead of cropping)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "ssim_map"]

_WINDOWS: dict[tuple, Tensor] = {}


def psnr(prediction: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images in [0, 1] ([H, W, C]); `mask` [H, W]: only the pixels it covers."""
    diff = (prediction.clamp(0, 1) - target) ** 2
    if mask is not None:
        m = (mask > 0.5).to(diff.dtype)
        mse = float((diff * m[..., None]).sum() / (m.sum() * diff.shape[-1]).clamp_min(1))
    else:
        mse = float(diff.mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _window(channels: int, dtype, size: int = 11, sigma: float = 1.5) -> Tensor:
    key = (channels, dtype, size, sigma)
    if key not in _WINDOWS:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-x ** 2 / (2 * sigma ** 2))
        g = g / g.sum()
        _WINDOWS[key] = (g[:, None] * g[None, :]).to(dtype).expand(channels, 1, size, size).contiguous()
    return _WINDOWS[key]


def ssim_map(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-pixel SSIM [H, W, C] of images [H, W, C] in [0, 1] (differentiable)."""
    c = prediction.shape[-1]
    x = prediction.permute(2, 0, 1)[None]
    y = target.to(prediction.dtype).permute(2, 0, 1)[None]
    w = _window(c, prediction.dtype)
    pad = w.shape[-1] // 2

    def blur(t):
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s[0].permute(1, 2, 0)


def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM (a 0-dim tensor, differentiable) of images [H, W, C] in [0, 1]."""
    return ssim_map(prediction, target).mean()
