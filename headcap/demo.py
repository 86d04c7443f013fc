"""`headcap demo`: the pipeline, as far as it exists, on a synthetic studio session.

Stages (run by headcap.pipeline: each cached on its config, inputs and code, so a rerun with
nothing changed takes seconds, a changed option reruns only the stages downstream of it, and an
interrupted demo resumes where it stopped):
1. session      - film a head in a virtual rig (headcap.studio), with ground truth;
2. calibration  - calibrate the rig from its ChArUco frames (calib), compared with the ground truth;
3. splats       - fit static Gaussians to one frame with the *calibrated* cameras (avatar), score
                  novel views on held-out cameras;
then report.html with pictures and numbers (rewritten on every run, from the stages' files).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from headcap.core.fileio import read_json, write_json


@dataclass(frozen=True)
class DemoConfig:
    cameras: int = 8
    """Rig cameras."""
    frames: int = 3
    """Frames filmed."""
    resolution: int = 384
    """Image width and height in pixels."""
    calib_frames: int = 30
    """ChArUco board poses filmed for calibration."""
    iterations: int = 300
    """Gaussian fitting steps."""
    held_out: int = 2
    """Cameras held out to score novel views."""
    seed: int = 0
    """Random seed (scene, motion, fit)."""
    head: str = "default"
    """Head model: default | ict:PATH | flame:PATH."""

    def __post_init__(self):
        from headcap.core.limits import check_count

        for name, low, high in (("cameras", 2, 256), ("frames", 1, 10_000), ("resolution", 32, 4096),
                                ("calib_frames", 1, 10_000), ("iterations", 1, 1_000_000), ("held_out", 1, 255),
                                ("seed", 0, 2**63 - 1)):
            check_count(getattr(self, name), f"demo: --{name.replace('_', '-')}", low, high)
        if self.held_out >= self.cameras:
            raise ValueError(f"demo: --held-out {self.held_out} leaves no camera to fit with "
                             f"(--cameras {self.cameras}); expected fewer held-out cameras than cameras")

    def stages(self) -> list:
        from headcap.calib.calibrate import CalibrationConfig
        from headcap.pipeline.stages.calibrate import CalibrateStageConfig, calibration_stage
        from headcap.pipeline.stages.splats import SplatsConfig, splats_stage
        from headcap.pipeline.stages.synth import synth_stage
        from headcap.studio.synthesize import StudioConfig

        studio = StudioConfig(cameras=self.cameras, frames=self.frames, resolution=self.resolution,
                              calib_frames=self.calib_frames, seed=self.seed, head=self.head)
        # narrow studio lenses (~22 deg) leave k3 unobservable: hold it at zero rather than fit noise
        calibration = CalibrateStageConfig(solver=CalibrationConfig(world="first-camera", fix_k3=True))
        return [synth_stage(studio),
                calibration_stage(calibration),
                splats_stage(SplatsConfig(iterations=self.iterations, held_out=self.held_out, seed=self.seed))]


def run_demo(out: Path, config: DemoConfig = DemoConfig(), console=None, force: tuple[str, ...] = ()) -> Path:
    """Run the demo into `out`; returns the report path. Stages already up to date are reused."""
    from rich.console import Console

    from headcap.pipeline import Pipeline

    console = console or Console(stderr=True)
    out = Path(out)
    tic = time.perf_counter()
    pipeline = Pipeline(out, config.stages(), console=console, title="headcap demo", own_root=True)
    with pipeline.hold():
        results = pipeline.run(force=force)
        return _write_report(out, config, results, tic)


def _write_report(out: Path, config: DemoConfig, results: dict, tic: float) -> Path:
    from headcap.calib.rig_compare import compare_rigs
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.report import Report

    session_dir, calib_dir, splat_dir = (results[n].folder for n in ("session", "calibration", "splats"))
    session = read_session(session_dir)
    errors = compare_rigs(read_rig(calib_dir / "rig.json"), session.load_rig()).rows()
    metrics = read_json(splat_dir / "metrics.json")
    timings = {f"{name}_s": r.record.get("seconds", 0.0) for name, r in results.items()}
    timings["this_run_s"] = time.perf_counter() - tic

    report = Report("headcap demo")
    report.text(f"Synthetic session: {len(session.cameras)} cameras, {session.frame_count} frames at "
                f"{config.resolution} px, head model '{session.extra.get('head_model')}', seed {config.seed}.")
    report.heading("1. Synthetic studio")
    report.image(session_dir / "contact_sheet.png", "frame 0 seen by every camera", relative_to=out)
    report.heading("2. Calibration against the ground truth")
    report.table(["camera", "focal error %", "principal point error px", "centre error mm", "rotation error deg"],
                 [[r["camera"], r["focal_error_pct"], r["principal_point_error_px"], r["centre_error_mm"],
                   r["rotation_error_deg"]] for r in errors])
    calib_summary = read_json(calib_dir / "summary.json")
    report.text(f"Bundle adjustment: RMS {calib_summary['rms_px']:.3f} px over {calib_summary['frames']} board "
                f"poses (start {calib_summary['initial_rms_px']:.2f} px). Errors are measured after a rigid "
                "alignment of the calibrated rig to the true one (no scale: the board sets metric scale).")
    for warning in calib_summary.get("warnings", []):
        report.text(f"warning: {warning}", "warn")
    for name in ("rig.png", "coverage.png", "residual_histograms.png"):
        if (calib_dir / name).is_file():
            report.image(calib_dir / name, name[:-4].replace("_", " "), relative_to=out, width=480)
    report.text("Full calibration report: calibration/index.html")
    report.heading("3. Static Gaussians on frame 0, held-out cameras")
    report.table(["camera", "PSNR at start (dB)", "PSNR after fit (dB)"],
                 [[c, a, b] for c, a, b in zip(metrics["held_out_cameras"], metrics["psnr_initial_db"],
                                               metrics["psnr_final_db"])])
    report.text(f"{metrics['gaussians']} Gaussians, {metrics['iterations']} iterations on the "
                f"'{metrics['backend']}' backend in {metrics['fit_seconds']:.1f} s. Gaussians start at the "
                "ground-truth mesh vertices (the tracking stage that will supply them is not built yet); "
                "the cameras are the calibrated ones.")
    report.image(splat_dir / "held_out.png", "held-out views: ground truth | render | error x4", relative_to=out)
    report.image(splat_dir / "loss.png", "training loss", relative_to=out)
    report.heading("Timings")
    report.table(["stage", "seconds"], [[k, v] for k, v in timings.items()])
    report.heading("Credits")
    for credit in session.extra.get("credits", []) or [session.extra.get("licence", "")]:
        report.text(str(credit))
    path = report.write(out / "report.html")
    summary = {"calibration": errors, "splats": metrics, "timings": timings}
    write_json(out / "summary.json", summary)
    return path
