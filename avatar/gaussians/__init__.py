"""Differentiable 3D Gaussian splat rasterization (issue 6).

`rasterize_gaussians` projects Gaussians (EWA, low-pass filtered) and composites them front to
back with one of three backends, chosen automatically and reported in `RasterOutput.backend`:
"torch" (reference.py, the specification), "cpu" (C++/OpenMP kernel, avatar/csrc/gauss_raster/gauss_raster.cpp)
and "gsplat" (CUDA, when installed). See docs/gaussians.md.
"""
from .projection import ProjectedGaussians, camera_center, project_gaussians, quat_scale_to_covar, quat_to_rotmat
from .raster_output import RasterOutput
from .rasterize import (BACKENDS, choose_backend, cpu_kernel_available, gsplat_available, rasterize_gaussians,
                        screen_space_grad_norm)
from .reference import composite_pixels, rasterize_reference
from .cpu import rasterize_cpu
from .sh import eval_sh, sh_basis_3dgs, sh_degree_from_coeffs, sh_to_color

__all__ = [
    "BACKENDS", "ProjectedGaussians", "RasterOutput", "camera_center", "choose_backend",
    "composite_pixels", "cpu_kernel_available", "eval_sh", "gsplat_available", "project_gaussians",
    "quat_scale_to_covar", "quat_to_rotmat", "rasterize_cpu", "rasterize_gaussians",
    "rasterize_reference", "screen_space_grad_norm", "sh_basis_3dgs", "sh_degree_from_coeffs",
    "sh_to_color",
]
