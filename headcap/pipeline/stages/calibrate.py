"""The calibration stage: detect the board in every calibration image, bundle-adjust the rig,
write rig.json, summary.json and the report (index.html + figures) into the stage folder.

One definition, used by `headcap calibrate` (images from a session or a folder of camera folders)
and by the demo and pipeline (images from the upstream session stage).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from headcap.calib.calibrate import CalibrationConfig
from headcap.capture.video import IMAGE_SUFFIXES
from headcap.core.fileio import write_json
from headcap.pipeline.runner import RECORD, Stage, StageContext

CODE = ("headcap.calib", "headcap.capture.session", "headcap.pipeline.stages.calibrate")


@dataclass(frozen=True)
class CalibrateStageConfig:
    board: str | None = None
    """charuco:COLSxROWS:SQUARE:MARKER:DICT (e.g. charuco:5x7:0.04:0.02:DICT_6X6_250) or
    chessboard:COLSxROWS:SQUARE; COLSxROWS counts squares, lengths in metres. Default: the board
    the session records (session.json extra.board)."""
    min_corners: int = 6
    """Fewest corners for a usable view."""
    seed_rig: str | None = None
    """Existing calibration to refine (rig.json, NeRSemble, nerfstudio, COLMAP, OpenCV YAML)."""
    solver: CalibrationConfig = field(default_factory=CalibrationConfig)


def find_images(path: Path) -> tuple[dict[str, list[Path]], object]:
    """({camera: [image paths]}, session or None) for a session folder / session.json, or a plain
    folder FOLDER/<camera_id>/*.png|jpg (images of different cameras with the same stem are one
    board pose)."""
    path = Path(path)
    if path.name == "session.json" or (path.is_dir() and (path / "session.json").is_file()):
        from headcap.capture.session import read_session

        session = read_session(path)
        if not session.calibration:
            raise ValueError(f"{session.manifest_path}: field 'calibration' is empty; the session lists no "
                             "calibration images")
        images = {cam: [session.path(rel, f"calibration.{cam}[{i}]") for i, rel in enumerate(files)]
                  for cam, files in session.calibration.items()}
        return images, session
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a session or a folder of camera folders")
    images = {}
    # headcap's own outputs (a report folder written here by an earlier run) are not cameras
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and not p.name.endswith(".partial") and not (p / RECORD).is_file()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            images[sub.name] = files
    if not images:
        raise ValueError(f"{path}: no camera folders with images (expected {path}/<camera_id>/*.png|jpg)")
    return images, None


def board_for(config: CalibrateStageConfig, session) -> str:
    if config.board:
        return config.board
    board = session.extra.get("board") if session is not None else None
    if isinstance(board, str) and board:
        return board
    where = f"{session.manifest_path}: field 'extra.board' is {board!r}" if session is not None else \
        "the input is a folder of images, which records no board"
    raise ValueError(f"{where}; give the board: --board charuco:COLSxROWS:SQUARE:MARKER:DICT")


def calibration_stage(config: CalibrateStageConfig, source: Path | None = None, name: str = "calibration",
                      session_stage: str = "session", title: str | None = None) -> Stage:
    """source: a session or image folder outside the run (fingerprinted by the content of its
    calibration images); None: read the session of the earlier stage `session_stage`."""
    found = find_images(source) if source is not None else None
    files = tuple(p for paths in found[0].values() for p in paths) if found is not None else ()
    if config.seed_rig:
        files += (Path(config.seed_rig),)

    def run(ctx: StageContext) -> dict:
        src = source if source is not None else ctx.input_dir(session_stage)
        images, session = found if found is not None else find_images(src)
        return calibrate_into(ctx, images, session, title or f"headcap calibration of {src}")

    return Stage(name=name, run=run, config=config, inputs=() if source is not None else (session_stage,),
                 files=files, outputs=("rig.json", "summary.json", "index.html"), code=CODE,
                 description="detecting the board and bundle-adjusting the rig")


def calibrate_into(ctx: StageContext, images: dict[str, list[Path]], session, title: str) -> dict:
    """images, session: as find_images returns them."""
    from headcap.calib.boards import BoardSpec
    from headcap.calib.calib_report import write_report
    from headcap.calib.calibrate import calibrate_rig
    from headcap.calib.detect import detect_images
    from headcap.calib.rig_io import write_rig

    config: CalibrateStageConfig = ctx.config
    spec = BoardSpec.parse(board_for(config, session))
    seed = None
    if config.seed_rig:
        from headcap.calib.formats import read_any

        seed = read_any(config.seed_rig)
    total = sum(len(v) for v in images.values())
    with ctx.progress("detect", total) as update:
        detections = detect_images(images, spec, config.min_corners,
                                   progress=lambda done, _total, label: update(done, description=f"detect {label}"))
    usable = sum(d.usable for v in detections.values() for d in v)
    ctx.console.print(f"  detected the board in {usable} of {total} images")
    with ctx.console.status("calibrating") as status:
        result = calibrate_rig(detections, config.solver, seed=seed, progress=lambda msg: status.update(msg))
    write_rig(result.rig, ctx.work_dir / "rig.json", result.uncertainty)
    write_report(result, ctx.work_dir, spec, title=title,
                 detections_summary=[d.summary() for v in detections.values() for d in v])
    summary = result.summary()
    summary["board"] = str(spec)
    write_json(ctx.work_dir / "summary.json", summary)
    for note in result.notes:
        ctx.console.print(f"  calibration note: {note}")
    for warning in result.warnings:
        ctx.console.print(f"  [yellow]calibration warning[/]: {warning}")
    return {"rms_px": result.rms, "frames": len(result.world_from_board), "warnings": list(result.warnings)}
