"""`headcap demo`: the pipeline, as far as it exists, on a synthetic studio session.

Stages (each cached on disk, so an interrupted demo resumes where it stopped):
1. synth      — film a head in a virtual rig (headcap.studio), with ground truth;
2. calibrate  — calibrate the rig from its ChArUco frames (calib), compare with the ground truth;
3. splats     — fit static Gaussians to one frame with the *calibrated* cameras (avatar), score
                novel views on held-out cameras;
4. report     — report.html with pictures and numbers.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headcap.core.align import similarity_fit
from headcap.core.fileio import write_json


@dataclass(frozen=True)
class DemoConfig:
    cameras: int = 8
    frames: int = 3
    resolution: int = 384
    calib_frames: int = 30
    iterations: int = 300
    held_out: int = 2
    seed: int = 0
    head: str = "default"


def rig_errors(estimated, truth) -> list[dict]:
    """Per-camera calibration error against the ground truth, after aligning the estimated rig's
    world frame to the true one by the rigid motion that best maps camera centres (Umeyama without
    scale: the board fixes metric scale, so a scale error shows up as centre error)."""
    ids = [c for c in truth.ids if c in estimated.cameras]
    est_c = np.stack([estimated[c].centre for c in ids])
    tru_c = np.stack([truth[c].centre for c in ids])
    scale, rot, trans = similarity_fit(est_c, tru_c, with_scale=False)
    rows = []
    for cam_id in ids:
        e, t = estimated[cam_id], truth[cam_id]
        centre = scale * rot @ e.centre + trans
        # camera axes in the true world: world_from_cam rotation mapped by rot
        r_est = rot @ e.world_from_cam[:3, :3]
        r_rel = r_est.T @ t.world_from_cam[:3, :3]
        # atan2 form: exact near zero, where acos((trace - 1) / 2) loses half the digits
        skew = np.array([r_rel[2, 1] - r_rel[1, 2], r_rel[0, 2] - r_rel[2, 0], r_rel[1, 0] - r_rel[0, 1]])
        angle = math.degrees(math.atan2(0.5 * np.linalg.norm(skew), 0.5 * (np.trace(r_rel) - 1)))
        rows.append({
            "camera": cam_id,
            "focal_error_pct": 100 * abs(e.K[0, 0] / t.K[0, 0] - 1),
            "principal_point_error_px": float(np.linalg.norm(e.K[:2, 2] - t.K[:2, 2])),
            "centre_error_mm": 1000 * float(np.linalg.norm(centre - t.centre)),
            "rotation_error_deg": angle,
        })
    return rows


def loss_curve_png(history: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(history, lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("L1 + silhouette loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _calibrate(session, calib_dir: Path, rig_path: Path, console) -> dict:
    """Detect the board in the session's calibration frames and bundle-adjust the rig."""
    from headcap.calib.boards import BoardSpec
    from headcap.calib.calibrate import CalibrationConfig, calibrate_rig
    from headcap.calib.detect import detect_images
    from headcap.calib.rig_io import write_rig

    board = session.extra.get("board")
    if not isinstance(board, str):
        raise ValueError(f"{session.manifest_path}: field 'extra.board' is {board!r}; the demo needs the "
                         "board specification of the calibration frames (charuco:COLSxROWS:SQUARE:MARKER:DICT)")
    spec = BoardSpec.parse(board)
    images = {cam: [session.path(rel, f"calibration.{cam}") for rel in session.calibration.get(cam, [])]
              for cam in session.cameras}
    detections = detect_images(images, spec)
    # narrow studio lenses (~22 deg) leave k3 unobservable: hold it at zero rather than fit noise
    result = calibrate_rig(detections, CalibrationConfig(world="first-camera", fix_k3=True), progress=None)
    calib_dir.mkdir(parents=True, exist_ok=True)
    from headcap.calib.calib_report import write_report

    write_report(result, calib_dir, board=spec)
    for warning in result.warnings:
        console.print(f"[yellow]calibration warning[/]: {warning}")
    write_json(calib_dir / "summary.json", result.summary())
    write_rig(result.rig, rig_path)
    return result.summary()


def run_demo(out: Path, config: DemoConfig = DemoConfig(), console=None) -> Path:
    """Run the demo into `out`; returns the report path. Stages already finished are reused."""
    import cv2
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headcap.avatar.static_fit import StaticFitConfig, fit_static_gaussians, load_view, psnr
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.report import Report
    from headcap.studio.synthesize import StudioConfig, synthesize_session
    from headcap.studio.writer import write_png

    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "demo_config.json"
    if config_path.is_file() and json.loads(config_path.read_text()) != asdict(config):
        # finished stages belong to other settings: start over, removing only what the demo wrote
        console.print(f"demo settings changed since the last run in {out}: starting over")
        for name in ("session", "calibration", "splats"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    elif not config_path.is_file() and any(out.iterdir()):
        raise ValueError(f"{out}: folder is not empty and holds no earlier demo (demo_config.json); "
                         "choose another --out")
    write_json(config_path, asdict(config))
    timings: dict[str, float] = {}

    def bar():
        return Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)

    # 1. synthetic session ------------------------------------------------------------------
    session_dir = out / "session"
    t0 = time.perf_counter()
    if not (session_dir / "session.json").is_file():
        console.print("[bold]1/4 synth[/]: filming a synthetic head in a virtual rig")
        studio = StudioConfig(cameras=config.cameras, frames=config.frames, resolution=config.resolution,
                              calib_frames=config.calib_frames, seed=config.seed, head=config.head)
        with bar() as progress:
            tasks: dict[str, int] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done)

            synthesize_session(studio, session_dir, progress=report, overwrite=True)
    else:
        console.print("1/4 synth: reusing the session in", session_dir)
    timings["synth_s"] = time.perf_counter() - t0
    session = read_session(session_dir)
    truth = session.load_rig()

    # 2. calibration -------------------------------------------------------------------------
    t0 = time.perf_counter()
    calib_dir = out / "calibration"
    rig_path = calib_dir / "rig.json"
    if not rig_path.is_file():
        console.print("[bold]2/4 calibrate[/]: detecting ChArUco corners and bundle-adjusting the rig")
        _calibrate(session, calib_dir, rig_path, console)
    else:
        console.print("2/4 calibrate: reusing", rig_path)
    timings["calibrate_s"] = time.perf_counter() - t0
    rig = read_rig(rig_path)
    errors = rig_errors(rig, truth)

    # 3. static Gaussians on frame 0 with the calibrated cameras -------------------------------
    t0 = time.perf_counter()
    splat_dir = out / "splats"
    splat_dir.mkdir(exist_ok=True)
    metrics_path = splat_dir / "metrics.json"
    if not metrics_path.is_file():
        console.print("[bold]3/4 splats[/]: fitting Gaussians to frame 0 with the calibrated cameras (CPU kernel)")
        truth_vertices = np.load(session.path(f"{session.extra['ground_truth']}/vertices.npz"))["vertices"][0]
        views = []
        for cam_id in session.cameras:
            image = cv2.cvtColor(cv2.imread(str(session.image_path(0, cam_id))), cv2.COLOR_BGR2RGB)
            mask = cv2.imread(str(session.mask_path(0, cam_id)), cv2.IMREAD_GRAYSCALE)
            views.append(load_view(rig[cam_id], image, mask))
        held = max(1, min(config.held_out, len(views) - 1))
        # hold out cameras spread over the rig, not a block of neighbours
        test_idx = [int(i) for i in np.linspace(0, len(views) - 1, held + 2)[1:-1].round()]
        train = [v for i, v in enumerate(views) if i not in test_idx]
        test = [views[i] for i in test_idx]
        # geometry must live in the calibrated world frame; until tracking supplies it, map the
        # ground-truth mesh there through the rigid alignment of the camera centres
        _, rot, trans = similarity_fit(np.stack([rig[c].centre for c in truth.ids]),
                                 np.stack([truth[c].centre for c in truth.ids]), with_scale=False)
        points = torch.from_numpy((truth_vertices - trans) @ rot).float()
        initial = fit_static_gaussians(points, train, StaticFitConfig(iterations=0, seed=config.seed))
        psnr_initial = [psnr(initial.render(v.camera).rgb, v.image) for v in test]
        with bar() as progress:
            task = progress.add_task("fit", total=config.iterations)
            gs = fit_static_gaussians(points, train, StaticFitConfig(iterations=config.iterations, seed=config.seed),
                                      progress=lambda done, total, loss: progress.update(task, completed=done))
        renders = [gs.render(v.camera) for v in test]
        psnr_final = [psnr(r.rgb, v.image) for r, v in zip(renders, test)]
        tiles = []
        for r, v in zip(renders, test):
            pred = (r.rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            target = (v.image.numpy() * 255).round().astype(np.uint8)
            err = np.abs(pred.astype(np.float32) - target.astype(np.float32)).mean(-1)
            err_map = cv2.applyColorMap(np.clip(err * 4, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
            tiles.append(np.concatenate([target, pred, err_map], axis=1))
        write_png(splat_dir / "held_out.png", np.concatenate(tiles, axis=0))
        loss_curve_png(gs.history, splat_dir / "loss.png")
        backend = renders[0].backend
        write_json(metrics_path, {
            "held_out_cameras": [session.cameras[i] for i in test_idx],
            "gaussians": gs.count, "iterations": config.iterations, "backend": backend,
            "psnr_initial_db": psnr_initial, "psnr_final_db": psnr_final,
            "fit_seconds": time.perf_counter() - t0,
        })
    else:
        console.print("3/4 splats: reusing", metrics_path)
    timings["splats_s"] = time.perf_counter() - t0
    metrics = json.loads(metrics_path.read_text())

    # 4. report ------------------------------------------------------------------------------
    report = Report("headcap demo")
    report.text(f"Synthetic session: {len(session.cameras)} cameras, {session.frame_count} frames at "
                f"{config.resolution} px, head model '{session.extra.get('head_model')}', seed {config.seed}.")
    report.heading("1. Synthetic studio")
    report.image(session_dir / "contact_sheet.png", "frame 0 seen by every camera", relative_to=out)
    report.heading("2. Calibration against the ground truth")
    report.table(["camera", "focal error %", "principal point error px", "centre error mm", "rotation error deg"],
                 [[r["camera"], r["focal_error_pct"], r["principal_point_error_px"], r["centre_error_mm"],
                   r["rotation_error_deg"]] for r in errors])
    calib_summary = json.loads((calib_dir / "summary.json").read_text())
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
