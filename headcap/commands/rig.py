"""`headcap rig show RIG` and `headcap rig convert IN OUT --to FORMAT`."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from calib.camera import Rig
from calib.formats import FORMATS, read_any, write_any


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
        from capture.session import read_session

        return read_session(path).load_rig()
    return read_any(path, fmt)


def rig_table(rig: Rig, title: str):
    from rich.table import Table

    table = Table(title=title)
    for name in ("id", "size", "fx, fy", "cx, cy", "model", "distortion", "centre [m]", "fov [deg]"):
        table.add_column(name, no_wrap=True, justify="left" if name in ("id", "model", "distortion") else "right")
    for cam in rig:
        dist = " ".join(f"{v:+.3g}" for v in cam.distortion) or "-"
        c = cam.centre
        fov = cam.fov_degrees
        table.add_row(cam.id, f"{cam.width}x{cam.height}", f"{cam.K[0, 0]:.1f} {cam.K[1, 1]:.1f}",
                      f"{cam.K[0, 2]:.1f} {cam.K[1, 2]:.1f}", cam.distortion_model, dist,
                      f"{c[0]:+.3f} {c[1]:+.3f} {c[2]:+.3f}", f"{fov[0]:.1f}x{fov[1]:.1f}")
    return table


def frustum_corners(cam, depth: float) -> np.ndarray:
    """World positions [4, 3] of the image corners at camera depth `depth` (distortion included)."""
    w, h = cam.width, cam.height
    # outer pixel edges: pixel centres are integers, so the image spans [-0.5, w - 0.5]
    pix = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    return cam.unproject(pix, np.full(4, depth)).numpy()


def plot_frusta(rig: Rig, out: Path, title: str = "") -> Path:
    """Draw every camera as a frustum with its id; world axes at the origin. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from calib.fileio import atomic_write_bytes

    centres = np.array([c.centre for c in rig])
    target = centres.mean(0)
    spread = np.linalg.norm(centres - target, axis=1).max() if len(rig) > 1 else 1.0
    depth = 0.2 * max(spread, 1e-3)
    fig = plt.figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot(projection="3d")
    points = [centres]
    for cam in rig:
        corners = frustum_corners(cam, depth)
        points.append(corners)
        c = cam.centre
        for k in range(4):
            ax.plot(*zip(c, corners[k]), color="tab:blue", lw=0.8)
            ax.plot(*zip(corners[k], corners[(k + 1) % 4]), color="tab:blue", lw=0.8)
        # the top edge (image row 0) in red shows which way is up in the image
        ax.plot(*zip(corners[0], corners[1]), color="tab:red", lw=1.5)
        ax.text(*c, f" {cam.id}", fontsize=7)
    axis_len = 0.3 * max(spread, 1e-3)
    for k, colour in enumerate(("r", "g", "b")):
        end = np.zeros(3)
        end[k] = axis_len
        ax.plot(*zip(np.zeros(3), end), color=colour, lw=2)
    pts = np.concatenate(points + [np.zeros((1, 3))])
    mid, half = (pts.max(0) + pts.min(0)) / 2, (pts.max(0) - pts.min(0)).max() / 2 + 1e-6
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    # show the world axis the cameras agree is "up" (image -y) as the vertical one
    up = -np.mean([c.world_from_cam[:3, 1] for c in rig], axis=0)
    k = int(np.argmax(np.abs(up)))
    ax.view_init(elev=20, azim=-60 if up[k] > 0 else 120, vertical_axis="xyz"[k])
    if up[k] < 0:
        getattr(ax, f"invert_{'xyz'[k]}axis")()
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.set_title(title or f"{len(rig)} cameras (red edge = image top; world axes x r, y g, z b)", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


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
