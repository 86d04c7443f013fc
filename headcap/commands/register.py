"""`headcap register SESSION [--head SPEC]`: a head model's template registered to every frame's
geometry (SESSION/geometry/<t:06d>.ply, from `headcap reconstruct`), written into
SESSION/registration (meshes.npz, params.npz, summary.json, overlays/, heatmaps/). Runs the
register stage (headcap.pipeline.stages.register): cached on the geometry, landmarks, rig and
settings, and resumed frame by frame after an interruption.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.register import RegisterStageConfig

    p = subparsers.add_parser(
        "register", help="register a head-model template to every frame's geometry (meshes in correspondence)",
        description="Fit a head model (shared identity; per-frame expression, jaw/eye joints and pose) to every "
                    "frame's geometry, then add Laplacian-regularised per-vertex offsets. Writes "
                    "SESSION/registration/: template-topology meshes with a per-vertex confidence, the model "
                    "parameters, overlays and (synthetic sessions) error heat-maps.")
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--force", action="store_true", help="recompute even if SESSION/registration is up to date")
    add_config_arguments(p, RegisterStageConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.register import RegisterStageConfig, register_stage

    console = Console(stderr=True)
    fields = given_fields(args, RegisterStageConfig)
    kind, sep, path = str(fields.get("head", "")).partition(":")
    if sep and path:
        fields["head"] = f"{kind}:{Path(path).resolve()}"
    if fields.get("weights"):
        fields["weights"] = str(Path(fields["weights"]).resolve())
    config = config_from_args(RegisterStageConfig, args, **fields)
    session = read_session(args.session)
    stage = register_stage(config, source=Path(args.session))
    pipeline = Pipeline(Path(session.root), [stage], console=console, title="headcap register")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    summary = read_json(result.folder / "summary.json")
    line = f"registered {summary['frames']} frames to the {summary['vertices']}-vertex template"
    if "error_mm_median" in summary:
        line += (f"; against ground truth: median {summary['error_mm_median']:.3f} mm, worst frame p95 "
                 f"{summary['error_mm_p95_max']:.3f} mm")
    console.print(line)
    console.print(f"wrote {result.folder}")
    return 0
