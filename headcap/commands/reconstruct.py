"""`headcap reconstruct SESSION [--frames A:B]`: per-frame geometry of a calibrated rig session
(multi-view stereo, depth fusion, a TSDF surface; the visual hull where stereo finds nothing),
written into SESSION/geometry (<t>.ply points, <t>_surface.ply mesh, previews, summary.json).
Runs the reconstruct stage (headcap.pipeline.stages.reconstruct), cached on the images, masks,
rig and settings, and resumed frame by frame after an interruption.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.reconstruct import ReconstructStageConfig

    p = subparsers.add_parser(
        "reconstruct", help="per-frame geometry: multi-view stereo, fused points, a TSDF surface",
        description="Reconstruct every frame of a calibrated session: plane-sweep stereo with NCC in every "
                    "view, geometric-consistency fusion into points with normals and confidence, a TSDF "
                    "surface (marching cubes), the visual hull as fallback. Writes SESSION/geometry/.")
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--force", action="store_true", help="recompute even if SESSION/geometry is up to date")
    add_config_arguments(p, ReconstructStageConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.reconstruct import ReconstructStageConfig, reconstruct_stage

    console = Console(stderr=True)
    config = config_from_args(ReconstructStageConfig, args, **given_fields(args, ReconstructStageConfig))
    session = read_session(args.session)
    stage = reconstruct_stage(config, source=Path(args.session))
    pipeline = Pipeline(Path(session.root), [stage], console=console, title="headcap reconstruct")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    summary = read_json(result.folder / "summary.json")
    frames = summary["frames"]
    line = f"{len(frames)} frame(s) reconstructed"
    if "median_surface_error_median_mm" in summary:
        line += f"; surface to ground truth: median {summary['median_surface_error_median_mm']:.3f} mm"
    if summary.get("fallback_frames"):
        line += f"; visual hull fallback in frames {summary['fallback_frames']}"
    if result.status == "cached":
        for f in frames:
            for w in f.get("warnings", []):
                console.print(f"[yellow]{w}[/]")
    console.print(line)
    console.print(f"wrote {result.folder}")
    return 0
