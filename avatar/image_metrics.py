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


def _window(channels: int, dtype, size: int = 11, sigma: float = 1.5) -> tuple[Tensor, Tensor]:
    """The separable Gaussian window as a (1 x size) and a (size x 1) depthwise kernel."""
    key = (channels, dtype, size, sigma)
    if key not in _WINDOWS:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-x ** 2 / (2 * sigma ** 2))
        g = (g / g.sum()).to(dtype)
        _WINDOWS[key] = (g.reshape(1, 1, 1, size).expand(channels, 1, 1, size).contiguous(),
                         g.reshape(1, 1, size, 1).expand(channels, 1, size, 1).contiguous())
    return _WINDOWS[key]


def ssim_map(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-pixel SSIM [H, W, C] of images [H, W, C] in [0, 1] (differentiable). The five local
    means go through one separable depthwise convolution (2 x 11 taps instead of 121)."""
    c = prediction.shape[-1]
    x = prediction.permute(2, 0, 1)[None]
    y = target.to(prediction.dtype).permute(2, 0, 1)[None]
    row, col = _window(5 * c, prediction.dtype)
    pad = row.shape[-1] // 2
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    blurred = F.conv2d(F.pad(stack, (pad, pad, pad, pad), mode="reflect"), row, groups=5 * c)
    blurred = F.conv2d(blurred, col, groups=5 * c)
    mu_x, mu_y, exx, eyy, exy = blurred.split(c, dim=1)
    sxx = exx - mu_x ** 2
    syy = eyy - mu_y ** 2
    sxy = exy - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s[0].permute(1, 2, 0)


def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM (a 0-dim tensor, differentiable) of images [H, W, C] in [0, 1]."""
    return ssim_map(prediction, target).mean()
