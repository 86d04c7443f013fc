"""`headcap calibrate SESSION_OR_FOLDER [--board charuco:COLSxROWS:SQUARE:MARKER:DICT]`.

Input: a session (its session.json lists calibration images per camera under "calibration" and
usually records the board), or a plain folder FOLDER/<camera_id>/*.png|jpg. Runs the calibration
stage (headcap.pipeline.stages.calibrate) into the report folder, cached on the images' content,
the board and the solver settings; then writes rig.json (atomically) and, for a session, points
session.rig at it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    from headcap.calib.calibrate import CalibrationConfig
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.calibrate import CalibrateStageConfig

    p = subparsers.add_parser(
        "calibrate", help="calibrate a camera rig from board images (writes rig.json and a report)",
        description="Detect a ChArUco board or chessboard in every calibration image, initialise each camera, "
                    "chain the cameras over shared board views and bundle-adjust everything. A rerun with the "
                    "same images and settings reuses the result (--force recomputes).")
    p.add_argument("input", type=Path, help="session folder / session.json, or FOLDER/<camera_id>/*.png|jpg")
    p.add_argument("--out", type=Path, default=None, help="rig file to write (default: INPUT/rig.json)")
    p.add_argument("--report", type=Path, default=None,
                   help="report folder (default: next to the rig, calibration_report/)")
    p.add_argument("--force", action="store_true", help="recompute even if the report folder is up to date")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any camera's 1-sigma uncertainty misses a --warn-* threshold "
                        "(the rig and report are still written)")
    add_config_arguments(p, CalibrateStageConfig, skip=("solver",))
    add_config_arguments(p, CalibrationConfig, renames={"distortion_model": "--distortion"},
                         group_title="solver")
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from headcap.calib.boards import BoardSpec
    from headcap.calib.calibrate import CalibrationConfig
    from headcap.calib.rig_io import read_rig, read_rig_uncertainty, write_rig
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args, given_fields
    from headcap.pipeline.stages.calibrate import (CalibrateStageConfig, board_for, calibration_stage,
                                                   find_images)

    console = Console(stderr=True)
    _, session = find_images(args.input)
    solver = given_fields(args, CalibrationConfig)
    stage_fields = given_fields(args, CalibrateStageConfig)
    if stage_fields.get("seed_rig"):
        stage_fields["seed_rig"] = str(Path(stage_fields["seed_rig"]).resolve())
    solver.setdefault("world", "seed" if stage_fields.get("seed_rig") else "first-camera")
    config = config_from_args(CalibrateStageConfig, args, **stage_fields, solver=CalibrationConfig(**solver))
    BoardSpec.parse(board_for(config, session))  # a bad board fails before any work

    root = Path(session.root) if session is not None else Path(args.input)
    out = Path(args.out) if args.out is not None else root / "rig.json"
    report_dir = Path(args.report) if args.report is not None else out.parent / "calibration_report"
    stage = calibration_stage(config, source=Path(args.input), name=report_dir.name,
                              title=f"headcap calibration of {args.input}")
    pipeline = Pipeline(report_dir.parent, [stage], console=console, title="headcap calibrate")
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
        write_rig(read_rig(result.folder / "rig.json"), out, read_rig_uncertainty(result.folder / "rig.json"))
        if session is not None:
            rel = os.path.relpath(out.resolve(), Path(session.root).resolve())
            if rel.startswith(".."):
                console.print(f"[yellow]rig {out} is outside the session; session.json not updated[/]")
            else:
                session.rig = rel
                session.save()
    summary = read_json(result.folder / "summary.json")
    table = Table(title=f"calibration: RMS {summary['rms_px']:.4f} px")
    unc = summary.get("uncertainty") or {}
    uncertain = summary.get("uncertain") or {}
    cols = ("camera", "RMS px", "views", "corners", "outliers", "coverage", "fx", "fy", "cx", "cy")
    if unc:
        cols += ("focal ±%", "pp ±px", "dist ±px", "centre ±mm", "rot ±deg")
    for col in cols:
        table.add_column(col, justify="left" if col == "camera" else "right")
    for c, p in summary["cameras"].items():
        row = [escape(c), f"{p['rms_px']:.4f}", str(p["views"]), str(p["corners"]), str(p["outliers"]),
               f"{p['coverage']:.0%}", f"{p['fx']:.2f}", f"{p['fy']:.2f}", f"{p['cx']:.2f}", f"{p['cy']:.2f}"]
        if unc:
            u, bad = unc.get(c, {}), set(uncertain.get(c, []))

            def cell(key, name, fmt, u=u, bad=bad):
                text = format(u.get(key, float("nan")), fmt)
                return f"[red]{text}[/]" if name in bad else text

            row += [cell("focal_pct", "focal", ".3f"), cell("principal_point_px", "principal_point", ".2f"),
                    cell("distortion_px", "distortion", ".2f"), cell("centre_mm", "centre", ".2f"),
                    cell("rotation_deg", "rotation", ".3f")]
        table.add_row(*row)
    # rich falls back to 80 columns when piped, which would squeeze every number to "…"
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if unc:
        console.print(f"± columns: 1-sigma uncertainty (corner noise {summary.get('noise_px', float('nan')):.3f} px; "
                      "centre and rotation within the rig)")
    if result.status == "cached":
        for n in summary.get("notes", []):
            console.print(f"note: {escape(n)}")
        for w in summary.get("warnings", []):
            console.print(f"[yellow]warning:[/] {w}")
    console.print(f"wrote {out} and {result.folder / 'index.html'}")
    if args.strict and uncertain:
        console.print("headcap calibrate: error: --strict: " + escape(
            f"{len(uncertain)} camera(s) miss the uncertainty thresholds: "
            + "; ".join(f"{c} ({', '.join(v)})" for c, v in uncertain.items())))
        return 1
    return 0
