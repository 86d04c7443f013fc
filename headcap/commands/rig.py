"""`headcap rig show RIG` and `headcap rig convert IN OUT --to FORMAT`."""
from __future__ import annotations

from pathlib import Path

from headcap.calib.camera import Rig
from headcap.calib.formats import FORMATS, read_any, write_any


def register(subparsers) -> None:
    parser = subparsers.add_parser("rig", help="inspect and convert rig (camera calibration) files",
                                   description="Inspect and convert rig files: rig.json, NeRSemble camera_params.json, "
                                               "nerfstudio transforms.json, COLMAP models, OpenCV YAML.")
    sub = parser.add_subparsers(dest="rig_command", metavar="ACTION", required=True)

    show = sub.add_parser("show", help="print a table of the cameras (and draw their frusta)")
    show.add_argument("rig", type=Path, help="rig file, COLMAP model folder, or session folder / session.json")
    show.add_argument("--from", dest="fmt", default="auto", choices=("auto",) + FORMATS,
                      help="format of RIG (default: detect)")
    show.add_argument("--png", type=Path, default=None, help="also draw the camera frusta and ids into this PNG")
    show.set_defaults(handler=_show)

    convert = sub.add_parser("convert", help="convert a rig between formats")
    convert.add_argument("input", type=Path, help="rig file or COLMAP model folder to read")
    convert.add_argument("output", type=Path, help="file (or folder, for COLMAP) to write")
    convert.add_argument("--to", dest="to", required=True, choices=FORMATS, help="format to write")
    convert.add_argument("--from", dest="fmt", default="auto", choices=("auto",) + FORMATS,
                         help="format of INPUT (default: detect)")
    convert.set_defaults(handler=_convert)


def load_rig(path: Path, fmt: str = "auto") -> Rig:
    """A rig from a rig file in any format, or from a session (its session.json names the rig)."""
    path = Path(path)
    is_session = path.name == "session.json" or (path.is_dir() and (path / "session.json").is_file())
    if is_session and fmt == "auto":
        from headcap.capture.session import read_session

        return read_session(path).load_rig()
    return read_any(path, fmt)


def rig_table(rig: Rig, title: str):
    from rich.markup import escape
    from rich.table import Table

    # ids and paths are data, not markup: "[bold]" in a camera id prints as written
    table = Table(title=escape(title))
    for name in ("id", "size", "fx, fy", "cx, cy", "model", "distortion", "centre [m]", "fov [deg]"):
        table.add_column(name, no_wrap=True, justify="left" if name in ("id", "model", "distortion") else "right")
    for cam in rig:
        dist = " ".join(f"{v:+.3g}" for v in cam.distortion) or "-"
        c = cam.centre
        fov = cam.fov_degrees
        table.add_row(escape(cam.id), f"{cam.width}x{cam.height}", f"{cam.K[0, 0]:.1f} {cam.K[1, 1]:.1f}",
                      f"{cam.K[0, 2]:.1f} {cam.K[1, 2]:.1f}", cam.distortion_model, dist,
                      f"{c[0]:+.3f} {c[1]:+.3f} {c[2]:+.3f}", f"{fov[0]:.1f}x{fov[1]:.1f}")
    return table


def plot_frusta(rig: Rig, out: Path, title: str = "") -> Path:
    """Draw every camera as a frustum with its id; world axes at the origin. Writes a PNG."""
    from headcap.calib.rig_plot import plot_rig_3d

    return plot_rig_3d(rig, out, title=title)


def _show(args) -> int:
    import sys

    from rich.console import Console

    rig = load_rig(args.rig, args.fmt)
    # rich falls back to 80 columns when piped, which would wrap every row
    Console(width=None if sys.stdout.isatty() else 160).print(rig_table(rig, f"{args.rig} ({len(rig)} cameras)"))
    if args.png is not None:
        plot_frusta(rig, args.png, title=str(args.rig))
        print(f"wrote {args.png}")
    return 0


def _convert(args) -> int:
    rig = load_rig(args.input, args.fmt)
    write_any(rig, args.output, args.to)
    print(f"wrote {len(rig)} cameras to {args.output} ({args.to})")
    return 0
