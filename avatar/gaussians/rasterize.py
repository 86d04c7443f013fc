"""Public entry point: differentiable rendering of 3D Gaussians for one pinhole camera."""
from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .cpu import load_cpu_kernel, project_cpu, rasterize_cpu
from .gsplat_backend import rasterize_gsplat
from .projection import camera_center, project_gaussians
from .raster_output import RasterOutput, check_opacity_range
from .reference import rasterize_reference
from .sh import sh_degree_from_coeffs, sh_to_color

BACKENDS = ("auto", "torch", "cpu", "gsplat")


def gsplat_available() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def cpu_kernel_available() -> bool:
    """True when the C++ kernel builds (or is already built) on this machine."""
    try:
        load_cpu_kernel()
    except RuntimeError:
        return False
    return True


def choose_backend(device: torch.device, requested: str = "auto") -> str:
    """The backend `rasterize_gaussians` uses for tensors on `device`."""
    if requested not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {requested!r}")
    if requested != "auto":
        if requested == "cpu" and device.type != "cpu":
            raise ValueError(f"backend: 'cpu' needs CPU tensors, got device {device}")
        if requested == "gsplat" and (device.type != "cuda" or not gsplat_available()):
            raise ValueError(f"backend: 'gsplat' needs CUDA tensors and gsplat installed "
                             f"(device {device}, gsplat installed: {gsplat_available()})")
        return requested
    if device.type == "cuda" and gsplat_available():
        return "gsplat"
    if device.type == "cpu" and cpu_kernel_available():
        return "cpu"
    return "torch"


def _as_tensor(value, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    t = torch.as_tensor(value)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    t = t.to(dtype=like.dtype, device=like.device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains non-finite values")
    return t


def _check_gaussians(means, quats, scales, opacities, colors, sh_coeffs):
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"means: expected a (N, 3) tensor, got "
                         f"{tuple(means.shape) if isinstance(means, Tensor) else type(means)}")
    if not means.is_floating_point():
        raise TypeError(f"means: expected a floating-point tensor, got {means.dtype}")
    n = means.shape[0]
    expected = {"quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
                "opacities": (opacities, (n,))}
    if (colors is None) == (sh_coeffs is None):
        raise ValueError("colors / sh_coeffs: pass exactly one of them")
    if colors is not None:
        if not isinstance(colors, Tensor) or colors.dim() != 2 or colors.shape[0] != n \
                or not 1 <= colors.shape[1] <= 63:
            raise ValueError(f"colors: expected (N={n}, C) with 1 <= C <= 63, got "
                             f"{tuple(colors.shape) if isinstance(colors, Tensor) else colors}")
        expected["colors"] = (colors, tuple(colors.shape))
    else:
        if not isinstance(sh_coeffs, Tensor) or sh_coeffs.dim() != 3 or sh_coeffs.shape[0] != n \
                or sh_coeffs.shape[2] != 3:
            raise ValueError(f"sh_coeffs: expected (N={n}, K, 3), got "
                             f"{tuple(sh_coeffs.shape) if isinstance(sh_coeffs, Tensor) else sh_coeffs}")
        sh_degree_from_coeffs(sh_coeffs.shape[1])
        expected["sh_coeffs"] = (sh_coeffs, tuple(sh_coeffs.shape))
    for name, (value, shape) in expected.items():
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name}: expected shape {shape}, got {got}")
        if value.dtype != means.dtype or value.device != means.device:
            raise TypeError(f"{name}: expected dtype {means.dtype} on {means.device}, got "
                            f"{value.dtype} on {value.device}")
    for name, value in [("means", means), *((k, v[0]) for k, v in expected.items())]:
        if not torch.isfinite(value.detach()).all():
            raise ValueError(f"{name}: contains non-finite values")
    check_opacity_range(opacities)


def rasterize_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                        colors: Tensor | None = None, sh_coeffs: Tensor | None = None, *,
                        camera=None, K=None, cam_from_world=None, width: int | None = None,
                        height: int | None = None, background: Tensor | None = None,
                        near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
                        backend: str = "auto", tile_size: int = 16,
                        num_threads: int | None = None) -> RasterOutput:
    """Render N 3D Gaussians for one pinhole camera, differentiably.

    means (N, 3) world metres; quats (N, 4) (w, x, y, z), normalised here; scales (N, 3) LINEAR
    standard deviations (apply exp() to log-scales yourself); opacities (N,) in [0, 1] (apply
    sigmoid yourself); either colors (N, C) or sh_coeffs (N, K, 3), K = 1, 4, 9 or 16 (3DGS
    convention, colour = max(SH + 0.5, 0), view direction from the camera centre).
    Camera: `camera` with attributes K, cam_from_world, width, height (calib.camera.Camera;
    lens distortion is ignored: render on undistorted images), or K (3, 3), cam_from_world (4, 4),
    width, height. background (C,) defaults to black. backend: "auto" (gsplat on CUDA when
    installed, else the C++ kernel on CPU, else the torch reference), "torch", "cpu", "gsplat".
    """
    if camera is not None:
        if any(v is not None for v in (K, cam_from_world, width, height)):
            raise ValueError("camera: pass either camera or K/cam_from_world/width/height")
        try:
            K, cam_from_world = camera.K, camera.cam_from_world
            width, height = camera.width, camera.height
        except AttributeError as exc:
            raise TypeError(f"camera: needs attributes K, cam_from_world, width, height ({exc})")
    if K is None or cam_from_world is None or width is None or height is None:
        raise ValueError("camera: K, cam_from_world, width and height are required")
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"width/height: expected positive integers, got {width} x {height}")
    width, height = int(width), int(height)
    if tile_size < 1:
        raise ValueError(f"tile_size: expected a positive integer, got {tile_size}")
    if eps2d < 0 or not near < far:
        raise ValueError(f"eps2d/near/far: expected eps2d >= 0 and near < far, got "
                         f"{eps2d}, {near}, {far}")
    _check_gaussians(means, quats, scales, opacities, colors, sh_coeffs)
    K = _as_tensor(K, "K", (3, 3), means)
    cam_from_world = _as_tensor(cam_from_world, "cam_from_world", (4, 4), means)
    channels = colors.shape[1] if colors is not None else 3
    if background is None:
        background = torch.zeros(channels, dtype=means.dtype, device=means.device)
    background = _as_tensor(background, "background", (channels,), means)
    chosen = choose_backend(means.device, backend)

    if chosen == "gsplat":
        return rasterize_gsplat(means, quats, scales, opacities, colors, sh_coeffs, K,
                                cam_from_world, width, height, background, near, far, eps2d)

    if chosen == "cpu" and not (K.requires_grad or cam_from_world.requires_grad):
        # Projection and colour fused in C++ (same result as the torch path below).
        means2d, conics, feats, extents, radii = project_cpu(
            means, quats, scales, opacities, colors if colors is not None else sh_coeffs, K,
            cam_from_world, width, height, near=near, far=far, eps2d=eps2d,
            n_threads=num_threads)
        depths = feats[:, channels].detach()
    else:
        proj = project_gaussians(means, quats, scales, opacities, K, cam_from_world, width,
                                 height, near=near, far=far, eps2d=eps2d)
        if colors is None:
            colors = sh_to_color(sh_coeffs, means - camera_center(cam_from_world))
        means2d, conics, depths, extents, radii = (proj.means2d, proj.conics, proj.depths,
                                                   proj.extents, proj.radii)
        feats = torch.cat([colors, depths[:, None]], dim=1)
    if means2d.requires_grad:
        means2d.retain_grad()
    if chosen == "cpu":
        out, alpha = rasterize_cpu(means2d, conics, opacities, feats, depths, extents, width,
                                   height, tile=tile_size, n_threads=num_threads)
    else:
        out, alpha = rasterize_reference(means2d, conics, opacities, feats, depths, extents,
                                         width, height, chunk=tile_size)
    rgb = out[..., :channels] + (1.0 - alpha)[..., None] * background
    covered = alpha > 1e-10
    depth = torch.where(covered, out[..., channels] / alpha.clamp_min(1e-10),
                        torch.zeros_like(alpha))
    return RasterOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=means2d, radii=radii,
                        visible=(radii > 0).all(dim=-1), backend=chosen)


def screen_space_grad_norm(output: RasterOutput) -> Tensor:
    """(N,) norm of d loss / d means2d in NDC-like units (pixels scaled by W/2, H/2, as 3DGS and
    gsplat accumulate it for densification). Call after loss.backward()."""
    grad = output.means2d.grad
    if grad is not None:
        grad = grad.reshape(-1, 2)
    if grad is None:
        raise ValueError("output.means2d: no gradient; call backward() on a loss of this render "
                         "with means requiring grad first")
    height, width = output.alpha.shape
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=grad.dtype, device=grad.device)
    return (grad * scale).norm(dim=-1)
