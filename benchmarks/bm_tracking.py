"""Tracking speed and accuracy on synthetic studio sessions (multi-view and monocular).

    python benchmarks/bm_tracking.py [--cameras 16] [--frames 30] [--resolution 256] [--mono-resolution 256]
        [--first 150] [--per-frame 50] [--global 40] [--skip-multiview] [--skip-monocular]

Prints frames/s (wall clock, including the first frame's longer fit) and the errors against the
ground truth (reconstruct.tracking_io.evaluate_against_truth). No assertions on time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run_case(root: Path, cameras: int, frames: int, resolution: int, monocular: bool, iters: tuple[int, int, int]) -> dict:
    import torch

    from headcap.capture.session import read_session
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.tracking import TrackingConfig, track_sequence
    from headcap.reconstruct.tracking_io import evaluate_against_truth, load_views
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    torch.set_num_threads(2)
    synthesize_session(StudioConfig(cameras=cameras, frames=frames, resolution=resolution, calib_frames=0,
                                    monocular=monocular, seed=7), root)
    session = read_session(root)
    views, cams = load_views(session, monocular=monocular)
    model = load_head_model("default")
    config = TrackingConfig(first_frame_iterations=iters[0], frame_iterations=iters[1], global_iterations=iters[2],
                            monocular=monocular)
    tic = time.perf_counter()
    result = track_sequence(model, views, config)
    seconds = time.perf_counter() - tic
    out = {"mode": "monocular" if monocular else "multi-view", "cameras": len(cams), "frames": frames,
           "resolution": resolution, "iterations": iters, "seconds": round(seconds, 1),
           "frames_per_second": round(frames / seconds, 3)}
    out.update({k: (round(v, 3) if isinstance(v, float) else v)
                for k, v in evaluate_against_truth(result, root, cams, monocular=monocular).items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--mono-resolution", type=int, default=256)
    p.add_argument("--first", type=int, default=150)
    p.add_argument("--per-frame", type=int, default=50)
    p.add_argument("--global", dest="global_", type=int, default=40)
    p.add_argument("--skip-multiview", action="store_true")
    p.add_argument("--skip-monocular", action="store_true")
    args = p.parse_args()
    iters = (args.first, args.per_frame, args.global_)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_multiview:
            print(json.dumps(run_case(Path(tmp) / "mv", args.cameras, args.frames, args.resolution, False, iters)), flush=True)
        if not args.skip_monocular:
            print(json.dumps(run_case(Path(tmp) / "mono", 1, args.frames, args.mono_resolution, True, iters)), flush=True)


if __name__ == "__main__":
    main()
