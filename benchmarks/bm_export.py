"""Export benchmark: a realistic session (16 cameras, 512 px, 30 frames) to a textured, animated
.glb, the ICT-FaceKit head (26,719 vertices, 57 targets) to .glb, and 100k Gaussians to .ply and
KHR_gaussian_splatting .glb; each write is timed with its readback, and the texture bake is
timed against the export without it in the same run.

    python benchmarks/bm_export.py [--cameras 16] [--resolution 512] [--frames 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def timed(fn):
    tic = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--gaussians", type=int, default=100_000)
    args = parser.parse_args()

    from headcap.avatar.export.glb import read_glb
    from headcap.avatar.export.gltf import export_head_glb
    from headcap.avatar.export.gltf_eval import evaluate_mesh_nodes
    from headcap.avatar.export.sequence import read_sequence
    from headcap.avatar.export.splats import Splats, read_ply, write_ply, write_splat_glb
    from headcap.cli import main as cli
    from headcap.reconstruct.head_loaders import load_ict_facekit
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, t = timed(lambda: synthesize_session(StudioConfig(cameras=args.cameras, frames=args.frames,
                                                             resolution=args.resolution, calib_frames=2), tmp / "s"))
        print(f"session: {args.cameras} cameras, {args.frames} frames, {args.resolution} px in {t:.1f} s")
        _, t_plain = timed(lambda: cli(["export", str(tmp / "s"), "--format", "glb", "--out", str(tmp / "a.glb"),
                                        "--texture-size", "0"]))
        _, t_tex = timed(lambda: cli(["export", str(tmp / "s"), "--format", "glb", "--out", str(tmp / "b.glb"),
                                      "--texture-size", "1024"]))
        rows.append(("default head .glb, animated, no texture", t_plain, (tmp / "a.glb").stat().st_size))
        rows.append(("  + 1024 px texture baked from frame 0", t_tex, (tmp / "b.glb").stat().st_size))
        doc, binary = read_glb(tmp / "b.glb")
        _, t_eval = timed(lambda: [evaluate_mesh_nodes(doc, binary, animation=0, key=k) for k in range(args.frames)])
        rows.append((f"  readback: {args.frames} keys through gltf_eval", t_eval, 0))

        data = ROOT.parent / "shared" / "data" / "ict_facekit" / "ict_facekit_light_model.npz"
        if data.is_file():
            ict = load_ict_facekit(data)
            seq = read_sequence(tmp / "s" / "ground_truth" / "params.npz")
            seq.identity, seq.expression_names, seq.expression = np.zeros(0), [], np.zeros((seq.num_frames, 0))
            seq.joint_names, seq.joint_rotations = [], np.zeros((seq.num_frames, 0, 3))
            _, t = timed(lambda: export_head_glb(ict, tmp / "ict.glb", sequence=seq))
            rows.append(("ICT-FaceKit .glb (57 targets, head motion only)", t, (tmp / "ict.glb").stat().st_size))

        rng = np.random.default_rng(0)
        n = args.gaussians
        splats = Splats(rng.normal(size=(n, 3)) * 0.1, rng.normal(size=(n, 4)), rng.normal(size=(n, 3)) - 5,
                        rng.normal(size=n), rng.normal(size=(n, 16, 3)) * 0.2)
        _, t = timed(lambda: write_ply(tmp / "s.ply", splats))
        rows.append((f"{n} Gaussians (SH 3) -> .ply", t, (tmp / "s.ply").stat().st_size))
        _, t = timed(lambda: read_ply(tmp / "s.ply"))
        rows.append(("  read back", t, 0))
        _, t = timed(lambda: write_splat_glb(tmp / "s.glb", splats))
        rows.append((f"{n} Gaussians (SH 3) -> KHR_gaussian_splatting .glb", t, (tmp / "s.glb").stat().st_size))

    print(f"{'what':<52} {'seconds':>8} {'MB':>7}")
    for name, seconds, size in rows:
        print(f"{name:<52} {seconds:8.2f} {size / 1e6:7.2f}")
    print(f"texture bake / export without it: {t_tex / t_plain:.1f}x")


if __name__ == "__main__":
    main()
