"""The demo's splat stage: static Gaussians fitted to one frame of a synthetic session through the
*calibrated* cameras, scored on held-out cameras. Until tracking supplies geometry, the Gaussians
start at the ground-truth mesh, mapped into the calibrated world frame by the rigid alignment of
the camera centres."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.avatar", "headcap.core", "headcap.pipeline.stages.splats")


@dataclass(frozen=True)
class SplatsConfig:
    iterations: int = 300
    """Gaussian fitting steps."""
    held_out: int = 2
    """Cameras held out for scoring."""
    seed: int = 0
    """Random seed of the fit."""
    frame: int = 0
    """Frame of the session to fit."""

    def __post_init__(self):
        for name, low in (("iterations", 0), ("held_out", 1), ("seed", 0), ("frame", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"splats: field '{name}' must be an integer >= {low}, got {value!r}")


def splats_stage(config: SplatsConfig, name: str = "splats", session_stage: str = "session",
                 calibration_stage: str = "calibration") -> Stage:
    def run(ctx: StageContext) -> dict:
        return fit_splats_into(ctx, ctx.input_dir(session_stage), ctx.input_dir(calibration_stage) / "rig.json")

    return Stage(name=name, run=run, config=config, inputs=(session_stage, calibration_stage),
                 outputs=("metrics.json", "held_out.png", "loss.png", "gaussians.ply"), code=CODE,
                 description="fitting Gaussians to one frame with the calibrated cameras (CPU kernel)")


def fit_splats_into(ctx: StageContext, session_dir: Path, rig_path: Path) -> dict:
    import time

    import cv2
    import torch

    from headcap.avatar.static_fit import StaticFitConfig, fit_static_gaussians, load_view, psnr
    from headcap.calib.rig_compare import compare_rigs
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.capture.video import read_image
    from headcap.studio.writer import write_png

    config: SplatsConfig = ctx.config
    tic = time.perf_counter()
    session = read_session(session_dir)
    truth, rig = session.load_rig(), read_rig(rig_path)
    truth_vertices = np.load(session.path(f"{session.extra['ground_truth']}/vertices.npz"))["vertices"][config.frame]
    views = []
    for cam_id in session.cameras:
        image = read_image(session.image_path(config.frame, cam_id))
        mask = read_image(session.mask_path(config.frame, cam_id), cv2.IMREAD_GRAYSCALE)
        views.append(load_view(rig[cam_id], image, mask))
    held = max(1, min(config.held_out, len(views) - 1))
    # hold out cameras spread over the rig, not a block of neighbours
    test_idx = [int(i) for i in np.linspace(0, len(views) - 1, held + 2)[1:-1].round()]
    train = [v for i, v in enumerate(views) if i not in test_idx]
    test = [views[i] for i in test_idx]
    # the same alignment the report measures calibration errors after (calib.rig_compare)
    truth_from_rig = compare_rigs(rig, truth).truth_from_estimated
    rot, trans = truth_from_rig[:3, :3], truth_from_rig[:3, 3]
    points = torch.from_numpy((truth_vertices - trans) @ rot).float()
    initial = fit_static_gaussians(points, train, StaticFitConfig(iterations=0, seed=config.seed))
    psnr_initial = [psnr(initial.render(v.camera).rgb, v.image) for v in test]
    with ctx.progress("fit", config.iterations) as update:
        gs = fit_static_gaussians(points, train, StaticFitConfig(iterations=config.iterations, seed=config.seed),
                                  progress=lambda done, total, loss: update(done))
    renders = [gs.render(v.camera) for v in test]
    psnr_final = [psnr(r.rgb, v.image) for r, v in zip(renders, test)]
    tiles = []
    for r, v in zip(renders, test):
        pred = (r.rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        target = (v.image.numpy() * 255).round().astype(np.uint8)
        err = np.abs(pred.astype(np.float32) - target.astype(np.float32)).mean(-1)
        err_map = cv2.applyColorMap(np.clip(err * 4, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        tiles.append(np.concatenate([target, pred, err_map], axis=1))
    write_png(ctx.work_dir / "held_out.png", np.concatenate(tiles, axis=0))
    loss_curve_png(gs.history, ctx.work_dir / "loss.png")
    metrics = {
        "held_out_cameras": [session.cameras[i] for i in test_idx],
        "gaussians": gs.count, "iterations": config.iterations, "backend": renders[0].backend,
        "psnr_initial_db": psnr_initial, "psnr_final_db": psnr_final,
        "fit_seconds": time.perf_counter() - tic,
    }
    # the .ply goes in the studio's world frame (metres, +Y up, head at the origin: glTF's axes);
    # world_from_rig maps the calibrated frame of rig.json into it
    from headcap.avatar.export.splats import Splats, write_ply

    world_from_rig = np.eye(4)
    world_from_rig[:3, :3], world_from_rig[:3, 3] = rot, trans
    write_ply(ctx.work_dir / "gaussians.ply", Splats.from_gaussian_set(gs).transformed(world_from_rig))
    metrics["gaussians_ply_world_from_rig"] = world_from_rig.tolist()
    write_json(ctx.work_dir / "metrics.json", metrics)
    return {"psnr_final_db": psnr_final}


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
