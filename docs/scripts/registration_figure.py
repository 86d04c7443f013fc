"""docs/img/registration.png: the registered template over a synthetic session's image (green =
confident, red = no data) beside its per-vertex error against ground truth.

    .venv/bin/python docs/scripts/registration_figure.py [OUT.png] [--work DIR] [--mvs] [--head SPEC]

Synthesises a 6-camera, 2-frame, 256 px session; writes each frame's geometry from the ground
truth (headcap.studio.scan_points: partial, noisy, holes, outliers) or, with --mvs, runs
`headcap reconstruct` for it; then `headcap register` and joins frame 1's overlay and heat-map.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import cv2

    from headcap.cli import main as headcap
    from headcap.core.ply import write_points
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.registration_fit import fit_faces
    from headcap.studio.scan_points import synthetic_scan

    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "img" / "registration.png")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--mvs", action="store_true")
    ap.add_argument("--head", default="default")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="headcap-registration-"))
    session = work / "session"
    if session.exists():
        shutil.rmtree(session)
    assert headcap(["synth", "--out", str(session), "--cameras", "6", "--frames", "2", "--resolution", "256",
                    "--calib-frames", "0", "--head", args.head]) == 0
    if args.mvs:
        assert headcap(["reconstruct", str(session)]) == 0
    else:
        model = load_head_model(args.head)
        gt = np.load(session / "ground_truth" / "vertices.npz")["vertices"].astype(np.float64)
        rig = json.loads((session / "rig.json").read_text())
        centres = np.array([-np.asarray(c["cam_from_world"])[:3, :3].T @ np.asarray(c["cam_from_world"])[:3, 3]
                            for c in rig["cameras"]])
        for t in range(len(gt)):
            s = synthetic_scan(gt[t], fit_faces(model), centres, np.random.default_rng(t), spacing=0.001,
                               noise=0.0002, holes=3, outliers=0.01)
            write_points(session / "geometry" / f"{t:06d}.ply", s.points, s.normals, s.confidence)
    assert headcap(["register", str(session), "--head", args.head, "--overlays", "2"]) == 0
    reg = session / "registration"
    summary = json.loads((reg / "summary.json").read_text())
    overlay = next(reg / p for p in summary["pictures"] if p.startswith("overlays/000001"))
    heat = reg / "heatmaps" / "000001.png"
    a, b = cv2.imread(str(overlay)), cv2.imread(str(heat))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate([a, b], axis=1))
    frame = summary["per_frame"][1]
    print(f"wrote {args.out}; frame 1: {frame['error_mm_median']:.3f} mm median, {frame['error_mm_p95']:.3f} mm p95")


if __name__ == "__main__":
    main()
