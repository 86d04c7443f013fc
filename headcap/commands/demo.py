"""`headcap demo`: the pipeline on a synthetic studio session, with an HTML report."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.demo import DemoConfig
    from headcap.pipeline.cli_config import add_config_arguments

    parser = subparsers.add_parser(
        "demo", help="run the whole chain on a synthetic studio session, to an exported avatar, with a report",
        description="Film a synthetic head in a virtual rig, then run every step of `headcap run` on it: "
                    "calibrate the rig from its ChArUco frames, landmarks (when the face models are "
                    "installed), multi-view stereo, registration, tracking, stabilization, a Gaussian "
                    "avatar trained on the CPU kernel and scored on held-out cameras and frames, and the "
                    "glTF / splat exports; OUT/report.html and OUT/summary.json (numbers against the "
                    "ground truth). Steps that are up to date are reused when the demo is run again; a "
                    "changed option reruns only the steps downstream of it.")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="rerun this step (session, or a step of `headcap run`: calibration_report, geometry, "
                             "tracking, avatar, ...) and the steps after it even if up to date; repeatable")
    add_config_arguments(parser, DemoConfig)
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from headcap.demo import DemoConfig, run_demo
    from headcap.pipeline.cli_config import config_from_args

    report = run_demo(args.out, config_from_args(DemoConfig, args), force=tuple(args.force))
    print(f"report: {report}")
    return 0
