"""Per-frame plots of a fitted sequence (matplotlib, Agg): residuals and jitter (vertex speed and
acceleration), used by the tracking and stabilization stages."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["jitter", "plot_series"]


def jitter(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """Mean vertex speed [T-1] and acceleration [T-2] (metres per frame, per frame^2) of a
    sequence [T, V, 3]; empty arrays for sequences too short."""
    v = np.asarray(vertices, np.float64)
    speed = np.linalg.norm(np.diff(v, axis=0), axis=2).mean(axis=1) if len(v) > 1 else np.zeros(0)
    accel = np.linalg.norm(np.diff(v, 2, axis=0), axis=2).mean(axis=1) if len(v) > 2 else np.zeros(0)
    return {"speed": speed, "acceleration": accel}


def plot_series(path: Path, title: str, panels: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """One PNG with one panel per (y label, {legend: series}); x is the frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import io

    from headcap.core.fileio import atomic_write_bytes

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), squeeze=False)
    for ax, (label, series) in zip(axes[:, 0], panels):
        for name, values in series.items():
            values = np.asarray(values, np.float64)
            ax.plot(np.arange(len(values)), values, label=name, lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("frame")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
