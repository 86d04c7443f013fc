"""`headcap track SESSION [--head SPEC] [--monocular]`: a head model (identity, expression, joint
rotations, head pose per frame) fitted to a session's images and masks (+ landmarks and
registered meshes when present), written into SESSION/tracking. Runs the tracking stage
(headcap.pipeline.stages.track): cached on the inputs and settings, resumable after a crash.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.track import TrackStageConfig

    p = subparsers.add_parser(
        "track", help="fit a head model to every frame (multi-view or monocular)",
        description="Fit a head model's identity, expressions, joint rotations and head pose to every frame of a "
                    "session from silhouettes, a photometric term and, when present, landmarks "
                    "(SESSION/landmarks) and registered meshes (SESSION/registration). Writes SESSION/tracking/.")
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--force", action="store_true", help="recompute even if SESSION/tracking is up to date")
    add_config_arguments(p, TrackStageConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.track import TrackStageConfig, track_stage

    console = Console(stderr=True)
    config = config_from_args(TrackStageConfig, args, **given_fields(args, TrackStageConfig))
    session = read_session(args.session)
    root = Path(session.root)
    stage = track_stage(config, root)
    pipeline = Pipeline(root, [stage], console=console, title="headcap track")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    summary = read_json(result.folder / "summary.json")
    line = (f"{summary['frames']} frames, {summary['cameras']} camera(s), {summary['head']}: "
            f"{summary['frames_per_second']:.2f} frames/s")
    gt = summary.get("ground_truth")
    if gt and "vertex_error_mm_median" in gt:
        line += f"; against the truth: median vertex error {gt['vertex_error_mm_median']:.2f} mm"
    console.print(line)
    console.print(f"wrote {result.folder}")
    return 0
