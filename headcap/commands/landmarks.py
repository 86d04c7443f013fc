"""`headcap landmarks SESSION [--models DIR]`: MediaPipe face landmarks in every view of a
session, triangulated with its rig, written into SESSION/landmarks (landmarks2d.npz,
landmarks3d.npz, summary.json). Runs the landmarks stage (headcap.pipeline.stages.landmarks),
cached on the images, the rig, the model files and the settings.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.landmarks import LandmarksStageConfig

    p = subparsers.add_parser(
        "landmarks", help="face landmarks (MediaPipe 468-point mesh) in every view, triangulated with the rig",
        description="Detect the face and its 468 MediaPipe landmarks in every image of a session, and "
                    "triangulate them robustly with the session's rig. Writes SESSION/landmarks/. Models are "
                    "read from --models DIR, never downloaded.")
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--force", action="store_true", help="recompute even if SESSION/landmarks is up to date")
    add_config_arguments(p, LandmarksStageConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.landmarks import LandmarksStageConfig, landmarks_stage

    console = Console(stderr=True)
    fields = given_fields(args, LandmarksStageConfig)
    if fields.get("models"):
        fields["models"] = str(Path(fields["models"]).resolve())
    config = config_from_args(LandmarksStageConfig, args, **fields)
    session = read_session(args.session)
    root = Path(session.root)
    stage = landmarks_stage(config, source=Path(args.session))
    pipeline = Pipeline(root, [stage], console=console, title="headcap landmarks")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    summary = read_json(result.folder / "summary.json")
    line = f"face found in {summary['found']} of {summary['views']} views"
    if "triangulated_fraction" in summary:
        rms = summary.get("rms_px_median")
        line += (f"; {summary['triangulated_fraction']:.0%} of the 468 points triangulated, median reprojection "
                 f"RMS {rms:.2f} px" if rms is not None else "; nothing triangulated")
    if result.status == "cached":
        for msg in summary.get("no_face", []):
            console.print(f"[yellow]{msg}[/]")
    console.print(line)
    console.print(f"wrote {result.folder}")
    return 0
