"""`headcap avatar train|render|eval`: the animatable Gaussian head avatar.

    headcap avatar train SESSION --out AVATAR [--holdout CAM,...] [--iterations N ...]
    headcap avatar render AVATAR --session SESSION --cameras CAM,... [--frames A:B] --out DIR
    headcap avatar eval AVATAR --session SESSION [--cross OTHER_SESSION]

`train` runs the resumable train stage with AVATAR as the pipeline folder (AVATAR/train holds the
avatar: gaussians.ply, binding.npz, avatar.json; killed and rerun, it continues from its last
checkpoint). `render` draws the avatar with SESSION's per-frame parameters (expression, joints,
head pose; the avatar keeps its own identity, so another person's session is cross-reenactment)
into DIR/<cam>/<t:06d>.png. `eval` scores novel views and self-reenactment and writes a
turntable (AVATAR/eval).
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.avatar.density import DensityConfig
    from headcap.avatar.train import TrainConfig
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.pipeline.stages.avatar import AvatarEvalConfig

    p = subparsers.add_parser("avatar", help="animatable Gaussian head avatar: train, render, eval",
                              description="Gaussians bound to the head model's triangles, trained on a session's "
                                          "images with the CPU kernel, rendered with any sequence's parameters.")
    sub = p.add_subparsers(dest="avatar_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train an avatar on a session",
                       description="Train a Gaussian avatar on SESSION (tracking/params.npz, else the synthetic "
                                   "ground truth) and score it on held-out cameras and frames. Writes AVATAR/train.")
    t.add_argument("session", type=Path, help="session folder or session.json")
    t.add_argument("--out", type=Path, required=True, help="avatar folder (the pipeline's folder)")
    t.add_argument("--force", action="store_true", help="retrain even if AVATAR/train is up to date")
    add_config_arguments(t, TrainConfig)
    add_config_arguments(t, DensityConfig, prefix="density_")
    t.set_defaults(handler=run_train)

    r = sub.add_parser("render", help="render an avatar with a session's parameters",
                       description="Render AVATAR with the per-frame expression, joints and head pose of SESSION "
                                   "(the avatar's own identity) through SESSION's cameras into DIR/<cam>/<t:06d>.png.")
    r.add_argument("avatar", type=Path, help="avatar folder (AVATAR or AVATAR/train)")
    r.add_argument("--session", type=Path, required=True, help="session whose cameras and parameters drive the avatar")
    r.add_argument("--cameras", required=True, help="comma-separated camera ids of the session")
    r.add_argument("--frames", default=None, help="A:B (B exclusive), A: or N; default: every frame")
    r.add_argument("--out", type=Path, required=True, help="output folder")
    r.set_defaults(handler=run_render)

    e = sub.add_parser("eval", help="score an avatar: novel view, self-reenactment, turntable",
                       description="Score AVATAR on SESSION's held-out cameras (novel view) and frames "
                                   "(self-reenactment), render a turntable and, with --cross, another session's "
                                   "motion (cross-reenactment). Writes AVATAR/eval.")
    e.add_argument("avatar", type=Path, help="avatar folder (the one given to train --out)")
    e.add_argument("--session", type=Path, required=True, help="the session the avatar was trained on")
    e.add_argument("--cross", type=Path, default=None, help="another session whose motion drives the avatar")
    e.add_argument("--force", action="store_true", help="re-evaluate even if AVATAR/eval is up to date")
    add_config_arguments(e, AvatarEvalConfig)
    e.set_defaults(handler=run_eval)


def run_train(args) -> int:
    from dataclasses import replace

    from rich.console import Console

    from headcap.avatar.density import DensityConfig
    from headcap.avatar.train import TrainConfig
    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args
    from headcap.pipeline.stages.avatar import avatar_train_stage

    console = Console(stderr=True)
    density = config_from_args(DensityConfig, args, prefix="density_")
    config = replace(config_from_args(TrainConfig, args), density=density)
    stage = avatar_train_stage(config, Path(args.session).resolve())
    pipeline = Pipeline(Path(args.out), [stage], console=console, title="headcap avatar train", own_root=True)
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    metrics = read_json(result.folder / "metrics.json")
    console.print(f"novel view {metrics['novel_view'].get('psnr_db', float('nan')):.2f} dB "
                  f"(SSIM {metrics['novel_view'].get('ssim', float('nan')):.3f}), self-reenactment "
                  f"{metrics['self_reenactment'].get('psnr_db', float('nan')):.2f} dB; {metrics['gaussians']} Gaussians")
    console.print(f"wrote {result.folder}")
    return 0


def run_render(args) -> int:
    from rich.console import Console

    from headcap.avatar.avatar_data import frame_vertices, head_params_path, parse_frames, read_head_params
    from headcap.avatar.evaluate import render_to_folder
    from headcap.avatar.gaussian_avatar import load_avatar
    from headcap.capture.session import read_session

    console = Console(stderr=True)
    avatar = load_avatar(args.avatar)
    session = read_session(args.session)
    rig = session.load_rig()
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    unknown = [c for c in cams if c not in rig.cameras]
    if not cams or unknown:
        raise ValueError(f"--cameras {args.cameras!r}: unknown camera(s) {unknown}; the rig has {sorted(rig.cameras)}")
    params = read_head_params(head_params_path(session), avatar.model)
    frames = parse_frames(args.frames, params.frames)
    verts = frame_vertices(avatar.model, avatar.identity, params, frames)
    n = render_to_folder(avatar, verts, frames, {c: rig[c].undistorted() for c in cams}, args.out)
    console.print(f"wrote {n} images to {args.out} ({len(cams)} cameras x {len(frames)} frames, {avatar.count} Gaussians)")
    return 0


def run_eval(args) -> int:
    from rich.console import Console

    from headcap.core.fileio import read_json
    from headcap.pipeline import Pipeline
    from headcap.pipeline.cli_config import config_from_args
    from headcap.pipeline.stages.avatar import AvatarEvalConfig, avatar_eval_stage

    console = Console(stderr=True)
    root = Path(args.avatar)
    avatar_dir = root / "train" if (root / "train" / "avatar.json").is_file() else root
    if not (avatar_dir / "avatar.json").is_file():
        raise ValueError(f"{root}: no avatar.json (not an avatar folder written by `headcap avatar train`)")
    if avatar_dir == root:
        raise ValueError(f"{root}: give the folder passed to `headcap avatar train --out` (eval writes beside train/)")
    config = config_from_args(AvatarEvalConfig, args)
    stage = avatar_eval_stage(config, avatar_dir.resolve(), Path(args.session).resolve(),
                              Path(args.cross).resolve() if args.cross else None)
    pipeline = Pipeline(root, [stage], console=console, title="headcap avatar eval", own_root=True)
    with pipeline.hold():
        result = pipeline.run(force=(stage.name,) if args.force else ())[stage.name]
    m = read_json(result.folder / "metrics.json")
    console.print(f"novel view {m['novel_view'].get('psnr_db', float('nan')):.2f} dB, self-reenactment "
                  f"{m['self_reenactment'].get('psnr_db', float('nan')):.2f} dB")
    console.print(f"wrote {result.folder}")
    return 0
