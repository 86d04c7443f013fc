"""`headcap synth --out DIR`: render a synthetic rig (or monocular) session with ground truth.

The session is built in DIR.partial and renamed to DIR when complete, so an interrupted run
never leaves a half-written session under DIR.
"""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.studio.synthesize import StudioConfig

    parser = subparsers.add_parser(
        "synth", help="render a synthetic session (cameras, calibration frames, images, masks, ground truth)",
        description="Render a synthetic capture session of a head model with known identity, expressions, "
                    "head motion, texture and lighting, seen by a NeRSemble-like rig of distorted cameras "
                    "(or one moving camera), with ChArUco calibration frames and the full ground truth. "
                    "The same seed gives bit-identical files.")
    parser.add_argument("--out", type=Path, required=True, help="session folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier synthetic session")
    parser.add_argument("--nersemble", type=Path, default=None, metavar="DIR",
                        help="also write the session as a NeRSemble v1 dataset into DIR (a new folder): "
                             "DIR/000/calibration/camera_params.json and DIR/000/sequences/EXP-1-head/timesteps/"
                             "frame_<t:05d>/images-2x|alpha_map/cam_<serial>.png (headcap.studio.nersemble)")
    add_config_arguments(parser, StudioConfig)
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headcap.pipeline.cli_config import config_from_args
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    config = config_from_args(StudioConfig, args)
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = synthesize_session(config, args.out, progress=progress, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    session = result.session
    views = session.frame_count * len(session.cameras)
    print(f"wrote {result.root}: {len(session.cameras)} camera(s), {session.frame_count} frames, "
          f"{views} views at {config.resolution} px, {config.calib_frames} calibration frames per camera, "
          f"head {session.extra['head_model']!r}, board {session.extra['board']} in {elapsed:.1f} s "
          f"(render {result.timings['render']:.1f} s, calibration {result.timings['calibration']:.1f} s)")
    print(f"contact sheet: {result.root / 'contact_sheet.png'}")
    if args.nersemble is not None:
        from headcap.studio.nersemble import write_nersemble

        dataset = write_nersemble(result.root, args.nersemble)
        print(f"NeRSemble v1 dataset: {dataset.sequence} (camera serials {', '.join(dataset.serials.values())}; "
              f"ingest with `headcap ingest {dataset.participant} --sequence {dataset.sequence.name} --out SESSION`)")
    return 0
