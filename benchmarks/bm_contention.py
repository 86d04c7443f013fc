"""Kernels under contention: every C++ kernel and the static fit, quiet and beside a busy process.

    python benchmarks/bm_contention.py                    # 3 rounds, all cases
    python benchmarks/bm_contention.py --rounds 1 --cases gauss
    python benchmarks/bm_contention.py --json out.json
    python benchmarks/bm_contention.py --interleaved --repeats 10   # new vs fixed, run by run

Cases (each in its own subprocess, so that thread counts and OpenMP runtimes are its own):
- `gauss`: Gaussian kernel forward + backward, 100k Gaussians @ 512 px, SH degree 3, fp32:
  projection, compositing, compositing backward, projection backward (the kernel entry points,
  no autograd), `new` = this checkout's sources with the thread count as shipped
  (`core.threads.kernel_threads()` per call: torch's count lowered to the CPUs other processes
  leave free; torch's own ops in the call on no more threads, as the wrappers do), `fixed` = the same kernels at exactly the requested count (dynamic count off),
  `old` = the sources at `--old-rev` (copied to a folder under the temp dir by `git show` and
  built in the same run; OpenMP, as before #20).
- `mesh`: mesh rasterizer, a 160k-triangle sphere filling a 1024 px image, `new`, `fixed`, `old`.
- `fit`: `avatar.static_fit.fit_static_gaussians` (8k Gaussians, 4 views of 256 px), `new` =
  as shipped (torch's ops on one thread, kernel threads passive and dynamic), `fixed` = the same
  with the dynamic count off, `torchpool` = the loop with torch's own pool at the kernel's
  thread count and the dynamic count off (what it did before #20).
Each child reports the median of `--repeats` timed runs after a warm-up. A round runs every
(case, variant, threads) child quiet and then with a competing busy process (a Python busy
loop started by this script, unpinned); rounds alternate, and the table shows
medians over rounds. Ratios: `2t/1t` = speed at 2 threads over speed at 1 thread under the
same load (>= 1: the second thread helps); `new/old` = old time / new time (> 1: faster).
The machine's own load average is printed: other users' work also competes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GAUSS_FILES = ["gauss_raster.cpp", "gauss_raster_project.cpp", "gauss_raster_math.h",
               "gauss_raster_project.h", "gauss_raster_bin.h", "gauss_raster_bindings.h",
               "gauss_raster_simd.h"]
VARIANTS = {"gauss": ("new", "fixed", "old"), "mesh": ("new", "fixed", "old"),
            "fit": ("new", "fixed", "torchpool")}


# ---------------------------------------------------------------- children
def _gauss_module(variant: str, old_dir: Path | None):
    from headcap.core.extension import load_extension

    if variant in ("new", "fixed"):
        from headcap.avatar.gaussians.cpu import load_cpu_kernel

        return load_cpu_kernel()
    d = old_dir / "gauss"
    return load_extension("gauss_raster_bm_old", [d / "gauss_raster.cpp", d / "gauss_raster_project.cpp"],
                          extra_cflags=(f"-I{d}",), headers=tuple(sorted(d.glob("*.h"))), simd=True)


def setup_gauss(variant: str, old_dir: Path | None):
    import torch

    from headcap.avatar.gaussians.synthetic import pinhole, random_scene

    mod = _gauss_module(variant, old_dir)
    n, res = 100_000, 512
    K, cfw = pinhole(res, res, torch.float32)
    leaves = random_scene(n, seed=0, dtype=torch.float32, sh_degree=3,
                          log_scale_mean=-3.5 + 0.5 * math.log(1e5 / n))
    means, quats, scales, opac, sh = [t.detach().contiguous() for t in leaves]
    g_img = torch.linspace(-1, 1, res * res * 4).reshape(res, res, 4)
    g_alpha = torch.linspace(1, -1, res * res).reshape(res, res)

    def run(count):  # each backward on its forward's count, as the autograd functions do
        with_torch = _torch_threads_for(count)
        tp = count()
        with with_torch(tp):
            m2, co, fe, ex, _ = mod.project_forward(means, quats, scales, opac, sh, K, cfw, res,
                                                    res, 0.01, 1e10, 0.3, tp)
        tr = count()
        with with_torch(tr):
            _, ft, last, off, ids = mod.rasterize_forward(m2, co, opac, fe, fe[:, 3].contiguous(),
                                                          ex, res, res, 16, tr)
        with with_torch(tr):
            gm, gc, _, gf = mod.rasterize_backward(m2, co, opac, fe, ex, off, ids, ft, last, g_img,
                                                   g_alpha, res, res, 16, tr)
        with with_torch(tp):
            mod.project_backward(means, quats, scales, sh, K, cfw, res, res, 0.01, 1e10, 0.3, gm,
                                 gc, gf.contiguous(), tp)

    return run, 1


def _sphere(res: int, subdiv: int = 200):
    import torch

    u = torch.linspace(0, math.pi, subdiv + 1, dtype=torch.float64)
    v = torch.linspace(0, 2 * math.pi, 2 * subdiv + 1, dtype=torch.float64)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    r, f, z0 = 0.45, 1.2 * res, 1.2
    xyz = torch.stack([r * torch.sin(uu) * torch.cos(vv), r * torch.cos(uu),
                       z0 + r * torch.sin(uu) * torch.sin(vv)], -1).reshape(-1, 3)
    screen = torch.stack([f * xyz[:, 0] / xyz[:, 2] + res / 2, f * xyz[:, 1] / xyz[:, 2] + res / 2,
                          xyz[:, 2]], -1).contiguous()
    cols = 2 * subdiv + 1
    i, j = torch.meshgrid(torch.arange(subdiv), torch.arange(2 * subdiv), indexing="ij")
    a = (i * cols + j).reshape(-1)
    faces = torch.cat([torch.stack([a, a + cols, a + 1], -1),
                       torch.stack([a + 1, a + cols, a + cols + 1], -1)]).contiguous()
    return screen, faces


def setup_mesh(variant: str, old_dir: Path | None):
    from headcap.core.extension import load_extension

    res = 1024
    screen, faces = _sphere(res)
    if variant in ("new", "fixed"):
        from headcap.reconstruct.rasterize_mesh import _extension, kernel_thread_count

        mod = _extension()

        def run(count):  # as shipped: the rasterizer's own rule (keeps its count at 1024 px)
            t = kernel_thread_count(res, res) if getattr(count, "shipped", False) else count()
            with _torch_threads_for(count)(t):
                mod.rasterize_forward(screen, faces, res, res, 1e-3, False, False, t)

        return run, 1
    mod = load_extension("mesh_raster_bm_old", [old_dir / "mesh" / "mesh_raster.cpp"])
    return (lambda count: mod.rasterize_forward(screen, faces, res, res, 1e-3, False, False)), 1


def setup_fit(variant: str, old_dir: Path | None):
    """The fit's kernels take their count from `kernel_threads()` (torch's count, dynamic or
    not as `_thread_count` set it); `run` ignores `count`."""
    import contextlib

    import numpy as np
    import torch

    import headcap.avatar.static_fit as sf
    from headcap.calib.camera import Camera, look_at

    g = torch.Generator().manual_seed(0)
    n, res = 8000, 256
    d = torch.randn(n, 3, generator=g)
    points = 0.1 * d / d.norm(dim=1, keepdim=True)
    K = torch.tensor([[2.5 * res, 0, res / 2], [0, 2.5 * res, res / 2], [0, 0, 1]])
    views = []
    yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    disc = (((xx - res / 2) ** 2 + (yy - res / 2) ** 2) < (0.3 * res) ** 2).float()
    for k in range(4):
        ang = 2 * math.pi * k / 4
        cam = Camera(id=f"c{k}", width=res, height=res, K=K.numpy().astype(np.float64),
                     cam_from_world=look_at([0.6 * math.sin(ang), 0.0, -0.6 * math.cos(ang)], [0, 0, 0]))
        image = torch.stack([xx / res, yy / res, 0.5 + 0 * xx], -1) * disc[..., None]
        views.append(sf.View(cam, image, disc))
    if variant == "torchpool":  # the loop as it ran before: torch's pool at the kernel's count
        sf.serial_torch_ops = lambda *a, **k: contextlib.nullcontext()  # noqa: E731
    iterations = 20
    config = sf.StaticFitConfig(iterations=iterations)
    return (lambda count: sf.fit_static_gaussians(points, views, config)), iterations


def _thread_count(variant: str, threads: int):
    """Per-call thread count: `new` asks `kernel_threads()` (torch's count, set to `threads` by
    the child, lowered to the free CPUs); the others use `threads` as given."""
    from headcap.core import threads as hc_threads

    if variant == "new":
        hc_threads.set_dynamic(True)
        count = lambda: hc_threads.kernel_threads()  # noqa: E731
        count.shipped = True
        return count
    hc_threads.set_dynamic(False)
    return lambda: threads


def _torch_threads_for(count):
    """As shipped, torch's own ops in a kernel call run on at most the kernel's count (the
    library's wrappers do that); `fixed` leaves torch's count as it is."""
    import contextlib

    from headcap.core.threads import kernel_torch_threads

    return kernel_torch_threads if getattr(count, "shipped", False) else (
        lambda n: contextlib.nullcontext(n))


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and first-use build)
    out = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        out.append(time.perf_counter() - tic)
    return out


SETUPS = {"gauss": setup_gauss, "mesh": setup_mesh, "fit": setup_fit}
CHILDREN = SETUPS  # the cases


def child(case: str, variant: str, threads: int, repeats: int, old_dir: Path) -> dict:
    """One (case, variant, threads) in this process: median of `repeats` runs after a warm-up."""
    import torch

    from headcap.core.threads import LOAD_MONITOR

    torch.set_num_threads(threads)
    count = _thread_count(variant, threads)
    run, per = SETUPS[case](variant, old_dir)
    times = [t / per for t in _timed(lambda: run(count), repeats)]
    return {"median_s": statistics.median(times), "times_s": times,
            "counts": {str(k): v for k, v in sorted(LOAD_MONITOR.decisions.items())}}


def child_interleaved(case: str, repeats: int) -> dict:
    """`new` and `fixed` at 1 and 2 threads in this one process, one run of each in turn
    (order rotated per repeat), so that a change in others' load hits all four alike."""
    import torch

    from headcap.core.threads import LOAD_MONITOR

    combos = [("new", 1), ("fixed", 1), ("new", 2), ("fixed", 2)]
    run, per = SETUPS[case]("new", None)
    for variant, threads in combos:  # warm-up
        torch.set_num_threads(threads)
        run(_thread_count(variant, threads))
    times: dict[str, list[float]] = {f"{v}/{t}": [] for v, t in combos}
    counts: dict[str, dict[int, int]] = {}
    for r in range(repeats):
        for variant, threads in combos[r % 4:] + combos[:r % 4]:
            torch.set_num_threads(threads)
            count = _thread_count(variant, threads)
            before = dict(LOAD_MONITOR.decisions)
            tic = time.perf_counter()
            run(count)
            times[f"{variant}/{threads}"].append((time.perf_counter() - tic) / per)
            c = counts.setdefault(f"{variant}/{threads}", {})
            for k, v in LOAD_MONITOR.decisions.items():
                if v - before.get(k, 0):
                    c[k] = c.get(k, 0) + v - before.get(k, 0)
    return {key: {"median_s": statistics.median(v), "times_s": v,
                  "counts": {str(k): n for k, n in sorted(counts.get(key, {}).items())}}
            for key, v in times.items()}


# ---------------------------------------------------------------- parent
def prepare_old(rev: str, folder: Path) -> Path:
    (folder / "gauss").mkdir(parents=True, exist_ok=True)
    (folder / "mesh").mkdir(parents=True, exist_ok=True)

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout

    for name in GAUSS_FILES:
        (folder / "gauss" / name).write_text(show(f"avatar/csrc/gauss_raster/{name}"))
    (folder / "mesh" / "mesh_raster.cpp").write_text(show("reconstruct/csrc/mesh_raster/mesh_raster.cpp"))
    return folder


def run_child(case: str, variant: str, threads: int, repeats: int, old_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", case, variant, str(threads), str(repeats), str(old_dir)]
    return _run(cmd, env, f"{case}/{variant}/{threads}")


def run_child_interleaved(case: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child-interleaved", case, str(repeats)]
    return _run(cmd, dict(os.environ, OMP_NUM_THREADS="2"), f"{case} (interleaved)")


def _run(cmd: list[str], env: dict, what: str) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{what}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# The competing busy process: pure Python arithmetic, which ends by itself once this script is
# gone (even when killed), checking its parent every ~20 ms.
HOG = """import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CHILDREN), choices=list(CHILDREN))
    parser.add_argument("--old-rev", default="7002897",
                        help="git revision of the old kernels (before the contention work)")
    parser.add_argument("--variants", nargs="+",
                        help="only these variants (default: all of each case's)")
    parser.add_argument("--interleaved", action="store_true",
                        help="`new` and `fixed` at 1 and 2 threads in one process per case, run "
                             "by run in turn (`--repeats` runs of each; no `old`/`torchpool`)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--child-interleaved", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, variant, threads, repeats, old_dir = args.child
        print(json.dumps(child(case, variant, int(threads), int(repeats), Path(old_dir))))
        return
    if args.child_interleaved:
        case, repeats = args.child_interleaved
        print(json.dumps(child_interleaved(case, int(repeats))))
        return

    variants = {case: tuple(v for v in VARIANTS[case] if not args.variants or v in args.variants)
                for case in args.cases}
    if args.interleaved:
        variants = {case: ("new", "fixed") for case in args.cases}
    results: dict[tuple, list[float]] = {}
    # A fixed folder per revision (the include path is part of the build's cache key, so the old
    # kernels are built once, not on every run).
    old_dir = prepare_old(args.old_rev, Path(tempfile.gettempdir()) / f"headcap_bm_old_{args.old_rev}")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, load average at start: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; old kernels from {args.old_rev}",
          flush=True)
    for rnd in range(args.rounds):
        for loaded in (False, True):
            hog = None
            if loaded:
                hog = subprocess.Popen([sys.executable, "-c", HOG])
                time.sleep(0.5)
            try:
                for case in args.cases:
                    batch = run_child_interleaved(case, args.repeats) if args.interleaved else None
                    for variant in variants[case]:
                        for threads in (1, 2):
                            res = (batch[f"{variant}/{threads}"] if batch is not None else
                                   run_child(case, variant, threads, args.repeats, old_dir))
                            t = res["median_s"]
                            results.setdefault((case, variant, loaded, threads), []).append(t)
                            counts = (" calls by thread count " + json.dumps(res["counts"])
                                      if res.get("counts") else "")
                            print(f"  round {rnd + 1} {'loaded' if loaded else 'quiet '} {case:5s} "
                                  f"{variant:9s} {threads}t {t * 1e3:9.1f} ms  "
                                  f"(load {os.getloadavg()[0]:.2f}){counts}", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, load average at end: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("\n| case | variant | quiet 1t ms | quiet 2t ms | loaded 1t ms | loaded 2t ms | "
          "2t/1t quiet | 2t/1t loaded | loaded 2t vs 1t quiet |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in args.cases:
        for variant in variants[case]:
            q1, q2 = med[(case, variant, False, 1)], med[(case, variant, False, 2)]
            l1, l2 = med[(case, variant, True, 1)], med[(case, variant, True, 2)]
            print(f"| {case} | {variant} | {q1 * 1e3:.1f} | {q2 * 1e3:.1f} | {l1 * 1e3:.1f} | "
                  f"{l2 * 1e3:.1f} | {q1 / q2:.2f} | {l1 / l2:.2f} | {q1 / l2:.2f} |")
    print("\n| case | new vs other (other time / new time) | quiet 1t | quiet 2t | loaded 1t | loaded 2t |")
    print("|---|---|---:|---:|---:|---:|")
    for case in args.cases:
        if "new" not in variants[case]:
            continue
        for other in variants[case]:
            if other == "new":
                continue
            cells = [med[(case, other, ld, th)] / med[(case, "new", ld, th)]
                     for ld in (False, True) for th in (1, 2)]
            print(f"| {case} | new vs {other} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps([{"case": k[0], "variant": k[1], "loaded": k[2],
                                          "threads": k[3], "times_s": v}
                                         for k, v in results.items()], indent=1))


if __name__ == "__main__":
    main()
