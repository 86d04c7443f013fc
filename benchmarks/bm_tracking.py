"""Tracking speed and accuracy on synthetic studio sessions (multi-view and monocular).

    python benchmarks/bm_tracking.py [--cameras 16] [--frames 30] [--resolution 256] [--mono-resolution 256]
        [--first 12] [--per-frame 6] [--global 4] [--registered] [--skip-multiview] [--skip-monocular]

Prints frames/s (wall clock, including the first frame's longer fit; and per second of this
process's CPU time, which other jobs on a shared machine inflate far less) and the errors against the
ground truth (reconstruct.tracking_io.evaluate_against_truth). --registered adds a multi-view run
given registered meshes (the truth + 0.3 mm Gaussian noise per vertex: what the registration
stage hands over on good geometry). No assertions on time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run_case(root: Path, cameras: int, frames: int, resolution: int, monocular: bool, iters: tuple[int, int, int],
             registered: bool = False) -> dict:
    import numpy as np
    import torch

    from headcap.core.fileio import read_npz

    from headcap.capture.session import read_session
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.tracking import TrackingConfig, track_sequence
    from headcap.reconstruct.tracking_io import evaluate_against_truth, load_views
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    torch.set_num_threads(2)
    if not root.exists():
        synthesize_session(StudioConfig(cameras=cameras, frames=frames, resolution=resolution, calib_frames=0,
                                        monocular=monocular, seed=7), root)
    session = read_session(root)
    views, cams = load_views(session, monocular=monocular)
    model = load_head_model("default")
    config = TrackingConfig(first_frame_iterations=iters[0], frame_iterations=iters[1], global_iterations=iters[2],
                            monocular=monocular)
    meshes = None
    if registered:
        truth = read_npz(root / "ground_truth" / "vertices.npz")["vertices"].astype(np.float64)
        meshes = truth + np.random.default_rng(0).normal(0.0, 3e-4, truth.shape)
    tic, cpu = time.perf_counter(), time.process_time()
    result = track_sequence(model, views, config, meshes=meshes)
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    mode = "monocular" if monocular else ("multi-view + registered meshes" if registered else "multi-view")
    out = {"mode": mode, "cameras": len(cams), "frames": frames,
           "resolution": resolution, "iterations": iters, "seconds": round(seconds, 1),
           "frames_per_second": round(frames / seconds, 3), "cpu_seconds": round(cpu, 1),
           "frames_per_cpu_second": round(frames / cpu, 3)}
    out.update({k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in evaluate_against_truth(result, root, cams, monocular=monocular).items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--mono-resolution", type=int, default=256)
    p.add_argument("--first", type=int, default=12)
    p.add_argument("--per-frame", type=int, default=6)
    p.add_argument("--global", dest="global_", type=int, default=4)
    p.add_argument("--registered", action="store_true")
    p.add_argument("--skip-multiview", action="store_true")
    p.add_argument("--skip-monocular", action="store_true")
    args = p.parse_args()
    iters = (args.first, args.per_frame, args.global_)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_multiview:
            print(json.dumps(run_case(Path(tmp) / "mv", args.cameras, args.frames, args.resolution, False, iters)), flush=True)
        if args.registered:
            print(json.dumps(run_case(Path(tmp) / "mv", args.cameras, args.frames, args.resolution, False, iters,
                                      registered=True)), flush=True)
        if not args.skip_monocular:
            print(json.dumps(run_case(Path(tmp) / "mono", 1, args.frames, args.mono_resolution, True, iters)), flush=True)


if __name__ == "__main__":
    main()
