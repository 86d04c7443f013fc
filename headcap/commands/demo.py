"""`headcap demo`: the pipeline on a synthetic studio session, with an HTML report."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the pipeline on a synthetic studio session and write a report",
        description="Film a synthetic head in a virtual rig, calibrate the rig from its ChArUco frames, "
                    "compare with the ground truth, fit Gaussian splats with the calibrated cameras and "
                    "score held-out views. Finished stages are reused when the demo is run again.")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--cameras", type=int, default=8, help="rig cameras (default 8)")
    parser.add_argument("--frames", type=int, default=3, help="frames (default 3)")
    parser.add_argument("--resolution", type=int, default=384, help="image size in pixels (default 384)")
    parser.add_argument("--iterations", type=int, default=300, help="Gaussian fitting steps (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--head", default="default", help="head model: default | ict:PATH | flame:PATH")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from headcap.demo import DemoConfig, run_demo

    config = DemoConfig(cameras=args.cameras, frames=args.frames, resolution=args.resolution,
                        iterations=args.iterations, seed=args.seed, head=args.head)
    report = run_demo(args.out, config)
    print(f"report: {report}")
    return 0
