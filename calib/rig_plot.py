"""3D picture of a rig: camera frusta with their ids, optionally board poses, and the world axes,
drawn with the rig's up direction vertical.

matplotlib's 3D axes keep their z axis vertical, while a rig's world is often y-up (synthetic
studio, NeRSemble) or y-down (OpenCV, first-camera world). So the plot shows the world through a
proper rotation that puts the world axis closest to the cameras' mean up direction (image -y)
on the vertical, and the axis labels say which world axis each plot axis shows.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from headcap.calib.camera import Rig

_AXES = "xyz"


def frustum_corners(cam, depth: float) -> np.ndarray:
    """World positions [4, 3] of the image corners at camera depth `depth` (distortion included)."""
    w, h = cam.width, cam.height
    # outer pixel edges: pixel centres are integers, so the image spans [-0.5, w - 0.5]
    pix = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    return cam.unproject(pix, np.full(4, depth)).numpy()


def plot_from_world(rig: Rig) -> tuple[np.ndarray, list[str]]:
    """(plot_from_world [3, 3] rotation, axis labels [3]): plot z is the world axis (with its
    sign) nearest the cameras' mean up direction; plot x and y are the other two, cyclically."""
    up = -np.mean([c.world_from_cam[:3, 1] for c in rig], axis=0)
    k = int(np.argmax(np.abs(up)))
    sign = 1.0 if up[k] >= 0 else -1.0
    rows = [(k + 1) % 3, (k + 2) % 3, k]
    signs = [1.0, sign, sign]  # flipping two axes keeps the rotation proper
    m = np.zeros((3, 3))
    labels = []
    for i, (axis, s) in enumerate(zip(rows, signs)):
        m[i, axis] = s
        labels.append(f"{'-' if s < 0 else ''}world {_AXES[axis]} (m)")
    labels[2] += ", up"
    return m, labels


def plot_rig_3d(rig: Rig, out, world_from_boards=(), board_size: tuple[float, float] | None = None,
                title: str = "", dpi: int = 100) -> Path:
    """Write a PNG of the cameras as frusta (red edge = image top, so an upside-down camera shows),
    the world axes at the origin (x red, y green, z blue) and, when given, the board outlines
    (world_from_boards: [4, 4] transforms; board_size: (width, height) in metres)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from headcap.core.fileio import atomic_write_bytes

    to_plot, labels = plot_from_world(rig)

    def P(points):  # world [N, 3] -> plot coordinates, as the three columns ax.plot wants
        return tuple((np.asarray(points, float).reshape(-1, 3) @ to_plot.T).T)

    centres = np.array([c.centre for c in rig])
    spread = np.linalg.norm(centres - centres.mean(0), axis=1).max() if len(rig) > 1 else 1.0
    depth = 0.12 * max(spread, 1e-3)
    fig = plt.figure(figsize=(6, 5), dpi=dpi)
    ax = fig.add_subplot(projection="3d")
    points = [centres, np.zeros((1, 3))]
    for cam in rig:
        corners = frustum_corners(cam, depth)
        points.append(corners)
        c = cam.centre
        for k in range(4):
            ax.plot(*P([c, corners[k]]), color="tab:blue", lw=0.8)
            ax.plot(*P([corners[k], corners[(k + 1) % 4]]), color="tab:blue", lw=0.8)
        ax.plot(*P(corners[:2]), color="tab:red", lw=1.5)
        ax.text(*np.ravel(P(c)), f" {cam.id}", fontsize=7)
    boards = list(world_from_boards)
    if boards:
        bw, bh = board_size if board_size is not None else (0.2, 0.15)
        outline = np.array([[0, 0, 0], [bw, 0, 0], [bw, bh, 0], [0, bh, 0], [0, 0, 0]], float)
        for m in boards:
            q = outline @ m[:3, :3].T + m[:3, 3]
            points.append(q)
            ax.plot(*P(q), color="tab:orange", lw=0.6, alpha=0.7)
    axis_len = 0.3 * max(spread, 1e-3)
    for k, colour in enumerate(("r", "g", "b")):
        end = np.zeros(3)
        end[k] = axis_len
        ax.plot(*P([np.zeros(3), end]), color=colour, lw=2)
    pts = np.concatenate(points) @ to_plot.T
    mid, half = (pts.max(0) + pts.min(0)) / 2, (pts.max(0) - pts.min(0)).max() / 2 + 1e-6
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_zlim(mid[2] - half, mid[2] + half)
    ax.set_box_aspect((1, 1, 1))
    for setter, label in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), labels):
        setter(label, fontsize=7)
    ax.tick_params(labelsize=6)
    what = f"{len(rig)} cameras (red edge = image top)" + (f", {len(boards)} board poses (orange)" if boards else "")
    ax.set_title((title + "\n" if title else "") + what + "; world axes x r, y g, z b", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
