"""Kernels under contention: every C++ kernel and the static fit, quiet and beside a busy process.

    python benchmarks/bm_contention.py                    # 3 rounds, all cases
    python benchmarks/bm_contention.py --rounds 1 --cases gauss
    python benchmarks/bm_contention.py --json out.json

Cases (each in its own subprocess, so that thread counts and OpenMP runtimes are its own):
- `gauss`: Gaussian kernel forward + backward, 100k Gaussians @ 512 px, SH degree 3, fp32:
  projection, compositing, compositing backward, projection backward (the kernel entry points,
  no autograd), `new` = this checkout's sources, `old` = the sources at `--old-rev` (copied to
  a folder under the temp dir by `git show` and built in the same run; OpenMP, as before #20).
- `mesh`: mesh rasterizer, a 160k-triangle sphere filling a 1024 px image, `new` and `old`.
- `fit`: `avatar.static_fit.fit_static_gaussians` (8k Gaussians, 4 views of 256 px), `new` =
  as shipped (torch's ops on one thread, kernel threads passive), `torchpool` = the same loop
  with torch's own pool at the kernel's thread count (what it did before).
Each child reports the median of `--repeats` timed runs after a warm-up. A round runs every
(case, variant, threads) child quiet and then with a competing busy process (`python -c
"while True: pass"`, started by this script, unpinned); rounds alternate, and the table shows
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
VARIANTS = {"gauss": ("new", "old"), "mesh": ("new", "old"), "fit": ("new", "torchpool")}


# ---------------------------------------------------------------- children
def _gauss_module(variant: str, old_dir: Path | None):
    from headcap.core.extension import load_extension

    if variant == "new":
        from headcap.avatar.gaussians.cpu import load_cpu_kernel

        return load_cpu_kernel()
    d = old_dir / "gauss"
    return load_extension("gauss_raster_bm_old", [d / "gauss_raster.cpp", d / "gauss_raster_project.cpp"],
                          extra_cflags=(f"-I{d}",), headers=tuple(sorted(d.glob("*.h"))), simd=True)


def child_gauss(variant: str, threads: int, repeats: int, old_dir: Path | None) -> list[float]:
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

    def run():
        m2, co, fe, ex, _ = mod.project_forward(means, quats, scales, opac, sh, K, cfw, res, res,
                                                0.01, 1e10, 0.3, threads)
        _, ft, last, off, ids = mod.rasterize_forward(m2, co, opac, fe, fe[:, 3].contiguous(), ex,
                                                      res, res, 16, threads)
        gm, gc, _, gf = mod.rasterize_backward(m2, co, opac, fe, ex, off, ids, ft, last, g_img,
                                               g_alpha, res, res, 16, threads)
        mod.project_backward(means, quats, scales, sh, K, cfw, res, res, 0.01, 1e10, 0.3, gm, gc,
                             gf.contiguous(), threads)

    return _timed(run, repeats)


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


def child_mesh(variant: str, threads: int, repeats: int, old_dir: Path | None) -> list[float]:
    from headcap.core.extension import load_extension

    res = 1024
    screen, faces = _sphere(res)
    if variant == "new":
        from headcap.reconstruct.rasterize_mesh import _extension

        mod = _extension()
        run = lambda: mod.rasterize_forward(screen, faces, res, res, 1e-3, False, False, threads)  # noqa: E731
    else:
        mod = load_extension("mesh_raster_bm_old", [old_dir / "mesh" / "mesh_raster.cpp"])
        run = lambda: mod.rasterize_forward(screen, faces, res, res, 1e-3, False, False)  # noqa: E731
    return _timed(run, repeats)


def child_fit(variant: str, threads: int, repeats: int, old_dir: Path | None) -> list[float]:
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
    times = _timed(lambda: sf.fit_static_gaussians(points, views, sf.StaticFitConfig(iterations=iterations)),
                   repeats)
    return [t / iterations for t in times]  # seconds per iteration


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and first-use build)
    out = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        out.append(time.perf_counter() - tic)
    return out


CHILDREN = {"gauss": child_gauss, "mesh": child_mesh, "fit": child_fit}


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


def run_child(case: str, variant: str, threads: int, repeats: int, old_dir: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", case, variant, str(threads), str(repeats), str(old_dir)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{case}/{variant}/{threads}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CHILDREN), choices=list(CHILDREN))
    parser.add_argument("--old-rev", default="7002897",
                        help="git revision of the old kernels (before the contention work)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, variant, threads, repeats, old_dir = args.child
        import torch

        torch.set_num_threads(int(threads))
        times = CHILDREN[case](variant, int(threads), int(repeats), Path(old_dir))
        print(json.dumps({"median_s": statistics.median(times), "times_s": times}))
        return

    results: dict[tuple, list[float]] = {}
    # A fixed folder per revision (the include path is part of the build's cache key, so the old
    # kernels are built once, not on every run).
    old_dir = prepare_old(args.old_rev, Path(tempfile.gettempdir()) / f"headcap_bm_old_{args.old_rev}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; old kernels from {args.old_rev}",
          flush=True)
    for rnd in range(args.rounds):
        for loaded in (False, True):
            hog = None
            if loaded:
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            try:
                for case in args.cases:
                    for variant in VARIANTS[case]:
                        for threads in (1, 2):
                            t = run_child(case, variant, threads, args.repeats, old_dir)
                            results.setdefault((case, variant, loaded, threads), []).append(t)
                            print(f"  round {rnd + 1} {'loaded' if loaded else 'quiet '} {case:5s} "
                                  f"{variant:9s} {threads}t {t * 1e3:9.1f} ms", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    print("\n| case | variant | quiet 1t ms | quiet 2t ms | loaded 1t ms | loaded 2t ms | "
          "2t/1t quiet | 2t/1t loaded | loaded 2t vs 1t quiet |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in args.cases:
        for variant in VARIANTS[case]:
            q1, q2 = med[(case, variant, False, 1)], med[(case, variant, False, 2)]
            l1, l2 = med[(case, variant, True, 1)], med[(case, variant, True, 2)]
            print(f"| {case} | {variant} | {q1 * 1e3:.1f} | {q2 * 1e3:.1f} | {l1 * 1e3:.1f} | "
                  f"{l2 * 1e3:.1f} | {q1 / q2:.2f} | {l1 / l2:.2f} | {q1 / l2:.2f} |")
    print("\n| case | new vs " + "old (old time / new time) | quiet 1t | quiet 2t | loaded 1t | loaded 2t |")
    print("|---|---|---:|---:|---:|---:|")
    for case in args.cases:
        new, old = VARIANTS[case]
        cells = [med[(case, old, ld, th)] / med[(case, new, ld, th)]
                 for ld in (False, True) for th in (1, 2)]
        print(f"| {case} | {new} vs {old} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps([{"case": k[0], "variant": k[1], "loaded": k[2],
                                          "threads": k[3], "times_s": v}
                                         for k, v in results.items()], indent=1))


if __name__ == "__main__":
    main()
