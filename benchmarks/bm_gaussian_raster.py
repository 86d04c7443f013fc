"""Gaussian rasterization speed: C++ CPU kernel vs the torch reference, thread scaling, memory.

    python benchmarks/bm_gaussian_raster.py                 # full grid (~10 min on 2 cores)
    python benchmarks/bm_gaussian_raster.py --quick         # 100k @ 512 only, with ratios
    python benchmarks/bm_gaussian_raster.py --json out.json
    python benchmarks/bm_gaussian_raster.py --against 956961e   # old kernel vs this tree's

`--against COMMIT` builds the CPU kernel's sources as they were at COMMIT (avatar/csrc/
gauss_raster/ and core/csrc/hc_parallel.h, read with `git show`) as a second extension under
its own name (with the AVX-512 flags only where that commit's loader added them), loads both into one process and times forward + backward of 100k Gaussians at
512 px (SH 3, fp32) with old and new interleaved, twice: the whole chain as rasterize_gaussians
runs it (projection + compositing through autograd) and the compositing kernel alone
(rasterize_forward + rasterize_backward on the same projected inputs). Per round, part and
thread count (1, 2) both run `--repeats` times back to back, the order alternating by round.
It prints per-round medians, the median of the rounds' paired old/new ratios (wall clock and
process CPU time) and the load average before and after each round, and checks that both
kernels return the same image (max difference) and gradients (relative difference).

Each case runs in its own subprocess so that its peak RSS and its thread count are its own.
Scenes: `avatar.gaussians.synthetic.random_scene` with world scales shrinking as 1/sqrt(N), so
the screen coverage stays similar across N (a surface covered by N splats). Times are medians
of `--repeats` runs after one warm-up, fp32, as wall clock and as process CPU time (all
threads summed): on a shared machine the wall clock also counts other users' load, so both
ratios are printed together with the load average. The reference is the tile-chunked torch
implementation (16 px blocks, activation checkpointing so 100k @ 512 fits in memory).
`--figure PATH` instead renders docs/img/gaussians_fit.png (photo fit + a random scene).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _case(n: int, res: int, backend: str, threads: int, repeats: int) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from headcap.avatar.gaussians import project_gaussians, rasterize_cpu, rasterize_reference, sh_to_color
    from headcap.avatar.gaussians.cpu import project_cpu
    from headcap.avatar.gaussians.projection import camera_center
    from headcap.avatar.gaussians.synthetic import pinhole, random_scene

    K, cfw = pinhole(res, res, torch.float32)
    params = random_scene(n, seed=0, dtype=torch.float32, sh_degree=3,
                          log_scale_mean=-3.5 + 0.5 * math.log(1e5 / n))

    def render(leaves):
        means, quats, scales, opac, sh = leaves
        if backend == "cpu":  # what rasterize_gaussians(backend="cpu") runs
            means2d, conics, feats, extents, _ = project_cpu(means, quats, scales, opac, sh, K,
                                                             cfw, res, res, n_threads=threads)
            return rasterize_cpu(means2d, conics, opac, feats, feats[:, 3].detach(), extents,
                                 res, res, n_threads=threads)
        proj = project_gaussians(means, quats, scales, opac, K, cfw, res, res)
        colors = sh_to_color(sh, means - camera_center(cfw))
        feats = torch.cat([colors, proj.depths[:, None]], dim=1)
        return rasterize_reference(proj.means2d, proj.conics, opac, feats, proj.depths,
                                   proj.extents, res, res, chunk=16, checkpoint=True)

    times = {"forward": [], "forward_backward": [], "forward_cpu": [], "forward_backward_cpu": []}
    for it in range(repeats + 1):
        leaves = [p.clone().requires_grad_() for p in params]
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            render(leaves)
        t1, c1 = time.perf_counter(), time.process_time()
        out, alpha = render(leaves)
        (out.sum() + alpha.sum()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        if it > 0:
            times["forward"].append(t1 - t0)
            times["forward_backward"].append(t2 - t1)
            times["forward_cpu"].append(c1 - c0)
            times["forward_backward_cpu"].append(c2 - c1)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"n": n, "res": res, "backend": backend, "threads": threads, **med,
            "coverage": float(alpha.detach().mean()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _ms_list(cases: list[dict]) -> str:
    return ", ".join(f"{c['forward_backward'] * 1e3:.0f}" for c in cases)


def write_figure(path: Path) -> None:
    """Photo crop | 5,000 fitted Gaussians | random SH scene rgb | its depth, one PNG row."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    from headcap.avatar.gaussians import rasterize_gaussians
    from headcap.avatar.gaussians.fit_image import fit_image
    from headcap.avatar.gaussians.synthetic import pinhole, random_scene

    data = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
    photo = iio.imread(data / "face_images" / "astronaut_eileen_collins.png")[40:168, 150:278]
    target = torch.from_numpy(photo[..., :3].copy()).float() / 255.0
    fit = fit_image(target, n_gaussians=5000, steps=300, seed=0)
    K, cfw = pinhole(128, 128, torch.float32)
    params = random_scene(20_000, seed=0, dtype=torch.float32, sh_degree=3, log_scale_mean=-3.0)
    out = rasterize_gaussians(*params[:4], sh_coeffs=params[4], K=K, cam_from_world=cfw,
                              width=128, height=128, background=torch.ones(3))
    depth = out.depth.clone()
    shown = depth[out.alpha > 0.5]
    depth = ((depth - shown.min()) / (shown.max() - shown.min())).clamp(0, 1)
    depth[out.alpha <= 0.5] = 1.0
    panels = [target, fit.render, out.rgb.clamp(0, 1), depth[..., None].expand(-1, -1, 3)]
    row = torch.cat([torch.nn.functional.pad(p.permute(2, 0, 1), (2, 2, 2, 2), value=1.0)
                     for p in panels], dim=2).permute(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        iio.imwrite(tmp.name, (row.numpy() * 255).round().astype(np.uint8))
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    print(f"wrote {path}: fit PSNR {fit.psnr:.2f} dB after 300 steps ({fit.backend})")


def _kernel_at(commit: str):
    """The CPU kernel built from its sources at `commit` (cached like any headcap kernel, under
    the name gauss_raster_at_<commit>)."""
    from headcap.avatar.gaussians.cpu import avx512_flags, load_cpu_kernel
    from headcap.core.extension import load_extension

    folders = ["avatar/csrc/gauss_raster", "core/csrc"]
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", commit, *[f + "/" for f in folders]],
                            capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in listed if f.endswith((".cpp", ".h")) and not f.startswith("core/csrc/") or
             f == "core/csrc/hc_parallel.h"]
    if not files:
        raise SystemExit(f"--against {commit}: no kernel sources at that commit")
    tmp = Path(tempfile.mkdtemp(prefix="headcap_kernel_at_"))
    for f in files:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{f}"], capture_output=True,
                              check=True).stdout
        (tmp / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp / f).write_bytes(text)
    sources = sorted(tmp / f for f in files if f.endswith(".cpp"))
    headers = tuple(sorted(tmp / f for f in files if f.endswith(".h")))
    include = [f"-I{tmp / d}" for d in folders]
    # Built with the flags that commit's loader used: the AVX-512 ones (16-lane windows) only
    # from the commit that introduced them on (956961e predates them: its 8-lane AVX2 build).
    loader = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:avatar/gaussians/cpu.py"],
                            capture_output=True, text=True).stdout
    flags = tuple(avx512_flags()) if "def avx512_flags" in loader else ()
    name = f"gauss_raster_at_{commit[:12]}" + ("_avx512" if flags else "")
    old = load_extension(name, sources, extra_cflags=(*include, *flags), headers=headers, simd=True)
    return old, load_cpu_kernel()


def against(commit: str, rounds: int, repeats: int, n: int = 100_000, res: int = 512) -> dict:
    """Old (commit) vs new (this tree) kernel, interleaved in one process; see the docstring."""
    import statistics
    import time

    import torch

    from headcap.avatar.gaussians import cpu as cpu_mod
    from headcap.avatar.gaussians.synthetic import pinhole, random_scene

    old, new = _kernel_at(commit)
    kernels = {"old": old, "new": new}
    K, cfw = pinhole(res, res, torch.float32)
    params = random_scene(n, seed=0, dtype=torch.float32, sh_degree=3,
                          log_scale_mean=-3.5 + 0.5 * math.log(1e5 / n))
    torch.set_num_threads(1)  # torch's own few ops; the kernel threads are passed explicitly
    saved = cpu_mod.load_cpu_kernel

    def step(variant: str, threads: int, want: bool = False):
        cpu_mod.load_cpu_kernel = lambda: kernels[variant]
        try:
            leaves = [p.clone().requires_grad_() for p in params]
            means, quats, scales, opac, sh = leaves
            t0, c0 = time.perf_counter(), time.process_time()
            means2d, conics, feats, extents, _ = cpu_mod.project_cpu(
                means, quats, scales, opac, sh, K, cfw, res, res, n_threads=threads)
            out, alpha = cpu_mod.rasterize_cpu(means2d, conics, opac, feats, feats[:, 3].detach(),
                                               extents, res, res, n_threads=threads)
            (out.sum() + alpha.sum()).backward()
            t1, c1 = time.perf_counter(), time.process_time()
        finally:
            cpu_mod.load_cpu_kernel = saved
        if want:
            return out.detach(), alpha.detach(), [t.grad for t in leaves]
        return t1 - t0, c1 - c0

    # The compositing kernel alone (rasterize_forward + rasterize_backward, what the tile loops
    # and binning cost), on the same projected inputs for both builds.
    with torch.no_grad():
        proj = new.project_forward(*[p.contiguous() for p in params[:4]], params[4].contiguous(), K,
                                   cfw, res, res, 0.01, 1e10, 0.3, 1)
    m2, con, fts, ext = proj[0], proj[1], proj[2], proj[3]
    opac = params[3].contiguous()
    depths = fts[:, 3].contiguous()
    gen = torch.Generator().manual_seed(3)
    g_img = torch.rand(res, res, fts.shape[1], generator=gen)
    g_alpha = torch.rand(res, res, generator=gen)

    def raster(variant: str, threads: int):
        k = kernels[variant]
        t0, c0 = time.perf_counter(), time.process_time()
        out, final_t, last, off, ids = k.rasterize_forward(m2, con, opac, fts, depths, ext, res,
                                                           res, 16, threads)
        k.rasterize_backward(m2, con, opac, fts, ext, off, ids, final_t, last, g_img, g_alpha, res,
                             res, 16, threads)
        return time.perf_counter() - t0, time.process_time() - c0

    a, b = step("old", 1, want=True), step("new", 1, want=True)
    img = max((a[0] - b[0]).abs().max().item(), (a[1] - b[1]).abs().max().item())
    grad = max(((x - y).norm() / x.norm()).item() for x, y in zip(a[2], b[2]))
    print(f"old ({commit}) vs new: image max diff {img:.2e}, gradients max relative diff {grad:.2e}")
    for variant in kernels:  # warm-up: page faults of the first call, thread start
        step(variant, 2)
    parts = {"chain": step, "raster": raster}
    rows = {(p, v, t): [] for p in parts for v in kernels for t in (1, 2)}
    loads = []
    for r in range(rounds):
        load0 = os.getloadavg()[0]
        for part, fn in parts.items():
            for threads in (1, 2):
                for variant in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    runs = [fn(variant, threads) for _ in range(repeats)]
                    rows[part, variant, threads].append((statistics.median(w for w, _ in runs),
                                                         statistics.median(c for _, c in runs)))
        loads.append((load0, os.getloadavg()[0]))
        print(f"round {r + 1}: load {load0:.2f} -> {loads[-1][1]:.2f}; " + ", ".join(
            f"{p} {v} {t}t {rows[p, v, t][-1][0] * 1e3:.0f} ms" for p in parts for t in (1, 2)
            for v in kernels), flush=True)
    result = {"commit": commit, "n": n, "res": res, "rounds": rounds, "repeats": repeats,
              "image_max_diff": img, "grad_max_rel_diff": grad, "loads": loads}
    for part, threads in [(p, t) for p in parts for t in (1, 2)]:
        o, w = rows[part, "old", threads], rows[part, "new", threads]
        wall = sorted(x[0] / y[0] for x, y in zip(o, w))
        cpu = sorted(x[1] / y[1] for x, y in zip(o, w))
        med = lambda v: v[len(v) // 2]  # noqa: E731
        result[f"{part}_{threads}t"] = {"old_ms": [x[0] * 1e3 for x in o], "new_ms": [y[0] * 1e3 for y in w],
                                 "old_cpu_ms": [x[1] * 1e3 for x in o],
                                 "new_cpu_ms": [y[1] * 1e3 for y in w],
                                 "speedup_wall": med(wall), "speedup_cpu": med(cpu)}
        what = "projection + compositing" if part == "chain" else "compositing only"
        print(f"{what}, {threads} thread(s), fwd+bwd {n // 1000}k @ {res}: old median "
              f"{statistics.median(x[0] for x in o) * 1e3:.0f} ms (cpu {statistics.median(x[1] for x in o) * 1e3:.0f}), "
              f"new {statistics.median(y[0] for y in w) * 1e3:.0f} ms (cpu {statistics.median(y[1] for y in w) * 1e3:.0f}); "
              f"old/new per round {', '.join(f'{x:.2f}' for x in wall)} -> median {med(wall):.2f}x wall, "
              f"{med(cpu):.2f}x cpu")
    print(f"load average (1 min) per round: {', '.join(f'{a:.1f}->{b:.1f}' for a, b in loads)} "
          f"on {os.cpu_count()} cores")
    return result


def run_case(n: int, res: int, backend: str, threads: int, repeats: int,
             timeout: float) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--case", f"{n},{res},{backend},{threads},{repeats}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise RuntimeError(f"case {n},{res},{backend} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 100k Gaussians at 512 px")
    parser.add_argument("--threads", type=int, default=2, help="threads for the main grid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling-rounds", type=int, default=5,
                        help="alternating 1-/2-thread runs for the thread-scaling figure")
    parser.add_argument("--ref-timeout", type=float, default=300.0,
                        help="seconds before a reference case is given up")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--figure", type=Path, help="write the docs figure here and exit")
    parser.add_argument("--against", metavar="COMMIT",
                        help="time the kernel at COMMIT against this tree's, interleaved")
    parser.add_argument("--rounds", type=int, default=5, help="rounds for --against")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.against:
        result = against(args.against, args.rounds, args.repeats)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))
        return
    if args.figure:
        write_figure(args.figure)
        return
    if args.case:
        n, res, backend, threads, repeats = args.case.split(",")
        print(json.dumps(_case(int(n), int(res), backend, int(threads), int(repeats))))
        return

    sizes = [100_000] if args.quick else [10_000, 100_000, 300_000]
    resolutions = [512] if args.quick else [256, 512, 1024]
    # The reference is affordable only on the smaller cases; 100k @ 512 is the target case.
    ref_cases = {(100_000, 512)} if args.quick else {(10_000, 256), (10_000, 512),
                                                    (100_000, 256), (100_000, 512)}
    results = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.threads} threads per case")
    print(f"{'N':>8} {'px':>5} {'fwd ms':>8} {'f+b ms':>8} {'f+b cpu-ms':>10} "
          f"{'ref f+b ms':>10} {'ref cpu-ms':>10} {'x fwd':>6} {'x f+b':>6} {'x f+b cpu':>9} "
          f"{'cover':>5} {'peak MB':>7} {'ref MB':>6}")
    for n in sizes:
        for res in resolutions:
            cpu = run_case(n, res, "cpu", args.threads, args.repeats, timeout=600)
            results.append(cpu)
            ref = None
            if (n, res) in ref_cases:
                ref = run_case(n, res, "torch", args.threads, 1, timeout=args.ref_timeout)
                if ref is not None:
                    results.append(ref)

            def cell(value, width, fmt):
                return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"

            get = (lambda key: ref[key]) if ref else (lambda key: None)
            ratio = (lambda key: ref[key] / cpu[key]) if ref else (lambda key: None)
            print(f"{n:>8} {res:>5} {cpu['forward'] * 1e3:8.1f} {cpu['forward_backward'] * 1e3:8.1f} "
                  f"{cpu['forward_backward_cpu'] * 1e3:10.1f} "
                  f"{cell(get('forward_backward') and get('forward_backward') * 1e3, 10, '.0f')} "
                  f"{cell(get('forward_backward_cpu') and get('forward_backward_cpu') * 1e3, 10, '.0f')} "
                  f"{cell(ratio('forward'), 6, '.1f')} {cell(ratio('forward_backward'), 6, '.1f')} "
                  f"{cell(ratio('forward_backward_cpu'), 9, '.1f')} {cpu['coverage']:5.2f} "
                  f"{cpu['peak_rss_mb']:7.0f} {cell(get('peak_rss_mb'), 6, '.0f')}", flush=True)

    # Thread scaling: 1- and 2-thread processes alternate, and the medians over the rounds are
    # compared, so that a burst of load on the shared machine does not land on one side only.
    ones, twos = [], []
    for _ in range(args.scaling_rounds):
        ones.append(run_case(100_000, 512, "cpu", 1, args.repeats, timeout=600))
        twos.append(run_case(100_000, 512, "cpu", 2, args.repeats, timeout=600))
    results += ones + twos

    def median_case(cases):
        return sorted(cases, key=lambda c: c["forward_backward"])[len(cases) // 2]

    one, two = median_case(ones), median_case(twos)
    # Each round's pair ran back to back under the same machine conditions: the median of the
    # paired ratios is the scaling figure; the ratio of the medians is printed beside it.
    paired = sorted(a["forward_backward"] / b["forward_backward"] for a, b in zip(ones, twos))
    paired_fwd = sorted(a["forward"] / b["forward"] for a, b in zip(ones, twos))
    # Single-threaded on both sides: free of OpenMP synchronisation stalls, which hit the
    # reference's thousands of small torch ops far harder than the kernel on a loaded machine.
    ref_one = run_case(100_000, 512, "torch", 1, 1, timeout=args.ref_timeout)
    if ref_one is not None:
        results.append(ref_one)
        print(f"1 thread each, 100k @ 512: reference fwd+bwd {ref_one['forward_backward']:.2f} s, "
              f"kernel {one['forward_backward'] * 1e3:.1f} ms, ratio "
              f"{ref_one['forward_backward'] / one['forward_backward']:.1f}x "
              f"(forward {ref_one['forward'] / one['forward']:.1f}x)")
    print(f"thread scaling, 100k @ 512 fwd+bwd, {len(ones)} alternating rounds: "
          f"1 thread {_ms_list(ones)} ms, 2 threads {_ms_list(twos)} ms; "
          f"speed-up (median of the rounds' ratios) {paired[len(paired) // 2]:.2f}x "
          f"[{', '.join(f'{r:.2f}' for r in paired)}], "
          f"forward {paired_fwd[len(paired_fwd) // 2]:.2f}x; "
          f"ratio of the medians {one['forward_backward'] / two['forward_backward']:.2f}x; "
          f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False,
                                         suffix=".tmp") as tmp:
            json.dump(results, tmp, indent=1)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, args.json)


if __name__ == "__main__":
    main()
