"""The landmarks stage: MediaPipe's 468-point face mesh in every view of a session
(landmarks2d.npz, with a "no face found" line per view that has none in summary.json) and its
robust multi-view triangulation with the session's rig (landmarks3d.npz).

Used by `headcap landmarks SESSION` (output SESSION/landmarks) and by pipelines (session from
the upstream stage `session`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.reconstruct.landmarks", "headcap.reconstruct.face_detect", "headcap.pipeline.stages.landmarks")


@dataclass(frozen=True)
class LandmarksStageConfig:
    models: str | None = None
    """Folder holding face_detection_short_range.tflite and face_landmark.tflite (MediaPipe,
    Apache-2.0; never downloaded). Default: $HEADCAP_MODELS or ~/.cache/headcap/models/mediapipe_face."""
    min_detection: float = 0.5
    """Lowest face-detector score (0..1) that counts as a face."""
    min_presence: float = 0.5
    """Lowest face-presence score (0..1) of the landmark model that counts as a face."""
    inlier_px: float = 4.0
    """Reprojection error (pixels) under which a camera is an inlier of a triangulated point."""
    min_views: int = 2
    """Fewest inlier cameras for a triangulated point (else NaN)."""


def _session_files(source: Path) -> tuple[Path, ...]:
    from headcap.capture.session import read_session

    return read_session(source).input_files(masks=False)


def landmarks_stage(config: LandmarksStageConfig, source: Path | None = None, name: str = "landmarks",
                    session_stage: str = "session") -> Stage:
    from headcap.reconstruct.face_detect import DETECTOR_FILE, LANDMARK_FILE, find_models

    models = find_models(config.models)  # missing models fail before any work
    files = (models / DETECTOR_FILE, models / LANDMARK_FILE)
    if source is not None:
        files += _session_files(source)

    def run(ctx: StageContext) -> dict:
        src = source if source is not None else ctx.input_dir(session_stage)
        return landmarks_into(ctx, Path(src), models)

    return Stage(name=name, run=run, config=config, inputs=() if source is not None else (session_stage,),
                 files=files, outputs=("landmarks2d.npz", "landmarks3d.npz", "summary.json"), code=CODE,
                 description="face landmarks in every view, triangulated with the rig")


def landmarks_into(ctx: StageContext, source: Path, models: Path) -> dict:
    from headcap.capture.session import read_session
    from headcap.reconstruct.landmarks import (LandmarksConfig, NOSE_TIP, detect_session, triangulate,
                                               write_landmarks2d, write_landmarks3d)

    config: LandmarksStageConfig = ctx.config
    lm_config = LandmarksConfig(**{k: v for k, v in asdict(config).items() if k != "models"})
    session = read_session(source)
    total = session.frame_count * len(session.cameras)
    lm2 = detect_session(session, models, lm_config,
                         map_frames=lambda fn, jobs: ctx.map(fn, jobs, "landmarks",
                                                             labels=[f"frame {t}" for t in range(len(jobs))]))
    write_landmarks2d(ctx.work_dir / "landmarks2d.npz", lm2)
    found = int(lm2.found.sum())
    ctx.console.print(f"  face found in {found} of {total} views")
    for msg in lm2.messages:
        ctx.console.print(f"  [yellow]{msg}[/]")
    rig = session.load_rig() if session.rig_path() is not None else None
    summary = {"views": total, "found": found, "no_face": lm2.messages, "cameras": lm2.cameras,
               "frames": lm2.frames}
    if rig is None:
        lm3_points = np.full((session.frame_count, lm2.points.shape[2], 3), np.nan)
        from headcap.reconstruct.landmarks import Landmarks3D

        lm3 = Landmarks3D(lm3_points, np.zeros(lm3_points.shape[:2], np.int64), np.full(lm3_points.shape[:2], np.nan))
        summary["triangulation"] = "skipped: the session has no rig"
        ctx.console.print("  [yellow]no rig in the session: landmarks3d.npz holds NaN[/]")
    else:
        lm3 = triangulate(lm2.points, lm2.found, rig, lm2.cameras, lm_config.inlier_px, lm_config.min_views)
        ok = np.isfinite(lm3.points).all(-1)
        summary["triangulated_fraction"] = float(ok.mean())
        summary["rms_px_median"] = float(np.nanmedian(lm3.rms_px)) if ok.any() else None
        summary["nose_tip_inliers_mean"] = float(lm3.inliers[:, NOSE_TIP].mean())
    write_landmarks3d(ctx.work_dir / "landmarks3d.npz", lm3, lm2.cameras, lm2.frames)
    write_json(ctx.work_dir / "summary.json", summary)
    keys = ("views", "found", "triangulated_fraction", "rms_px_median")
    return {k: summary[k] for k in keys if k in summary}
