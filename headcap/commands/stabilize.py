"""`headcap stabilize SESSION`: the skull's pose per frame from the session's tracked (or
registered) meshes, robust to expressions, and the stabilized meshes, written into
SESSION/stabilize (params.npz, meshes.npz, jitter.png, summary.json). Runs the stabilize stage
(headcap.pipeline.stages.stabilize), cached on the meshes and the settings.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.stabilize import StabilizeStageConfig

    p = subparsers.add_parser(
        "stabilize", help="remove rigid skull motion from tracked or registered meshes",
        description="Estimate the skull's pose per frame (world_from_head) from SESSION/tracking/meshes.npz "
                    "(or SESSION/registration/meshes.npz) with robust, reweighted Procrustes over the parts "
                    "of the head that stay rigid, and write SESSION/stabilize/.")
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--force", action="store_true", help="recompute even if SESSION/stabilize is up to date")
    add_config_arguments(p, StabilizeStageConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.stabilize import StabilizeStageConfig, stabilize_stage

    console = Console(stderr=True)
    config = config_from_args(StabilizeStageConfig, args, **given_fields(args, StabilizeStageConfig))
    session = read_session(args.session)
    root = Path(session.root)
    stage = stabilize_stage(config, root)
    pipeline = Pipeline(root, [stage], console=console, title="headcap stabilize")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    summary = read_json(result.folder / "summary.json")
    line = f"{summary['frames']} frames from {summary['source']}, median residual {summary['residual_mm_median']:.2f} mm"
    if "ours_rotation_deg_max" in summary:
        line += (f"; against the truth: rotation <= {summary['ours_rotation_deg_max']:.3f} deg "
                 f"(plain Procrustes {summary['plain_rotation_deg_max']:.3f}), translation <= "
                 f"{summary['ours_translation_mm_max']:.3f} mm (plain {summary['plain_translation_mm_max']:.3f})")
    console.print(line)
    console.print(f"wrote {result.folder}")
    return 0
