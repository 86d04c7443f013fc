"""The C++ CPU compositing kernel (avatar/csrc/gauss_raster/) behind an autograd.Function."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from headcap.core.threads import kernel_threads, kernel_torch_threads

from .raster_output import check_opacity_range

_CSRC = Path(__file__).resolve().parents[1] / "csrc" / "gauss_raster"
_CORE_CSRC = Path(__file__).resolve().parents[2] / "core" / "csrc"
SOURCES = [_CSRC / "gauss_raster.cpp", _CSRC / "gauss_raster_project.cpp"]
HEADERS = [_CSRC / "gauss_raster_math.h", _CSRC / "gauss_raster_project.h",
           _CSRC / "gauss_raster_bin.h", _CSRC / "gauss_raster_bindings.h",
           _CSRC / "gauss_raster_simd.h", _CORE_CSRC / "hc_parallel.h"]


def avx512_flags() -> tuple[str, ...]:
    """`-mavx512f -mavx512vl -mavx512bw -mavx512dq` where torch's dispatch runs AVX-512 on an
    x86-64 CPU (`torch.backends.cpu.get_cpu_capability()`, which honours ATEN_CPU_CAPABILITY),
    else none. With them the kernel's pixel windows are 16 lanes wide (gauss_raster_simd.h)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ()
    if torch.backends.cpu.get_cpu_capability().upper() != "AVX512":
        return ()
    # 256-bit vectors for whatever the compiler vectorises on its own; the windows are explicit.
    return ("-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mprefer-vector-width=256")


def load_cpu_kernel():
    """Build (first use) and import the extension. Raises RuntimeError with the compiler output."""
    from headcap.core.extension import load_extension

    return load_extension("gauss_raster", SOURCES,
                          extra_cflags=(f"-I{_CSRC}", f"-I{_CORE_CSRC}", *avx512_flags()),
                          headers=tuple(HEADERS), simd=True)


class _ProjectCPU(torch.autograd.Function):
    """projection.project_gaussians + sh.sh_to_color fused in C++ (one pass per Gaussian)."""

    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, coefs: Tensor,
                opacities: Tensor, K: Tensor, cam_from_world: Tensor, width: int, height: int,
                near: float, far: float, eps2d: float, n_threads: int):
        tensors = [t.detach().contiguous() for t in (means, quats, scales, coefs)]
        cam = [t.detach().contiguous() for t in (K, cam_from_world)]
        with kernel_torch_threads(n_threads):
            means2d, conics, feats, extents, radii = load_cpu_kernel().project_forward(
                *tensors[:3], opacities.detach().contiguous(), tensors[3], *cam, width, height,
                near, far, eps2d, n_threads)
        ctx.save_for_backward(*tensors, *cam)
        ctx.meta = (width, height, near, far, eps2d, n_threads)
        ctx.mark_non_differentiable(extents, radii)
        return means2d, conics, feats, extents, radii

    @staticmethod
    @once_differentiable
    def backward(ctx, g_means2d, g_conics, g_feats, _g_extents, _g_radii):
        means, quats, scales, coefs, K, cam_from_world = ctx.saved_tensors
        width, height, near, far, eps2d, n_threads = ctx.meta
        n = means.shape[0]
        channels = coefs.shape[-1]
        zeros = lambda *shape: torch.zeros(*shape, dtype=means.dtype)  # noqa: E731
        g_means2d = zeros(n, 2) if g_means2d is None else g_means2d.contiguous()
        g_conics = zeros(n, 3) if g_conics is None else g_conics.contiguous()
        g_feats = zeros(n, channels + 1) if g_feats is None else g_feats.contiguous()
        with kernel_torch_threads(n_threads):
            grads = load_cpu_kernel().project_backward(
                means, quats, scales, coefs, K, cam_from_world, width, height, near, far, eps2d,
                g_means2d, g_conics, g_feats, n_threads)
        return (*grads, None, None, None, None, None, None, None, None, None)


def project_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                coefs: Tensor, K: Tensor, cam_from_world: Tensor, width: int, height: int,
                near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
                n_threads: int | None = None):
    """projection.project_gaussians and the colour step computed by the C++ kernel.

    coefs: colours (N, C) or SH coefficients (N, K, 3) (colour = max(SH(dir) + 0.5, 0)).
    K, cam_from_world get no gradient. Returns means2d (N, 2), conics (N, 3),
    feats (N, C + 1) = (colour, camera z), extents (N, 2), radii (N, 2) int32.
    """
    threads = kernel_threads(n_threads)
    return _ProjectCPU.apply(means, quats, scales, coefs, opacities, K, cam_from_world,
                             int(width), int(height), float(near), float(far), float(eps2d),
                             max(1, threads))


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                depths: Tensor, extents: Tensor, width: int, height: int, tile: int,
                n_threads: int):
        kernel = load_cpu_kernel()
        tensors = [t.detach().contiguous() for t in (means2d, conics, opacities, feats, depths,
                                                      extents)]
        with kernel_torch_threads(n_threads):
            out, final_t, last, offsets, ids = kernel.rasterize_forward(*tensors, width, height,
                                                                        tile, n_threads)
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
        with kernel_torch_threads(n_threads):
            g_means2d, g_conics, g_opacities, g_feats = load_cpu_kernel().rasterize_backward(
                means2d, conics, opacities, feats, extents, offsets, ids, final_t, last,
                grad_out.contiguous(), grad_alpha.contiguous(), width, height, tile, n_threads)
        return g_means2d, g_conics, g_opacities, g_feats, None, None, None, None, None, None


def rasterize_cpu(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                  depths: Tensor, extents: Tensor, width: int, height: int, tile: int = 16,
                  n_threads: int | None = None) -> tuple[Tensor, Tensor]:
    """Same contract as reference.rasterize_reference, computed by the C++ kernel.

    Returns features (H, W, C) and alpha (H, W). n_threads defaults to
    `headcap.core.threads.kernel_threads()` (torch's count capped by affinity and CPU quota,
    lowered to the CPUs other processes leave free); torch's own ops inside the call run on
    no more threads than the kernel.
    """
    # The kernel's exp() is exact only for powers >= -87, which opacities <= 1 guarantee.
    check_opacity_range(opacities.detach())
    threads = kernel_threads(n_threads)
    return _RasterizeCPU.apply(means2d, conics, opacities, feats, depths, extents, int(width),
                               int(height), int(tile), max(1, threads))
