"""`headcap synth --out DIR`: render a synthetic rig (or monocular) session with ground truth.

The session is built in DIR.partial and renamed to DIR when complete, so an interrupted run
never leaves a half-written session under DIR.
"""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="render a synthetic session (cameras, calibration frames, images, masks, ground truth)",
        description="Render a synthetic capture session of a head model with known identity, expressions, "
                    "head motion, texture and lighting, seen by a NeRSemble-like rig of distorted cameras "
                    "(or one moving camera), with ChArUco calibration frames and the full ground truth. "
                    "The same seed gives bit-identical files.")
    parser.add_argument("--out", type=Path, required=True, help="session folder to create")
    parser.add_argument("--cameras", type=int, default=16, help="number of rig cameras (default 16)")
    parser.add_argument("--frames", type=int, default=30, help="number of frames (default 30)")
    parser.add_argument("--resolution", type=int, default=256, help="image width and height in pixels (default 256)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="Gaussian image noise sigma, fraction of full scale (default 0; 0.01 = 2.55 grey levels)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--monocular", action="store_true", help="one moving camera instead of the rig")
    parser.add_argument("--scan", default=None, metavar="PATH",
                        help="render the Lee Perry-Smith scan (folder with LeePerrySmith.glb + Map-COL.jpg) instead of a head model")
    parser.add_argument("--head", default="default", metavar="SPEC",
                        help="head model: default | ict:PATH | flame:PATH | npz:PATH (default: default)")
    parser.add_argument("--calib-frames", type=int, default=10, help="ChArUco poses per camera (default 10)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    parser.add_argument("--board", default="auto",
                        help="ChArUco board 'charuco:COLSxROWS:SQUARE:MARKER:DICT' or 'auto' (default)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads while rendering (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier synthetic session")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headcap.studio.synthesize import StudioConfig, synthesize_session

    config = StudioConfig(cameras=args.cameras, frames=args.frames, resolution=args.resolution, noise=args.noise,
                          seed=args.seed, monocular=args.monocular, scan=args.scan, head=args.head,
                          calib_frames=args.calib_frames, fps=args.fps, board=args.board, threads=args.threads)
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
          f"{views} views at {args.resolution} px, {args.calib_frames} calibration frames per camera, "
          f"head {session.extra['head_model']!r}, board {session.extra['board']} in {elapsed:.1f} s "
          f"(render {result.timings['render']:.1f} s, calibration {result.timings['calibration']:.1f} s)")
    print(f"contact sheet: {result.root / 'contact_sheet.png'}")
    return 0
