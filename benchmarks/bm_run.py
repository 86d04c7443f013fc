"""Executors of `headcap run`: a per-frame step of a 16-camera session (landmarks, or multi-view
stereo with --step geometry) on the serial executor, 2 local worker processes and a private 2-CPU
Ray cluster, in the same run, with the artefacts checked identical; and `headcap batch` over
several sessions, serial vs 2 workers (landmarks only).

    python benchmarks/bm_run.py                         # 16 cameras x 8 frames at 256 px
    python benchmarks/bm_run.py --cameras 16 --frames 8 --resolution 256 --sessions 3
    python benchmarks/bm_run.py --step geometry --frames 4 --resolution 192 --sessions 0

Needs MediaPipe's models (../shared/data/mediapipe_face/models or --models) and Ray for the Ray
row (pip install "headcap[ray]"). Wall-clock seconds on a shared machine: the load average is
printed beside them; speed-ups are ratios to the serial run measured in the same process.
Worker start-up (spawning Python, importing torch, loading the models) is inside the timings.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the steps up to landmarks only: the benchmark times the executors on per-frame work
HEAVY = ("geometry", "registration", "tracking", "stabilize", "avatar", "avatar_eval", "export")
#: what each timed step writes (compared across executors)
OUTPUT = {"landmarks": "landmarks/landmarks2d.npz", "geometry": "geometry/000000_surface.ply"}


def _run(session: Path, models: Path, kind: str, workers: int, step: str = "landmarks") -> float:
    from rich.console import Console

    from headcap.pipeline.chain import read_config_file, run_session
    from headcap.pipeline.executor import ExecutorConfig, make_executor

    config = read_config_file(None)
    import dataclasses

    config["landmarks"] = dataclasses.replace(config["landmarks"], models=str(models))
    config["skip"] = tuple(s for s in HEAVY if s != step)
    config["executor"] = ExecutorConfig(kind=kind, workers=workers)
    tic = time.perf_counter()
    with make_executor(config["executor"]) as executor:
        run_session(session, config, only=(step,), executor=executor, console=Console(file=open(os.devnull, "w")),
                    report=False)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--step", choices=sorted(OUTPUT), default="landmarks")
    parser.add_argument("--models", type=Path,
                        default=Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
                        / "mediapipe_face" / "models")
    args = parser.parse_args()
    from headcap.cli import main as cli

    tmp = Path(tempfile.mkdtemp(prefix="bm_run_"))
    base = tmp / "base"
    cli(["synth", "--out", str(base), "--cameras", str(args.cameras), "--frames", str(args.frames),
         "--resolution", str(args.resolution), "--calib-frames", "12", "--seed", "1"])
    cli(["run", str(base), "--no-report", "--config", str(_config(tmp, args.models))])
    print(f"session: {args.cameras} cameras x {args.frames} frames at {args.resolution} px; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows, reference = [], None
    kinds = [("serial", 1), ("local", 2)]
    try:
        import ray  # noqa: F401

        kinds.append(("ray", 2))
    except ImportError:
        print("ray not installed: no Ray row (pip install \"headcap[ray]\")")
    for kind, workers in kinds:
        copy = tmp / f"s_{kind}"
        shutil.copytree(base, copy)
        seconds = _run(copy, args.models, kind, workers, args.step)
        if args.step == "landmarks":
            with np.load(copy / OUTPUT["landmarks"]) as data:
                arrays = {k: data[k] for k in data.files}
        else:
            arrays = {"bytes": np.frombuffer((copy / OUTPUT[args.step]).read_bytes(), np.uint8)}
        if reference is None:
            reference = arrays
        same = all(np.array_equal(arrays[k], reference[k], equal_nan=arrays[k].dtype.kind == "f") for k in reference)
        rows.append((kind, workers, seconds, same))
    serial = rows[0][2]
    print(f"step: {args.step}")
    print(f"{'executor':<10}{'workers':>8}{'seconds':>10}{'speed-up':>10}  identical")
    for kind, workers, seconds, same in rows:
        print(f"{kind:<10}{workers:>8}{seconds:>10.1f}{serial / seconds:>9.2f}x  {same}")

    if args.sessions < 1:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    folder = tmp / "batch"
    for i in range(args.sessions):
        shutil.copytree(base, folder / f"session{i}")
    timings = {}
    for label, flags in (("serial", ["--executor", "serial"]), ("local x2", ["--executor", "local", "--workers", "2"])):
        for i in range(args.sessions):
            shutil.rmtree(folder / f"session{i}" / "landmarks", ignore_errors=True)
        tic = time.perf_counter()
        cli(["batch", str(folder), "--config", str(_config(tmp, args.models)), *flags])
        timings[label] = time.perf_counter() - tic
    print(f"batch of {args.sessions} sessions (landmarks rerun in each): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
          + f"; speed-up {timings['serial'] / timings['local x2']:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


def _config(tmp: Path, models: Path) -> Path:
    path = tmp / "run.toml"
    path.write_text(f"skip = {list(HEAVY)!r}\n".replace("'", '"') + f'[landmarks]\nmodels = "{models}"\n')
    return path


if __name__ == "__main__":
    main()
