"""The C++ kernel's fixed-width row windows: every tile size and thread count, partial tiles, the
portable (no AVX2) build and the 8-lane AVX2 build, forward and backward against the torch
reference; bit-reproducible 2-thread gradients; masked lanes keep a NaN pixel gradient away from
Gaussians not covering it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from headcap.avatar.gaussians import project_gaussians, rasterize_cpu, rasterize_reference
from headcap.avatar.gaussians.synthetic import pinhole, random_scene

ROOT = Path(__file__).resolve().parents[2]


def _screen_scene(width, height, dtype=torch.float32, n=700, seed=5):
    K, cfw = pinhole(width, height, dtype)
    means, quats, scales, opac, cols = random_scene(n, seed=seed, dtype=dtype)
    proj = project_gaussians(means, quats, scales, opac, K, cfw, width, height)
    feats = torch.cat([cols, proj.depths[:, None]], dim=1)
    return [proj.means2d.detach(), proj.conics.detach(), opac, feats, proj.depths.detach(),
            proj.extents.detach()]


def _grads(fn, leaves, width, height):
    leaves = [t.clone().requires_grad_() for t in leaves]
    out, alpha = fn(*leaves)
    g = torch.Generator().manual_seed(11)
    w = torch.rand(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_a = torch.rand(alpha.shape, generator=g, dtype=torch.float64).to(out.dtype)
    ((out * w).sum() + (alpha * w_a).sum()).backward()
    return out.detach(), alpha.detach(), [t.grad for t in leaves]


def check_against_reference(width=50, height=37, tiles=(1, 3, 5, 16, 64), threads=(1, 2)):
    """Largest image and relative gradient differences over every tile size and thread count."""
    scene = _screen_scene(width, height)
    inputs, rest = scene[:4], scene[4:]  # means2d, conics, opacities, features get gradients

    def ref(m, c, o, f):
        return rasterize_reference(m, c, o, f, *rest, width, height)

    out_r, alpha_r, g_r = _grads(ref, inputs, width, height)
    worst_img, worst_grad = 0.0, 0.0
    for tile in tiles:
        for n_threads in threads:
            def cpu(m, c, o, f, tile=tile, n_threads=n_threads):
                return rasterize_cpu(m, c, o, f, *rest, width, height, tile=tile,
                                     n_threads=n_threads)

            out_c, alpha_c, g_c = _grads(cpu, inputs, width, height)
            worst_img = max(worst_img, (out_c - out_r).abs().max().item(),
                            (alpha_c - alpha_r).abs().max().item())
            for a, b in zip(g_c, g_r):
                worst_grad = max(worst_grad, ((a - b).norm() / b.norm()).item())
    return worst_img, worst_grad, float(alpha_r.mean())


def test_every_tile_size_and_thread_count_matches_reference_forward_and_backward():
    # 50 x 37 leaves partial tiles for every tile size but 1; tile 1 and 3 are narrower than a
    # SIMD window, so windows reach into the padded part of each row buffer.
    worst_img, worst_grad, coverage = check_against_reference()
    assert 0.3 < coverage < 0.99
    assert worst_img < 1e-5
    assert worst_grad < 1e-4


def _build_with_capability(capability: str) -> dict:
    """check_against_reference in a subprocess whose torch reports `capability`, so that the
    kernel is built (and cached) for that instruction set: its flags and worst differences."""
    code = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from headcap.core.extension import simd_flags\n"
        "from headcap.avatar.gaussians.cpu import avx512_flags\n"
        "from tests.avatar.test_gaussians_simd import check_against_reference\n"
        "img, grad, cov = check_against_reference(tiles=(3, 16), threads=(1, 2))\n"
        "print(json.dumps({'flags': simd_flags() + list(avx512_flags()), 'img': img, "
        "'grad': grad, 'cov': cov}))\n"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_portable_build_matches_reference():
    """The baseline build (4-lane vectors, no -mavx2) is what ARM and older x86 CPUs run; build
    it here by overriding torch's capability and run the same comparison."""
    result = _build_with_capability("default")
    assert result["flags"] == []
    assert result["img"] < 1e-5 and result["grad"] < 1e-4, result


def test_avx2_build_matches_reference():
    """8-lane windows (-mavx2 -mfma, no AVX-512) are what AVX2 CPUs run, while an AVX-512 CPU
    builds 16-lane windows: the 8-lane build, checked the same way wherever the CPU has AVX2."""
    result = _build_with_capability("avx2")
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):  # an x86-64 AVX2 CPU
        assert result["flags"] == ["-mavx2", "-mfma"]
    assert result["img"] < 1e-5 and result["grad"] < 1e-4, result


def test_gradients_are_bit_reproducible_for_any_thread_count():
    """Tiles go to threads dynamically, but each tile writes its per-Gaussian gradients into
    its own slot and every Gaussian sums its slots in tile order: runs repeat exactly, with a
    busy neighbour or not, at 1, 2 or 3 threads alike."""
    width, height = 96, 80
    leaves = _screen_scene(width, height, n=3000, seed=9)
    rest = leaves[4:]

    def cpu(threads):
        return lambda m, c, o, f: rasterize_cpu(m, c, o, f, *rest, width, height, n_threads=threads)

    runs = [_grads(cpu(threads), leaves[:4], width, height)[2] for threads in (2, 2, 2, 1, 3, 2)]
    for grads in runs[1:]:
        for a, b in zip(grads, runs[0]):
            assert torch.equal(a, b)


def test_backward_reads_the_forward_records_only_while_they_are_the_ones_it_packed():
    """The backward pass reuses the per-Gaussian records its forward pass packed when it runs
    on the same thread with no other pass in between (forward, loss, backward), and packs them
    again otherwise (two views forwarded before either backward, a pass on other inputs):
    gradients are the same either way, and the same as each scene's pass alone."""
    width, height = 64, 48
    scene_a = _screen_scene(width, height, n=900, seed=21)
    scene_b = _screen_scene(width, height, n=900, seed=22)

    def forward(scene):
        leaves = [t.clone().requires_grad_() for t in scene[:4]]
        out, alpha = rasterize_cpu(*leaves, *scene[4:], width, height, n_threads=1)
        g = torch.Generator().manual_seed(3)
        loss = (out * torch.rand(out.shape, generator=g)).sum() + (alpha * 0.5).sum()
        return leaves, loss

    alone = {}
    for name, scene in (("a", scene_a), ("b", scene_b)):
        leaves, loss = forward(scene)
        loss.backward()  # forward then backward: the records are reused
        alone[name] = [t.grad for t in leaves]
    leaves_a, loss_a = forward(scene_a)
    leaves_b, loss_b = forward(scene_b)  # b's pack replaces a's records on this thread
    loss_b.backward()
    loss_a.backward()  # a's records are gone: packed again
    for got, want in ((leaves_a, alone["a"]), (leaves_b, alone["b"])):
        for t, g in zip(got, want):
            assert torch.equal(t.grad, g)
    assert any((x - y).abs().max() > 0 for x, y in zip(alone["a"], alone["b"]))


def test_non_finite_pixel_gradient_stays_with_the_gaussians_that_cover_it():
    """A NaN upstream gradient at one pixel reaches only the Gaussians composited there, as in
    the reference: SIMD lanes next to a span must not pick it up."""
    width, height = 40, 32
    m, c, o, f, depths, extents = _screen_scene(width, height, n=400, seed=12)
    leaves = [t.clone().requires_grad_() for t in (m, c, o, f)]
    out, alpha = rasterize_cpu(*leaves, depths, extents, width, height, n_threads=1)
    weight = torch.ones_like(out)
    weight[17, 21] = float("nan")
    (out * weight).sum().backward()
    bad = ~torch.isfinite(leaves[3].grad).all(dim=1)
    # Gaussians that reach pixel (row 17, col 21) with alpha >= 1/255: the reference's rule.
    d = torch.tensor([21.0, 17.0]) - m
    power = -0.5 * (c[:, 0] * d[:, 0] ** 2 + c[:, 2] * d[:, 1] ** 2) - c[:, 1] * d[:, 0] * d[:, 1]
    reaches = (power <= 0) & (torch.clamp(o * power.exp(), max=0.999) >= 1 / 255)
    assert bad.any()
    assert not (bad & ~reaches).any()
