"""The C++ CPU compositing kernel (avatar/csrc/gauss_raster.cpp) behind an autograd.Function."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_CSRC = Path(__file__).resolve().parents[1] / "csrc"
SOURCES = [_CSRC / "gauss_raster.cpp"]
HEADERS = [_CSRC / "gauss_raster_math.h"]


def load_cpu_kernel():
    """Build (first use) and import the extension. Raises RuntimeError with the compiler output."""
    from calib._cpp import load_extension

    # The loader hashes sources and flags only; a define carrying the header hash makes an
    # edited header trigger a rebuild too.
    digest = hashlib.sha1(b"".join(h.read_bytes() for h in HEADERS)).hexdigest()[:12]
    return load_extension("gauss_raster", SOURCES,
                          extra_cflags=(f"-DHC_GAUSS_HEADER_{digest}", f"-I{_CSRC}"))


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                depths: Tensor, extents: Tensor, width: int, height: int, tile: int,
                n_threads: int):
        kernel = load_cpu_kernel()
        tensors = [t.detach().contiguous() for t in (means2d, conics, opacities, feats, depths,
                                                      extents)]
        out, final_t, last, offsets, ids = kernel.rasterize_forward(*tensors, width, height, tile,
                                                                    n_threads)
        means2d, conics, opacities, feats, _, extents = tensors
        ctx.save_for_backward(means2d, conics, opacities, feats, extents, offsets, ids, final_t,
                              last)
        ctx.meta = (width, height, tile, n_threads)
        return out, 1.0 - final_t

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, grad_alpha: Tensor):
        means2d, conics, opacities, feats, extents, offsets, ids, final_t, last = ctx.saved_tensors
        width, height, tile, n_threads = ctx.meta
        if grad_out is None:
            grad_out = torch.zeros(height, width, feats.shape[1], dtype=feats.dtype)
        if grad_alpha is None:
            grad_alpha = torch.zeros(height, width, dtype=feats.dtype)
        g_means2d, g_conics, g_opacities, g_feats = load_cpu_kernel().rasterize_backward(
            means2d, conics, opacities, feats, extents, offsets, ids, final_t, last,
            grad_out.contiguous(), grad_alpha.contiguous(), width, height, tile, n_threads)
        return g_means2d, g_conics, g_opacities, g_feats, None, None, None, None, None, None


def rasterize_cpu(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                  depths: Tensor, extents: Tensor, width: int, height: int, tile: int = 16,
                  n_threads: int | None = None) -> tuple[Tensor, Tensor]:
    """Same contract as reference.rasterize_reference, computed by the C++ kernel.

    Returns features (H, W, C) and alpha (H, W). n_threads defaults to torch.get_num_threads().
    """
    from .rasterize import _check_opacity_range

    # The kernel's exp() is exact only for powers >= -87, which opacities <= 1 guarantee.
    _check_opacity_range(opacities.detach())
    threads = torch.get_num_threads() if n_threads is None else int(n_threads)
    return _RasterizeCPU.apply(means2d, conics, opacities, feats, depths, extents, int(width),
                               int(height), int(tile), max(1, threads))
