"""The avatar stages: `train` (a GaussianAvatar trained on a session's training cameras and
frames, scored on the held-out ones; resumable from its checkpoints) and `eval` (novel view,
self-reenactment, optional cross-reenactment and a turntable of a trained avatar).

Used by `headcap avatar train|eval` with the avatar folder as the pipeline root:
AVATAR/train/ holds the avatar (gaussians.ply, binding.npz, avatar.json) and its training
report, AVATAR/eval/ the evaluation.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.avatar.gaussian_avatar", "headcap.avatar.train", "headcap.avatar.density", "headcap.avatar.evaluate",
        "headcap.avatar.avatar_data", "headcap.avatar.image_metrics", "headcap.avatar.gaussians",
        "headcap.pipeline.stages.avatar")
TRAIN_OUTPUTS = ("gaussians.ply", "binding.npz", "avatar.json", "metrics.json", "loss.png", "novel_view.png",
                 "self_reenactment.png")


def session_files(source: Path, head_params: str = "auto") -> tuple[Path, ...]:
    """The files a session-reading stage depends on: manifest, images, masks, rig, head parameters."""
    from headcap.avatar.avatar_data import head_params_path
    from headcap.capture.session import read_session

    session = read_session(source)
    return session.input_files() + (head_params_path(session, head_params),)


def avatar_train_stage(config, source: Path, name: str = "train") -> Stage:
    source = Path(source)
    files = session_files(source, config.head_params)

    def run(ctx: StageContext) -> dict:
        return train_into(ctx, source)

    return Stage(name=name, run=run, config=config, files=files, outputs=TRAIN_OUTPUTS, code=CODE, resumable=True,
                 description="Gaussian avatar bound to the head model, trained on the CPU kernel")


def _tile_png(path: Path, tiles: list[np.ndarray]) -> None:
    from headcap.avatar.evaluate import write_png_atomic

    # an 8x8 black image for a split with no views (nothing held out)
    write_png_atomic(path, np.concatenate(tiles, axis=0) if tiles else np.zeros((8, 8, 3), np.uint8))


def train_into(ctx: StageContext, source: Path) -> dict:
    from headcap.avatar.evaluate import evaluate_split
    from headcap.avatar.gaussian_avatar import save_avatar
    from headcap.avatar.train import CHECKPOINT, prepare, train_avatar
    from headcap.pipeline.stages.splats import loss_curve_png

    config = ctx.config
    tic = time.perf_counter()
    setup = prepare(source, config)
    ctx.console.print(f"  head model {setup.model_spec!r}, parameters {setup.params.source}; training cameras "
                      f"{len(setup.train_cameras)}, frames {len(setup.train_frames)}; held out cameras "
                      f"{setup.held_cameras}, frames {setup.held_frames}")
    with ctx.progress("train", config.iterations) as update:
        result = train_avatar(setup, ctx.work_dir, config,
                              progress=lambda done, total, loss: update(done) if done % 10 == 0 or done == total else None)
    avatar = result.avatar
    novel = evaluate_split(avatar, setup.images, setup.vertices, setup.train_frames, setup.held_cameras, keep_images=4)
    reenact = evaluate_split(avatar, setup.images, setup.vertices, setup.held_frames,
                             setup.train_cameras + setup.held_cameras, keep_images=4)
    _tile_png(ctx.work_dir / "novel_view.png", novel.pop("tiles", []))
    _tile_png(ctx.work_dir / "self_reenactment.png", reenact.pop("tiles", []))
    loss_curve_png(result.history, ctx.work_dir / "loss.png")
    holdout = {"cameras": setup.held_cameras, "frames": setup.held_frames,
               "train_cameras": setup.train_cameras, "train_frames": setup.train_frames}
    metrics = {"novel_view": novel, "self_reenactment": reenact, "gaussians": avatar.count,
               "iterations": result.iterations, "resumed_from_iteration": result.resumed_from,
               "train_seconds": result.seconds, "iterations_per_second": (result.iterations - result.resumed_from)
               / max(result.seconds, 1e-9), "stage_seconds": time.perf_counter() - tic,
               "head_params": str(setup.params.source), "holdout": holdout}
    save_avatar(ctx.work_dir, avatar, extra={"holdout": holdout, "session": str(Path(source).resolve()),
                                             "head_params": str(setup.params.source),
                                             "head_params_source": config.head_params})
    if result.tracking is not None:
        from headcap.studio.writer import write_npz

        write_npz(ctx.work_dir / "tracking_refinement.npz", expression=result.tracking["expression"].numpy(),
                  pose=result.tracking["pose"].numpy())
    write_json(ctx.work_dir / "metrics.json", metrics)
    (ctx.work_dir / CHECKPOINT).unlink(missing_ok=True)
    ctx.console.print(f"  novel view {novel.get('psnr_db', float('nan')):.2f} dB, self-reenactment "
                      f"{reenact.get('psnr_db', float('nan')):.2f} dB, {avatar.count} Gaussians")
    return {"novel_view_psnr_db": novel.get("psnr_db"), "self_reenactment_psnr_db": reenact.get("psnr_db"),
            "gaussians": avatar.count}


@dataclass(frozen=True)
class AvatarEvalConfig:
    holdout: str | None = None
    """Cameras to score as novel views, comma separated; default: those held out in training."""
    turntable: int = 8
    """Views in the turntable strip (0: none)."""
    cross_frames: int = 4
    """Frames of the --cross session rendered (cross-reenactment), from its first."""

    def __post_init__(self):
        for name in ("turntable", "cross_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 360:
                raise ValueError(f"avatar eval: field '{name}' must be an integer in 0..360, got {value!r}")


def avatar_eval_stage(config: AvatarEvalConfig, avatar_dir: Path, source: Path, cross: Path | None = None,
                      name: str = "eval") -> Stage:
    avatar_dir, source = Path(avatar_dir), Path(source)
    files = (avatar_dir / "gaussians.ply", avatar_dir / "binding.npz", avatar_dir / "avatar.json") + \
        session_files(source, _trained_on(avatar_dir))
    if cross is not None:
        from headcap.avatar.avatar_data import head_params_path
        from headcap.capture.session import read_session

        cs = read_session(cross)
        files += (cs.manifest_path, head_params_path(cs))

    def run(ctx: StageContext) -> dict:
        return eval_into(ctx, avatar_dir, source, cross)

    outputs = ("metrics.json", "novel_view.png", "self_reenactment.png")
    return Stage(name=name, run=run, config=config, files=files, outputs=outputs, code=CODE,
                 description="novel-view, self- and cross-reenactment renders and scores")


def _trained_on(avatar_dir: Path) -> str:
    """The head-parameter choice (auto | tracking | ground_truth) the avatar was trained with."""
    from headcap.core.fileio import read_json

    path = Path(avatar_dir) / "avatar.json"
    meta = read_json(path) if path.is_file() else {}
    source = meta.get("head_params_source", "auto") if isinstance(meta, dict) else "auto"
    return source if source in ("auto", "tracking", "ground_truth") else "auto"


def eval_into(ctx: StageContext, avatar_dir: Path, source: Path, cross: Path | None) -> dict:
    import torch

    from headcap.avatar.avatar_data import (frame_vertices, head_params_path, load_images, read_head_params)
    from headcap.avatar.evaluate import evaluate_split, render_to_folder, to_uint8, turntable_cameras, write_png_atomic
    from headcap.avatar.gaussian_avatar import load_avatar
    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json

    config: AvatarEvalConfig = ctx.config
    meta = read_json(avatar_dir / "avatar.json")
    avatar = load_avatar(avatar_dir)
    session = read_session(source)
    rig = session.load_rig()
    params = read_head_params(head_params_path(session, _trained_on(avatar_dir)), avatar.model)
    frames = list(range(min(params.frames, session.frame_count)))
    hold = meta.get("holdout", {}) if isinstance(meta, dict) else {}
    held_cams = [c.strip() for c in config.holdout.split(",")] if config.holdout else list(hold.get("cameras", []))
    unknown = [c for c in held_cams if c not in session.cameras]
    if unknown:
        raise ValueError(f"--holdout: camera(s) {unknown} are not in {session.manifest_path}")
    held_frames = [t for t in hold.get("frames", []) if t in frames]
    train_frames = [t for t in frames if t not in held_frames]
    images = load_images(session, rig, frames, list(session.cameras))
    # the session's own parameters with the avatar's identity (same as training for self-reenactment)
    verts = frame_vertices(avatar.model, avatar.identity, params, frames)
    novel = evaluate_split(avatar, images, verts, train_frames, held_cams, keep_images=4)
    reenact = evaluate_split(avatar, images, verts, held_frames, list(session.cameras), keep_images=4)
    blank = [np.zeros((8, 8, 3), np.uint8)]  # a split with no views (nothing held out)
    write_png_atomic(ctx.work_dir / "novel_view.png", np.concatenate(novel.pop("tiles", None) or blank, 0))
    write_png_atomic(ctx.work_dir / "self_reenactment.png", np.concatenate(reenact.pop("tiles", None) or blank, 0))
    metrics = {"novel_view": novel, "self_reenactment": reenact, "held_out_cameras": held_cams,
               "held_out_frames": held_frames, "gaussians": avatar.count, "config": asdict(config)}
    if config.turntable > 0:
        like = images.cameras[session.cameras[0]]
        t0 = train_frames[0] if train_frames else 0
        with torch.no_grad():
            strip = [to_uint8(avatar.render(verts[t0], view).rgb)
                     for view in turntable_cameras(verts[t0], params.world_from_head[t0], like, config.turntable)]
        write_png_atomic(ctx.work_dir / "turntable.png", np.concatenate(strip, axis=1))
    if cross is not None:
        other = read_session(cross)
        other_params = read_head_params(head_params_path(other), avatar.model)
        n = min(config.cross_frames, other_params.frames)
        cross_frames = list(range(n))
        cverts = frame_vertices(avatar.model, avatar.identity, other_params, cross_frames)
        cams = {c: images.cameras[c] for c in session.cameras[:1]}
        render_to_folder(avatar, cverts, cross_frames, cams, ctx.work_dir / "cross_reenactment")
        metrics["cross_reenactment"] = {"session": str(Path(cross).resolve()), "frames": n,
                                        "note": "no ground truth: images only (avatar identity, driving expression and pose)"}
    write_json(ctx.work_dir / "metrics.json", metrics)
    return {"novel_view_psnr_db": novel.get("psnr_db"), "self_reenactment_psnr_db": reenact.get("psnr_db")}
