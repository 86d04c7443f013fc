"""Tracking speed and accuracy on synthetic studio sessions (multi-view and monocular).

    python benchmarks/bm_tracking.py [--cameras 16] [--frames 30] [--resolution 256] [--mono-resolution 256]
        [--first 12] [--per-frame 6] [--global 4] [--registered] [--skip-multiview] [--skip-monocular]
        [--landmarks detect|none] [--models DIR] [--seed 7]

Prints frames/s (wall clock, including the first frame's longer fit; and per second of this
process's CPU time, which other jobs on a shared machine inflate far less) and the errors against the
ground truth (reconstruct.tracking_io.evaluate_against_truth). --registered adds a multi-view run
given registered meshes (the truth + 0.3 mm Gaussian noise per vertex: what the registration
stage hands over on good geometry). --landmarks detect (the default) first runs the landmarks stage
(`headcap landmarks`: MediaPipe's detector and 468-point mesh on every image, models from
--models, $HEADCAP_MODELS, `headcap models fetch`'s folder or ../shared/data/mediapipe_face/models) and tracks with its iBUG-68
points, as `headcap run` does; --landmarks none tracks from masks and images alone. No
assertions on time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def default_models() -> Path | None:
    """headcap's own default ($HEADCAP_MODELS, then `headcap models fetch`'s folder), else the
    shared test data's copy."""
    from headcap.reconstruct.face_detect import find_models

    for candidate in (None, Path(__file__).resolve().parents[2] / "shared" / "data" / "mediapipe_face" / "models"):
        try:
            return find_models(candidate)
        except FileNotFoundError:
            continue
    return None


def run_case(root: Path, cameras: int, frames: int, resolution: int, monocular: bool, iters: tuple[int, int, int],
             registered: bool = False, models: Path | None = None, seed: int = 7) -> dict:
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
                                        monocular=monocular, seed=seed), root)
    session = read_session(root)
    model = load_head_model("default")
    landmarks, found = None, None
    if models is not None:
        from headcap.cli import main as cli
        from headcap.reconstruct.tracking_io import read_landmarks

        if not (root / "landmarks" / "landmarks2d.npz").is_file():
            if cli(["landmarks", str(root), "--models", str(models)]) != 0:
                raise SystemExit("headcap landmarks failed")
        landmarks = read_landmarks(root / "landmarks" / "landmarks2d.npz", model, session.cameras, frames)
        found = float(read_npz(root / "landmarks" / "landmarks2d.npz")["found"].mean())
    views, cams = load_views(session, monocular=monocular, landmarks=landmarks)
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
    mode += " + detected landmarks" if landmarks is not None else ", no landmarks"
    out = {"mode": mode, "cameras": len(cams), "frames": frames, "seed": seed, "faces_found": found,
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
    p.add_argument("--landmarks", choices=("detect", "none"), default="detect")
    p.add_argument("--models", type=Path, default=None, help="MediaPipe face models (default: $HEADCAP_MODELS, "
                   "headcap models fetch's folder, ../shared/data/mediapipe_face/models)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    iters = (args.first, args.per_frame, args.global_)
    models = None
    if args.landmarks == "detect":
        models = args.models or default_models()
        if models is None or not (models / "face_landmark.tflite").is_file():
            raise SystemExit("bm_tracking: --landmarks detect needs MediaPipe's face models: pass --models DIR "
                             "(see `headcap models fetch`), or --landmarks none")
    kw = {"models": models, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_multiview:
            print(json.dumps(run_case(Path(tmp) / "mv", args.cameras, args.frames, args.resolution, False, iters, **kw)), flush=True)
        if args.registered:
            print(json.dumps(run_case(Path(tmp) / "mv", args.cameras, args.frames, args.resolution, False, iters,
                                      registered=True, **kw)), flush=True)
        if not args.skip_monocular:
            print(json.dumps(run_case(Path(tmp) / "mono", 1, args.frames, args.mono_resolution, True, iters, **kw)), flush=True)


if __name__ == "__main__":
    main()
