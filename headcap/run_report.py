"""The session report of `headcap run`: one self-contained HTML page (SESSION/report.html, every
image and video embedded) that a supervisor can read: warnings first, then each step's numbers,
plots, overlays and videos, the timings, the software versions and the credits.

Each step's section comes from the files in its stage folder: a renderer of its own where one is
registered in SECTIONS (check, calibration, landmarks, ...), else a generic one (summary.json's
numbers, the folder's PNG images and MP4 videos). Later stages register their renderers with
`section(name)`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from headcap.core.fileio import read_json_object_or_none
from headcap.report import Report

#: embedded images/videos larger than this are linked instead (the page stays loadable)
MAX_EMBED_BYTES = 25_000_000
SECTIONS: dict[str, Callable[[Report, Path, Path], None]] = {}


def section(name: str):
    def add(fn):
        SECTIONS[name] = fn
        return fn

    return add


def _media(report: Report, path: Path, root: Path, caption: str, width: int | None = None) -> None:
    inline = path.stat().st_size <= MAX_EMBED_BYTES
    if path.suffix.lower() == ".mp4":
        report.video(path, caption, relative_to=root, width=width or 480, inline=inline)
    else:
        report.image(path, caption, relative_to=root, width=width, inline=inline)


def _scalars(summary: dict, limit: int = 16) -> list[list]:
    rows = []
    for key, value in summary.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or isinstance(value, str) and len(value) > 80:
            continue
        rows.append([key.replace("_", " "), value])
    return rows[:limit]


def generic(report: Report, folder: Path, root: Path) -> None:
    summary = read_json_object_or_none(folder / "summary.json") or read_json_object_or_none(folder / "metrics.json") or {}
    rows = _scalars(summary)
    if rows:
        report.table(["quantity", "value"], rows)
    media = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".mp4") and p.is_file())
    for path in media[:8]:
        _media(report, path, root, path.relative_to(folder).as_posix(), width=480)
    if len(media) > 8:
        report.text(f"{len(media) - 8} more images/videos in {folder.name}/")


@section("check")
def _check(report: Report, folder: Path, root: Path) -> None:
    summary = read_json_object_or_none(folder / "summary.json") or {}
    cams = summary.get("cameras", {})
    report.table(["camera", "images", "size", "rig size", "masks"],
                 [[c, r.get("images"), ", ".join(r.get("sizes", {})), r.get("rig_size", "-"), r.get("masks")]
                  for c, r in cams.items()])
    report.text(f"{summary.get('frames', '?')} frames; {summary.get('calibration_images', 0)} calibration images; "
                f"rig checked against: {summary.get('rig') or 'none'}")


@section("calibration_report")
def _calibration(report: Report, folder: Path, root: Path) -> None:
    summary = read_json_object_or_none(folder / "summary.json") or {}
    cams = summary.get("cameras", {})
    unc = summary.get("uncertainty") or {}
    header = ["camera", "RMS px", "views", "corners", "coverage", "fx", "fy"]
    if unc:
        header += ["focal ±%", "centre ±mm", "rot ±deg"]
    rows = []
    for c, p in cams.items():
        row = [c, p.get("rms_px"), p.get("views"), p.get("corners"), p.get("coverage"), p.get("fx"), p.get("fy")]
        if unc:
            u = unc.get(c, {})
            row += [u.get("focal_pct"), u.get("centre_mm"), u.get("rotation_deg")]
        rows.append(row)
    report.text(f"Bundle adjustment RMS {summary.get('rms_px', float('nan')):.4f} px over "
                f"{summary.get('frames', '?')} board poses (board {summary.get('board', '?')}).")
    report.table(header, rows)
    truth = _calibration_truth(folder, root)
    if truth:
        report.text("Against the session's earlier (here: ground-truth) rig, after a rigid alignment:")
        report.table(["camera", "focal error %", "pp error px", "centre error mm", "rotation error deg"], truth)
    for name in ("rig.png", "coverage.png", "residual_histograms.png"):
        if (folder / name).is_file():
            _media(report, folder / name, root, name[:-4].replace("_", " "), width=420)
    report.text(f"Full calibration report: {folder.name}/index.html")


def _calibration_truth(folder: Path, root: Path) -> list[list]:
    from headcap.calib.rig_compare import compare_rigs
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session

    try:
        session = read_session(root)
        prior = session.extra.get("rig_prior")
        if not prior or not session.extra.get("synthetic"):
            return []
        rows = compare_rigs(read_rig(folder / "rig.json"), read_rig(session.path(prior, "extra.rig_prior"))).rows()
    except (ValueError, OSError, KeyError):
        return []
    return [[r["camera"], r["focal_error_pct"], r["principal_point_error_px"], r["centre_error_mm"],
             r["rotation_error_deg"]] for r in rows]


@section("landmarks")
def _landmarks(report: Report, folder: Path, root: Path) -> None:
    summary = read_json_object_or_none(folder / "summary.json") or {}
    rows = [["views with a face", f"{summary.get('found', '?')} of {summary.get('views', '?')}"]]
    if "triangulated_fraction" in summary:
        rows.append(["points triangulated", f"{summary['triangulated_fraction']:.1%}"])
    if summary.get("rms_px_median") is not None:
        rows.append(["median reprojection RMS px", summary["rms_px_median"]])
    report.table(["quantity", "value"], rows)
    for path in sorted(folder.glob("*.png"))[:4]:
        _media(report, path, root, path.name, width=480)


@section("export")
def _export(report: Report, folder: Path, root: Path) -> None:
    summary = read_json_object_or_none(folder / "summary.json") or {}
    files = summary.get("files") or {}
    report.table(["file", "MB", "what"], [[name, f"{info.get('bytes', 0) / 1e6:.2f}", info.get("note", "")]
                                         for name, info in files.items()])
    report.text(f"{summary.get('morph_targets', '?')} morph targets, joints {summary.get('joints', '?')}, "
                f"{summary.get('frames', '?')} frames of animation. Open them with `headcap view` or any glTF "
                "viewer (docs/export.md).")


def _warnings(record: dict, root: Path) -> list[str]:
    out = []
    for step in record.get("steps", []):
        name = step["name"]
        if step.get("status") == "skipped" and step.get("reason") != "not selected":
            out.append(f"{name}: skipped - {step.get('reason')}")
        summary = read_json_object_or_none(root / name / "summary.json") or {}
        for key in ("warnings", "no_face"):
            values = summary.get(key)
            if isinstance(values, list):
                out += [f"{name}: {v}" for v in values[:20] if isinstance(v, str)]
    return out


def write_session_report(root: Path, record: dict) -> Path:
    """SESSION/report.html from run.json's record and the stage folders."""
    from headcap.capture.session import read_session

    root = Path(root)
    session = read_session(root)
    report = Report(f"headcap run: {session.name}")
    report.text(f"{len(session.cameras)} cameras, {session.frame_count} frames at {session.fps:g} fps; "
                f"headcap {record.get('headcap', '?')}; executor {record.get('executor', {}).get('kind', 'serial')}; "
                f"{record.get('seconds', 0):.1f} s this run.")
    warnings = _warnings(record, root)
    report.heading(f"Warnings ({len(warnings)})")
    if warnings:
        for w in warnings:
            report.text(w, "warn")
    else:
        report.text("none", "ok")
    if (root / "contact_sheet.png").is_file():
        _media(report, root / "contact_sheet.png", root, "the session: one frame seen by every camera", width=640)
    for i, step in enumerate(record.get("steps", []), 1):
        name = step["name"]
        folder = root / name
        status = step.get("status")
        report.heading(f"{i}. {name}")
        if status == "skipped":
            report.text(f"skipped: {step.get('reason')}", "warn")
            continue
        report.text(f"{'ran' if status == 'ran' else 'reused (up to date)'}; {step.get('seconds', 0):.1f} s")
        if not folder.is_dir():
            report.text(f"{name}/ is missing", "bad")
            continue
        SECTIONS.get(name, generic)(report, folder, root)
    report.heading("Timings")
    report.table(["step", "status", "seconds"], [[s["name"], s.get("status"), s.get("seconds", "")]
                                                 for s in record.get("steps", [])])
    report.heading("Software")
    report.table(["package", "version"], [[k, v] for k, v in (record.get("software") or {}).items()])
    credits = session.extra.get("credits") or ([session.extra["licence"]] if session.extra.get("licence") else [])
    if credits:
        report.heading("Credits")
        for credit in credits:
            report.text(str(credit))
    return report.write(root / "report.html")
