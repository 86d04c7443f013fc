"""The check stage (first step of `headcap run`): is the session what the later stages expect?

Reads every image and mask header (not the pixels), and reports per camera: images present,
their size against the rig's (a camera whose images are not the rig's size would be projected
wrongly by every later stage), masks present, frames missing. Problems that make the session
unusable are errors (the run stops, naming camera and frame); the rest are warnings that lead
the report. Outputs: summary.json (per-camera table, warnings, errors).

Its cache key covers the images, masks, calibration images and the studio's rig (`extra.rig_prior`
or `rig`), not session.json itself, so making the calibrated rig the session's rig does not
invalidate it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.pipeline.stages.check", "headcap.capture.session", "headcap.core.limits")


@dataclass(frozen=True)
class CheckConfig:
    strict: bool = False
    """Stop the run on warnings too (missing masks, frames of another size), not only on errors."""
    min_mask_fraction: float = 0.0
    """Warn when a camera has masks for fewer than this fraction of its frames (0..1)."""

    def __post_init__(self):
        if not 0.0 <= self.min_mask_fraction <= 1.0:
            raise ValueError(f"check: field 'min_mask_fraction' must lie in [0, 1], got {self.min_mask_fraction!r}")


def _inputs(source: Path) -> tuple[Path, ...]:
    from headcap.capture.session import read_session

    session = read_session(source)
    files = list(session.input_files(manifest=False, rig=False))
    prior = session.extra.get("rig_prior") or session.rig
    if prior and session.path(prior, "rig").is_file():
        files.append(session.path(prior, "rig"))
    return tuple(files)


def check_stage(config: CheckConfig, source: Path, name: str = "check") -> Stage:
    files = tuple(p for p in _inputs(source) if p.is_file())

    def run(ctx: StageContext) -> dict:
        return check_into(ctx, Path(source))

    return Stage(name=name, run=run, config=config, files=files, outputs=("summary.json",), code=CODE,
                 description="the session's images, masks and rig")


def check_session(source: Path, config: CheckConfig = CheckConfig()) -> dict:
    """The check itself: {"cameras": {cam: {...}}, "warnings": [...], "errors": [...], ...}."""
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.core.limits import check_image_file

    session = read_session(source)
    prior = session.extra.get("rig_prior") or session.rig
    rig = None
    errors, warnings = [], []
    if prior:
        rig_path = session.path(prior, "rig")
        if rig_path.is_file():
            rig = read_rig(rig_path)
        else:
            errors.append(f"{session.manifest_path}: field 'rig' names {prior}, which does not exist")
    else:
        warnings.append("the session has no rig yet: later stages need calibration (board frames) or a rig.json")
    cams = {}
    for cam in session.cameras:
        sizes, missing, masks = {}, [], 0
        for t, frame in enumerate(session.frames):
            path = session.image_path(t, cam)
            if not path.is_file():
                missing.append(frame.index)
                continue
            try:
                size = check_image_file(path)
            except ValueError as exc:
                errors.append(f"camera {cam} frame {frame.index}: {exc}")
                continue
            if size is not None:
                sizes[size] = sizes.get(size, 0) + 1
            mask = session.mask_path(t, cam)
            masks += int(mask is not None and mask.is_file())
        row = {"images": session.frame_count - len(missing), "missing": missing[:20], "masks": masks,
               "sizes": {f"{w}x{h}": n for (w, h), n in sorted(sizes.items())}}
        if missing:
            errors.append(f"camera {cam}: {len(missing)} image(s) missing (frames {missing[:5]}...)")
        if len(sizes) > 1:
            warnings.append(f"camera {cam}: images of {len(sizes)} different sizes {sorted(row['sizes'])}")
        if rig is not None:
            if cam not in rig.ids:
                errors.append(f"camera {cam}: not in the rig (rig cameras: {rig.ids[:8]}...)")
            elif sizes:
                want = (rig[cam].width, rig[cam].height)
                wrong = sum(n for s, n in sizes.items() if s != want)
                row["rig_size"] = f"{want[0]}x{want[1]}"
                if wrong:
                    errors.append(f"camera {cam}: {wrong} image(s) are not the rig's {want[0]}x{want[1]} "
                                  f"(found {sorted(row['sizes'])})")
        fraction = masks / max(1, session.frame_count)
        row["mask_fraction"] = fraction
        if fraction < config.min_mask_fraction:
            warnings.append(f"camera {cam}: masks for {fraction:.0%} of frames "
                            f"(below {config.min_mask_fraction:.0%})")
        elif 0 < masks < session.frame_count:
            warnings.append(f"camera {cam}: {session.frame_count - masks} frame(s) have no mask")
        cams[cam] = row
    return {"session": session.name, "cameras": cams, "frames": session.frame_count,
            "calibration_images": sum(len(v) for v in session.calibration.values()),
            "rig": prior, "warnings": warnings, "errors": errors}


def check_into(ctx: StageContext, source: Path) -> dict:
    config: CheckConfig = ctx.config
    summary = check_session(source, config)
    for w in summary["warnings"]:
        ctx.console.print(f"  [yellow]warning[/]: {w}")
    if summary["errors"] or (config.strict and summary["warnings"]):
        problems = summary["errors"] or summary["warnings"]
        raise ValueError(f"check: {source}: " + "; ".join(problems[:10])
                         + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
    write_json(ctx.work_dir / "summary.json", summary)
    ctx.console.print(f"  {len(summary['cameras'])} cameras x {summary['frames']} frames; "
                      f"{summary['calibration_images']} calibration images")
    return {"warnings": len(summary["warnings"])}
