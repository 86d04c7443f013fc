"""Pictures and numbers for docs/tracking.md:

* docs/img/stabilize_errors.png: skull rotation/translation error per frame of robust
  stabilization vs plain all-vertex Procrustes on a jaw-opening, smiling, frowning sequence of
  the default head (vertices straight from the model, 0.2 mm noise), and the numbers;
* docs/img/tracking_overlay.png and docs/img/tracking_jitter.png: `headcap track` on a small
  synthetic studio session (6 cameras, 4 frames, 128 px), the overlay and jitter plot it writes.

    python docs/scripts/tracking_figures.py [--skip-tracking]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


DOCS = Path(__file__).resolve().parents[1]


def stabilization_figure() -> dict:
    import torch

    sys.path.insert(0, str(DOCS.parent / "tests" / "reconstruct"))
    from test_stabilize import jaw_sequence

    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.sequence_plots import plot_series
    from headcap.reconstruct.stabilize import plain_procrustes, rigidity_prior, skull_pose_errors, stabilize_sequence

    model = load_head_model("default")
    verts, truth, neutral = jaw_sequence(model, frames=30, seed=11, noise_m=2e-4)
    plain = skull_pose_errors(plain_procrustes(verts), truth, neutral)
    ours = skull_pose_errors(stabilize_sequence(verts).world_from_head, truth, neutral)
    prior = skull_pose_errors(stabilize_sequence(verts, reference=neutral, prior=rigidity_prior(model)).world_from_head,
                              truth, neutral, align=False)
    plot_series(DOCS / "img" / "stabilize_errors.png", "skull pose error, jaw-opening sequence (30 frames)",
                [("rotation error (deg)", {"plain Procrustes": plain["rotation_deg"], "ours (IRLS)": ours["rotation_deg"],
                                           "ours + model prior": prior["rotation_deg"]}),
                 ("translation error (mm)", {"plain Procrustes": 1000 * plain["translation_m"],
                                             "ours (IRLS)": 1000 * ours["translation_m"],
                                             "ours + model prior": 1000 * prior["translation_m"]})])
    del torch
    return {name: {"rotation_deg_max": float(e["rotation_deg"].max()), "translation_mm_max": float(1000 * e["translation_m"].max())}
            for name, e in (("plain", plain), ("irls", ours), ("irls_prior", prior))}


def tracking_figure() -> dict:
    from headcap.cli import main
    from headcap.core.fileio import read_json
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        synthesize_session(StudioConfig(cameras=6, frames=4, resolution=128, calib_frames=0, seed=3), root)
        if main(["track", str(root)]) != 0:  # the stage's default iterations
            raise SystemExit("track failed")
        shutil.copy(root / "tracking" / "overlay.png", DOCS / "img" / "tracking_overlay.png")
        shutil.copy(root / "tracking" / "jitter.png", DOCS / "img" / "tracking_jitter.png")
        return read_json(root / "tracking" / "summary.json")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--skip-tracking", action="store_true")
    args = p.parse_args()
    numbers = {"stabilization": stabilization_figure()}
    if not args.skip_tracking:
        numbers["tracking"] = tracking_figure()
    print(json.dumps(numbers, indent=1))
