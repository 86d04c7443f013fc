"""Gaussian rasterizer edge cases, analytic ground truth, input validation, nvcc compile check."""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from headcap.avatar.gaussians import rasterize_gaussians
from headcap.avatar.gaussians.synthetic import pinhole, random_scene

BACKENDS = ["torch", "cpu"]
ROOT = Path(__file__).resolve().parents[2]


def _one(mean, scale, opacity, dtype=torch.float64):
    means = torch.tensor([mean], dtype=dtype)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    scales = torch.tensor([scale], dtype=dtype)
    return means, quats, scales, torch.tensor([opacity], dtype=dtype)


def _grads_of(out, leaves):
    loss = out.rgb.sum() + out.alpha.sum() + out.depth.sum()
    if not loss.requires_grad:
        return [torch.zeros_like(p) for p in leaves]
    return torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_gaussian_is_the_low_pass_filter_at_integer_pixel_centres(backend):
    # A zero-size Gaussian projects to the 0.3 px^2 low-pass filter alone; its centre lands on
    # pixel (10, 7), whose centre is at x = 10, y = 7 in headcap's K convention.
    width, height = 20, 15
    K, cfw = pinhole(width, height)
    depth = 3.0
    x = (10 - K[0, 2].item()) * depth / K[0, 0].item()
    y = (7 - K[1, 2].item()) * depth / K[1, 1].item()
    means, quats, scales, opac = _one([x, y, 0.0], [0.0, 0.0, 0.0], 0.8)
    out = rasterize_gaussians(means, quats, scales, opac, colors=torch.ones(1, 3).double(),
                              K=K, cam_from_world=cfw, width=width, height=height,
                              backend=backend)
    assert abs(out.alpha[7, 10].item() - 0.8) < 1e-12
    assert abs(out.alpha[7, 11].item() - 0.8 * math.exp(-0.5 / 0.3)) < 1e-12
    assert abs(out.alpha[8, 11].item() - 0.8 * math.exp(-1.0 / 0.3)) < 1e-12
    assert abs(out.depth[7, 10].item() - depth) < 1e-12
    # footprint: alpha >= 1/255 out to sqrt(2 ln(255 o) 0.3) px, nothing beyond
    reach = math.sqrt(2 * math.log(255 * 0.8) * 0.3)
    assert out.radii[0].tolist() == [math.ceil(reach * 1.001 + 0.01)] * 2
    ys, xs = torch.nonzero(out.alpha > 0, as_tuple=True)
    assert ((xs - 10) ** 2 + (ys - 7) ** 2).max().item() <= reach ** 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_front_gaussian_occludes_back_one(backend):
    width, height = 17, 17  # principal point on pixel (8, 8): both centres land there exactly
    K, cfw = pinhole(width, height)
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64)
    scales = torch.full((2, 3), 0.5, dtype=torch.float64)
    opac = torch.tensor([0.9, 0.5], dtype=torch.float64)
    cols = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, opac, colors=cols, K=K, cam_from_world=cfw,
                              width=width, height=height, backend=backend)
    # the nearer (green, z = 2) Gaussian composites first: green 0.5, red 0.9 * (1 - 0.5)
    c = out.rgb[8, 8]
    assert abs(c[1].item() - 0.5) < 1e-12 and abs(c[0].item() - 0.45) < 1e-12
    assert abs(out.alpha[8, 8].item() - (1 - 0.5 * 0.1)) < 1e-12
    assert abs(out.depth[8, 8].item() - (0.5 * 2.0 + 0.45 * 3.0) / 0.95) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_renders_background(backend):
    K, cfw = pinhole(12, 9)
    empty = [torch.zeros(0, k, dtype=torch.float64, requires_grad=True) for k in (3, 4, 3)]
    opac = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    cols = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    out = rasterize_gaussians(*empty, opac, colors=cols, K=K, cam_from_world=cfw, width=12,
                              height=9, background=bg, backend=backend)
    assert torch.equal(out.rgb, bg.expand(9, 12, 3))
    assert out.alpha.abs().max().item() == 0 and out.depth.abs().max().item() == 0
    grads = _grads_of(out, [*empty, opac, cols])
    assert [tuple(g.shape) for g in grads] == [(0, 3), (0, 4), (0, 3), (0,), (0, 3)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussians_behind_or_grazing_the_camera(backend):
    width, height = 24, 18
    K, cfw = pinhole(width, height)
    # camera centre is at z = -3 (world); near plane 0.01 in front of it
    means = torch.tensor([[0.0, 0.0, -4.0],     # behind the camera
                          [0.0, 0.0, -3.0],     # at the camera centre
                          [0.0, 0.0, -2.995],   # inside the near plane
                          [5.0, 0.0, -2.9],     # grazing: far outside the field of view
                          [0.3, 0.1, -2.5]],    # ordinary, for comparison
                         dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 5, dtype=torch.float64)
    scales = torch.tensor([[0.5] * 3] * 3 + [[0.5, 0.5, 0.5], [0.05, 0.05, 0.05]],
                          dtype=torch.float64)
    opac = torch.full((5,), 0.9, dtype=torch.float64)
    cols = torch.rand(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (means, quats, scales, opac, cols)]
    out = rasterize_gaussians(leaves[0], leaves[1], leaves[2], leaves[3], colors=leaves[4], K=K,
                              cam_from_world=cfw, width=width, height=height, backend=backend)
    assert out.visible.tolist() == [False, False, False, False, True]
    only = rasterize_gaussians(means[4:], quats[4:], scales[4:], opac[4:], colors=cols[4:], K=K,
                               cam_from_world=cfw, width=width, height=height, backend=backend)
    assert (out.rgb - only.rgb).abs().max().item() < 1e-12
    grads = _grads_of(out, leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0][:4].abs().max().item() == 0.0


def test_huge_and_degenerate_gaussians_agree_across_backends():
    width, height = 32, 24
    K, cfw = pinhole(width, height)
    means, quats, scales, opac, cols = random_scene(60, seed=11)
    scales = scales.clone()
    scales[:10] = 50.0            # covers the whole image many times over
    scales[10:20, 0] = 0.0        # flat discs
    scales[20:25] = 0.0           # points
    scales[25:30] = 1e-9
    opac = opac.clone()
    opac[:10] = 0.02              # faint so the background Gaussians stay visible
    outs = {}
    for backend in BACKENDS:
        leaves = [t.clone().requires_grad_() for t in (means, quats, scales, opac, cols)]
        out = rasterize_gaussians(leaves[0], leaves[1], leaves[2], leaves[3], colors=leaves[4],
                                  K=K, cam_from_world=cfw, width=width, height=height,
                                  backend=backend)
        outs[backend] = (out, _grads_of(out, leaves))
    (ref, g_ref), (cpu, g_cpu) = outs["torch"], outs["cpu"]
    assert ref.visible[:30].all()
    assert (ref.rgb - cpu.rgb).abs().max().item() < 1e-12
    for a, b in zip(g_cpu, g_ref):
        assert torch.isfinite(a).all()
        assert ((a - b).norm() / b.norm()).item() < 1e-10
    # ten faint Gaussians far larger than the view: alpha ~ 1 - (1 - 0.02)^10 everywhere
    assert ref.alpha.min().item() >= 1 - (1 - 0.02 * 0.98) ** 10


def test_camera_object_and_validation():
    width, height = 10, 8
    K, cfw = pinhole(width, height)
    means, quats, scales, opac, cols = random_scene(20, seed=12)
    camera = SimpleNamespace(K=K.numpy(), cam_from_world=cfw.numpy(), width=width, height=height,
                             distortion_model="opencv", distortion=[0.1, 0, 0, 0, 0])
    a = rasterize_gaussians(means, quats, scales, opac, colors=cols, camera=camera)
    b = rasterize_gaussians(means, quats, scales, opac, colors=cols, K=K, cam_from_world=cfw,
                            width=width, height=height)
    assert torch.equal(a.rgb, b.rgb)
    kw = dict(K=K, cam_from_world=cfw, width=width, height=height)
    with pytest.raises(ValueError, match="quats"):
        rasterize_gaussians(means, quats[:, :3], scales, opac, colors=cols, **kw)
    with pytest.raises(ValueError, match="colors / sh_coeffs"):
        rasterize_gaussians(means, quats, scales, opac, **kw)
    with pytest.raises(ValueError, match="sh_coeffs"):
        rasterize_gaussians(means, quats, scales, opac, sh_coeffs=torch.zeros(20, 5, 3).double(),
                            **kw)
    with pytest.raises(TypeError, match="scales"):
        rasterize_gaussians(means, quats, scales.float(), opac, colors=cols, **kw)
    bad = means.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="means: contains non-finite"):
        rasterize_gaussians(bad, quats, scales, opac, colors=cols, **kw)
    with pytest.raises(ValueError, match="opacities: expected values in"):
        rasterize_gaussians(means, quats, scales, opac * 3, colors=cols, **kw)
    with pytest.raises(ValueError, match="cam_from_world"):
        rasterize_gaussians(means, quats, scales, opac, colors=cols, K=K, cam_from_world=cfw[:3],
                            width=width, height=height)
    with pytest.raises(ValueError, match="width/height"):
        rasterize_gaussians(means, quats, scales, opac, colors=cols, K=K, cam_from_world=cfw,
                            width=0, height=height)
    with pytest.raises(ValueError, match="backend"):
        rasterize_gaussians(means, quats, scales, opac, colors=cols, backend="vulkan", **kw)
    with pytest.raises(ValueError, match="gsplat"):
        rasterize_gaussians(means, quats, scales, opac, colors=cols, backend="gsplat", **kw)
    with pytest.raises(ValueError, match="background"):
        rasterize_gaussians(means, quats, scales, opac, colors=cols,
                            background=torch.zeros(4).double(), **kw)


@pytest.mark.gpu  # the CUDA toolkit: no README install provides nvcc, so CI without it may skip this
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not on PATH")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    src = ROOT / "avatar" / "csrc" / "gauss_raster" / "gauss_raster.cu"
    result = subprocess.run(["nvcc", "-std=c++17", "-c", str(src), "-o",
                             str(tmp_path / "gauss_raster.o")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gauss_raster.o").stat().st_size > 1000
