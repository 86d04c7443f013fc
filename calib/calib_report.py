"""The calibration report: PNG figures and an HTML page proving (or disproving) a calibration.

Files written into the report folder:
- index.html: per-camera table (RMS, views, corners, outliers, coverage, intrinsics), warnings
- residual_histograms.png: per-camera histogram of corner reprojection errors
- per_view_residuals.png: RMS per camera x frame (blank where the camera did not see the board)
- coverage.png: per-camera heat-map of where the detected corners fell in the image
- uncertainty.png: per-camera 1-sigma uncertainties (focal, principal point, distortion, centre,
  rotation) against the thresholds that raise a warning
- rig.png: 3D plot of the cameras (frusta) and every board pose, the rig's up axis vertical
- report.json: the numbers behind all of it
"""
from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

import numpy as np

from headcap.calib.calibrate import CalibrationResult
from headcap.core.fileio import atomic_write_bytes, atomic_write_text


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    atomic_write_bytes(path, buf.getvalue())


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def plot_residual_histograms(result: CalibrationResult, path: Path, dpi: int = 70) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = result.rig.ids
    rows, cols = _grid(len(cams))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.1 * rows), dpi=dpi, squeeze=False)
    # the range follows the inliers: gross outliers would squeeze them into the first bins
    inliers = np.concatenate([np.linalg.norm(o.residuals[o.inlier], axis=1) for o in result.observations])
    top = max(1.2 * float(inliers.max(initial=0.0)), 1e-3)
    bins = np.linspace(0, top, 30)
    for ax, c in zip(axes.ravel(), cams):
        obs = [o for o in result.observations if o.camera == c]
        err = np.concatenate([np.linalg.norm(o.residuals, axis=1) for o in obs])
        inl = np.concatenate([o.inlier for o in obs])
        ax.hist(np.clip(err[inl], 0, top), bins=bins, color="#3a7ebf")
        if (~inl).any():
            ax.hist(np.clip(err[~inl], 0, top), bins=bins, color="#d9534f")
        ax.set_title(f"{c}  RMS {result.per_camera[c]['rms_px']:.3f} px", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(cams):]:
        ax.axis("off")
    fig.suptitle(f"corner reprojection error (px); red = rejected outliers; errors beyond {top:.2f} px "
                 "are counted in the last bin", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_per_view(result: CalibrationResult, path: Path, dpi: int = 70) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = result.rig.ids
    frames = sorted(result.world_from_board)
    table = np.full((len(cams), len(frames)), np.nan)
    for o in result.observations:
        table[cams.index(o.camera), frames.index(o.frame)] = o.rms
    fig, ax = plt.subplots(figsize=(min(2 + 0.16 * len(frames), 14), 1 + 0.25 * len(cams)), dpi=dpi)
    im = ax.imshow(table, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(cams)), cams, fontsize=6)
    step = max(1, len(frames) // 20)
    ax.set_xticks(range(0, len(frames), step), frames[::step], fontsize=6, rotation=90)
    ax.set_xlabel("frame", fontsize=7)
    fig.colorbar(im, ax=ax, label="view RMS (px)")
    ax.set_title("per-view reprojection RMS of inlier corners (blank: no usable view)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_coverage(result: CalibrationResult, path: Path, dpi: int = 70, bins=(16, 12)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = result.rig.ids
    rows, cols = _grid(len(cams))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), dpi=dpi, squeeze=False)
    for ax, c in zip(axes.ravel(), cams):
        w, h = result.image_sizes[c]
        pix = np.concatenate([o.pixels for o in result.observations if o.camera == c])
        hist, _, _ = np.histogram2d(pix[:, 1], pix[:, 0], bins=(bins[1], bins[0]), range=[[0, h], [0, w]])
        ax.imshow(np.log1p(hist), extent=(0, w, h, 0), cmap="magma", interpolation="nearest")
        ax.set_title(f"{c}  covers {result.per_camera[c]['coverage']:.0%} of an 8x6 grid", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(cams):]:
        ax.axis("off")
    fig.suptitle("board coverage: detected corners per image cell (log)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


UNCERTAINTY_PANELS = (("focal_pct", "focal length (%)"), ("principal_point_px", "principal point (px)"),
                      ("distortion_px", "distortion at image corner (px)"), ("centre_mm", "centre (mm)"),
                      ("rotation_deg", "rotation (deg)"))


def plot_uncertainty(result: CalibrationResult, path: Path, dpi: int = 70) -> None:
    """Bars of each camera's 1-sigma uncertainties, the warning threshold dashed, cameras beyond
    it red (centre and rotation are relative to the reference camera)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = [c for c in result.rig.ids if c in result.uncertainty]
    fig, axes = plt.subplots(1, len(UNCERTAINTY_PANELS), figsize=(3.2 * len(UNCERTAINTY_PANELS), 0.6 + 0.22 * max(len(cams), 4)),
                             dpi=dpi, squeeze=False)
    for ax, (key, label) in zip(axes[0], UNCERTAINTY_PANELS):
        vals = np.array([result.uncertainty[c][key] for c in cams])
        limit = result.thresholds.get(key)
        colours = ["#d9534f" if limit is not None and v > limit else "#3a7ebf" for v in vals]
        ax.barh(range(len(cams)), vals, color=colours)
        if limit is not None:
            ax.axvline(limit, color="k", ls="--", lw=1)
        ax.set_yticks(range(len(cams)), cams, fontsize=6)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
        if len(vals) and vals.max() > 0 and limit is not None and vals.max() > 20 * limit:
            ax.set_xscale("log")
    fig.suptitle("1-sigma uncertainty per camera (dashed: warning threshold; red: beyond it); centre and rotation "
                 "within the rig", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_rig(result: CalibrationResult, path: Path, board_size=None, dpi: int = 80) -> None:
    """3D plot of the calibrated cameras and every board pose, the rig's up axis vertical."""
    from headcap.calib.rig_plot import plot_rig_3d

    plot_rig_3d(result.rig, path, [result.world_from_board[f] for f in sorted(result.world_from_board)],
                board_size, dpi=dpi)


def write_report(result: CalibrationResult, out_dir, board=None, title: str = "headcap calibration",
                 detections_summary: list[dict] | None = None) -> Path:
    """Write every figure, report.json and index.html into `out_dir`; returns index.html's path.
    board: the BoardSpec (for the board outlines in the rig plot)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_residual_histograms(result, out / "residual_histograms.png")
    plot_per_view(result, out / "per_view_residuals.png")
    plot_coverage(result, out / "coverage.png")
    if result.uncertainty:
        plot_uncertainty(result, out / "uncertainty.png")
    plot_rig(result, out / "rig.png", board.size if board is not None else None)
    summary = result.summary()
    summary["board"] = str(board) if board is not None else None
    summary["views"] = [{"camera": o.camera, "frame": o.frame, "rms_px": o.rms, "corners": int(len(o.ids)),
                         "outliers": int((~o.inlier).sum())} for o in result.observations]
    if detections_summary is not None:
        summary["detections"] = detections_summary
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1, default=_jsonable) + "\n")

    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c)}</td><td>{p['rms_px']:.4f}</td><td>{p['views']}</td><td>{p['corners']}</td>"
        f"<td>{p['outliers']}</td><td>{p['coverage']:.0%}</td><td>{p['fx']:.2f}</td><td>{p['fy']:.2f}</td>"
        f"<td>{p['cx']:.2f}</td><td>{p['cy']:.2f}</td></tr>" for c, p in result.per_camera.items())
    warn = "".join(f"<li>{esc(w)}</li>" for w in result.warnings) or "<li>none</li>"
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes) or "<li>none: every parameter is determined by the data</li>"
    unc_rows = "".join(
        f"<tr><td>{esc(c)}</td><td>{u['focal_pct']:.3f}</td><td>{u['fx_px']:.2f} / {u['fy_px']:.2f}</td>"
        f"<td>{u['principal_point_px']:.2f}</td><td>{u['distortion_px']:.2f}</td>"
        f"<td>{', '.join(f'{v:.2g}' for v in u['distortion'])}</td><td>{u['centre_mm']:.2f}</td>"
        f"<td>{u['rotation_deg']:.3f}</td><td>{esc(', '.join(result.uncertain.get(c, [])) or 'ok')}</td></tr>"
        for c, u in result.uncertainty.items())
    uncertainty_html = "" if not result.uncertainty else f"""<h2>Uncertainty (1 sigma)</h2>
<p>From the covariance of the bundle adjustment (Gauss-Newton normal equations at the solution, Schur
complement over the board poses), scaled by the corner noise ({result.noise_px:.3f} px per axis). Centres and
rotations are within the rig (after the alignment calib.rig_compare makes: mean rotation, least-squares centres). Thresholds: {esc(json.dumps(result.thresholds))}.</p>
<table><tr><th>camera</th><th>focal %</th><th>fx / fy px</th><th>principal point px</th><th>distortion px at corner</th>
<th>distortion coefficients</th><th>centre mm</th><th>rotation deg</th><th>beyond threshold</th></tr>{unc_rows}</table>
<img src="uncertainty.png">
<h2>Priors (parameters the data cannot determine)</h2><ul>{notes}</ul>"""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style>
</head><body><h1>{esc(title)}</h1>
<p>Board: {esc(str(board))}. Overall RMS <b>{result.rms:.4f} px</b> (initialisation {result.initial_rms:.3f} px) over
{sum(int(o.inlier.sum()) for o in result.observations)} corners, {len(result.world_from_board)} board poses.</p>
<h2>Warnings</h2><ul>{warn}</ul>
<h2>Cameras</h2><table><tr><th>camera</th><th>RMS px</th><th>views</th><th>corners</th><th>outliers</th>
<th>coverage</th><th>fx</th><th>fy</th><th>cx</th><th>cy</th></tr>{rows}</table>
{uncertainty_html}
<h2>Rig and board poses</h2><img src="rig.png">
<h2>Residual histograms</h2><img src="residual_histograms.png">
<h2>Per-view residuals</h2><img src="per_view_residuals.png">
<h2>Board coverage</h2><img src="coverage.png">
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    return out / "index.html"


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
