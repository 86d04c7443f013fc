"""`headcap demo`: the pipeline on a synthetic studio session, with an HTML report."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.demo import DemoConfig
    from headcap.pipeline.cli_config import add_config_arguments

    parser = subparsers.add_parser(
        "demo", help="run the pipeline on a synthetic studio session and write a report",
        description="Film a synthetic head in a virtual rig, calibrate the rig from its ChArUco frames, "
                    "compare with the ground truth, fit Gaussian splats with the calibrated cameras and "
                    "score held-out views. Stages that are up to date are reused when the demo is run "
                    "again; a changed option reruns only the stages downstream of it.")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="rerun this stage (session, calibration, splats) even if it is up to date; repeatable")
    add_config_arguments(parser, DemoConfig)
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from headcap.demo import DemoConfig, run_demo
    from headcap.pipeline.cli_config import config_from_args

    report = run_demo(args.out, config_from_args(DemoConfig, args), force=tuple(args.force))
    print(f"report: {report}")
    return 0
