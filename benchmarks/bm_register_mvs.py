"""Issue #11's chain end to end: a synthetic ICT-FaceKit session (16 cameras, 512 px) with an
open jaw and a smile, `headcap reconstruct` (multi-view stereo), then `headcap register`;
registered vertices against the ground truth (known correspondence).

    .venv/bin/python benchmarks/bm_register_mvs.py --session /tmp/ict16        # ~5 CPU-min a frame
    .venv/bin/python benchmarks/bm_register_mvs.py --session /tmp/ict16 --out bench.json

The session is rendered when SESSION/session.json is missing (`headcap synth --frames 3 --fps 2
--seed 26`: the studio's seeded motion then gives frame 0 jawOpen 0.46, frame 1 a smile 0.76
with a funnel 0.52, frame 2 nearly neutral); the geometry is reconstructed when SESSION/geometry
is not up to date, and registration always runs afresh (--force). Both stages run in this
process through the CLI, exactly as a user runs them.

Prints per frame: the truth's jawOpen / smile weights, the MVS seconds (wall, from the stage's
summary, and this process's CPU seconds per frame when it ran here), registration seconds per
frame (wall and CPU, the shared identity fit included), and the registered vertices' error
(median / p95 mm over the observed outer surface: outer vertices with an MVS point within
1.5 mm of their true position, eyeballs left out; the stage's own summary numbers) with the
model fit's alone. The machine's load average is printed: other users' load inflates wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ICT = ROOT.parent / "shared" / "data" / "ict_facekit" / "ict_facekit_light_model.npz"


def _run(argv: list[str]) -> tuple[float, float]:
    from headcap.cli import main as headcap

    wall, cpu = time.perf_counter(), time.process_time()
    code = headcap(argv)
    if code != 0:
        raise SystemExit(f"headcap {' '.join(argv)} exited with {code}")
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--session", type=Path, required=True, help="session folder (rendered here when missing)")
    ap.add_argument("--head", default=f"ict:{ICT}")
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--fps", type=float, default=2.0, help="low: frames far apart in the motion (varied faces)")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--register-args", default="", help="extra flags for headcap register, e.g. '--rounds 5'")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    session = args.session
    load = [os.getloadavg()[0]]
    if not (session / "session.json").is_file():
        _run(["synth", "--out", str(session), "--cameras", str(args.cameras), "--frames", str(args.frames),
              "--resolution", str(args.resolution), "--fps", str(args.fps), "--seed", str(args.seed),
              "--calib-frames", "0", "--head", args.head])
    manifest = json.loads((session / "session.json").read_text())
    T = len(manifest["frames"])
    params = np.load(session / "ground_truth" / "params.npz")
    names = [str(n) for n in params["expression_names"]]

    def weight(t, name):
        return float(params["expression"][t, names.index(name)]) if name in names else float("nan")

    mvs_cpu = None
    summary_path = session / "geometry" / "summary.json"
    if not summary_path.is_file():
        _, cpu = _run(["reconstruct", str(session)])
        mvs_cpu = cpu / T
    load.append(os.getloadavg()[0])
    geometry = json.loads(summary_path.read_text())
    wall, cpu = _run(["register", str(session), "--head", args.head, "--force", *args.register_args.split()])
    load.append(os.getloadavg()[0])
    reg = json.loads((session / "registration" / "summary.json").read_text())
    rows = []
    for g, r in zip(geometry["frames"], reg["per_frame"]):
        t = g["frame"]
        rows.append({"frame": t, "jawOpen": weight(t, "jawOpen"), "smile": weight(t, "mouthSmileLeft"),
                     "mvs_points": g["points"], "mvs_seconds_wall": g["seconds_total"],
                     "surface_error_median_mm": g.get("surface_error_median_mm"),
                     "surface_error_p95_mm": g.get("surface_error_p95_mm"),
                     "error_mm_median": r.get("error_mm_median"), "error_mm_p95": r.get("error_mm_p95"),
                     "fit_error_mm_median": r.get("fit_error_mm_median"), "evaluated_vertices": r.get("evaluated_vertices"),
                     "rigid": r.get("rigid")})
        print(f"frame {t}: jawOpen {rows[-1]['jawOpen']:.2f}, smile {rows[-1]['smile']:.2f}; MVS {g['points']} points, "
              f"{g['seconds_total']:.0f} s wall, surface to truth {g.get('surface_error_median_mm', float('nan')):.3f} mm "
              f"median; registered {r.get('error_mm_median', float('nan')):.3f} / {r.get('error_mm_p95', float('nan')):.3f} mm "
              f"(median / p95 over {r.get('evaluated_vertices')} vertices), model fit alone "
              f"{r.get('fit_error_mm_median', float('nan')):.3f} mm median", flush=True)
    result = {
        "session": f"{args.cameras} cameras x {args.resolution} px, {T} frames, head {Path(args.head.partition(':')[2]).name or args.head}",
        "load_average": load,
        "mvs_seconds_wall_per_frame": float(np.mean([g["seconds_total"] for g in geometry["frames"]])),
        "mvs_seconds_cpu_per_frame": mvs_cpu,
        "registration_seconds_wall_per_frame": wall / T, "registration_seconds_cpu_per_frame": cpu / T,
        "error_mm_median": reg.get("error_mm_median"), "error_mm_p95_max": reg.get("error_mm_p95_max"),
        "frames": rows,
    }
    print(f"MVS {result['mvs_seconds_wall_per_frame']:.0f} s wall per frame"
          + (f", {mvs_cpu:.0f} s CPU" if mvs_cpu is not None else " (geometry reused; CPU not measured here)")
          + f"; registration {wall / T:.1f} s wall, {cpu / T:.1f} s CPU per frame (identity fit included); "
          f"registered: median of frame medians {result['error_mm_median']:.3f} mm, worst frame p95 "
          f"{result['error_mm_p95_max']:.3f} mm (target 0.5 / 2 mm); load average {', '.join(f'{x:.1f}' for x in load)}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
