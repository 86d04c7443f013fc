"""`headcap calibrate SESSION_OR_FOLDER --board charuco:COLSxROWS:SQUARE:MARKER:DICT`.

Input: a session (its session.json lists calibration images per camera under "calibration"),
or a plain folder FOLDER/<camera_id>/*.png|jpg. Images of different cameras with the same file
stem are one synchronised frame (one board pose). Writes rig.json (atomically), a report folder,
and, for a session, points session.rig at the new rig.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate a camera rig from board images (writes rig.json and a report)",
        description="Detect a ChArUco board or chessboard in every calibration image, initialise each camera, "
                    "chain the cameras over shared board views and bundle-adjust everything.")
    p.add_argument("input", type=Path, help="session folder / session.json, or FOLDER/<camera_id>/*.png|jpg")
    p.add_argument("--board", required=True,
                   help="charuco:COLSxROWS:SQUARE:MARKER:DICT (e.g. charuco:5x7:0.04:0.02:DICT_6X6_250) or "
                        "chessboard:COLSxROWS:SQUARE; COLSxROWS counts squares, lengths in metres")
    p.add_argument("--out", type=Path, default=None, help="rig file to write (default: INPUT/rig.json)")
    p.add_argument("--world", default=None, choices=("first-camera", "board", "centroid", "seed"),
                   help="world frame (default first-camera; 'seed' when --seed-rig is given)")
    p.add_argument("--up", default="y", choices=("y", "z"), help="up axis for --world centroid")
    p.add_argument("--seed-rig", type=Path, default=None,
                   help="existing calibration to refine (rig.json, NeRSemble, nerfstudio, COLMAP, OpenCV YAML)")
    p.add_argument("--distortion", default="opencv", choices=("opencv", "fisheye", "none"), help="lens model")
    p.add_argument("--fix-k3", action="store_true", help="hold k3 at zero")
    p.add_argument("--report", type=Path, default=None, help="report folder (default: next to the rig, calibration_report/)")
    p.add_argument("--min-corners", type=int, default=6, help="fewest corners for a usable view")
    p.set_defaults(handler=run)


def find_images(path: Path) -> tuple[dict[str, list[Path]], object]:
    """({camera: [image paths]}, session or None)."""
    path = Path(path)
    if path.name == "session.json" or (path.is_dir() and (path / "session.json").is_file()):
        from headcap.capture.session import read_session

        session = read_session(path)
        if not session.calibration:
            raise ValueError(f"{session.manifest_path}: field 'calibration' is empty; the session lists no calibration images")
        images = {cam: [session.path(rel, f"calibration.{cam}[{i}]") for i, rel in enumerate(files)]
                  for cam, files in session.calibration.items()}
        return images, session
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a session or a folder of camera folders")
    images = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            images[sub.name] = files
    if not images:
        raise ValueError(f"{path}: no camera folders with images (expected {path}/<camera_id>/*.png|jpg)")
    return images, None


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from headcap.calib.boards import BoardSpec
    from headcap.calib.calib_report import write_report
    from headcap.calib.calibrate import CalibrationConfig, calibrate_rig
    from headcap.calib.detect import detect_images
    from headcap.calib.rig_io import write_rig

    console = Console(stderr=True)
    spec = BoardSpec.parse(args.board)
    images, session = find_images(args.input)
    seed = None
    if args.seed_rig is not None:
        from headcap.calib.formats import read_any

        seed = read_any(args.seed_rig)
    world = args.world or ("seed" if seed is not None else "first-camera")
    config = CalibrationConfig(distortion_model=args.distortion, fix_k3=args.fix_k3, world=world, up=args.up)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("detecting", total=sum(len(v) for v in images.values()))
        detections = detect_images(images, spec, args.min_corners,
                                   progress=lambda done, total, label: progress.update(task, completed=done, description=f"detect {label}"))
    n_ok = sum(d.usable for v in detections.values() for d in v)
    console.print(f"detected the board in {n_ok} of {sum(len(v) for v in detections.values())} images")
    with console.status("calibrating") as status:
        result = calibrate_rig(detections, config, seed=seed, progress=lambda msg: status.update(msg))

    root = session.root if session is not None else Path(args.input)
    out = args.out or Path(root) / "rig.json"
    write_rig(result.rig, out)
    report_dir = args.report or out.parent / "calibration_report"
    write_report(result, report_dir, spec, title=f"headcap calibration of {args.input}",
                 detections_summary=[d.summary() for v in detections.values() for d in v])
    if session is not None:
        session.rig = os.path.relpath(Path(out).resolve(), Path(session.root).resolve())
        if session.rig.startswith(".."):
            console.print(f"[yellow]rig {out} is outside the session; session.json not updated[/]")
        else:
            session.save()
    from rich.table import Table

    table = Table(title=f"calibration: RMS {result.rms:.4f} px")
    for col in ("camera", "RMS px", "views", "corners", "outliers", "coverage", "fx", "fy", "cx", "cy"):
        table.add_column(col, justify="left" if col == "camera" else "right")
    for c, p in result.per_camera.items():
        table.add_row(c, f"{p['rms_px']:.4f}", str(p["views"]), str(p["corners"]), str(p["outliers"]),
                      f"{p['coverage']:.0%}", f"{p['fx']:.2f}", f"{p['fy']:.2f}", f"{p['cx']:.2f}", f"{p['cy']:.2f}")
    # rich falls back to 80 columns when piped, which would squeeze every number to "…"
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"wrote {out} and {report_dir / 'index.html'}")
    return 0
