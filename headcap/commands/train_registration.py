"""`headcap train-registration --out WEIGHTS [--steps N ...]`: train the learned registration
(headcap.reconstruct.learned_registration) on the fly from the synthetic studio and write its
weights (safetensors), a resumable checkpoint WEIGHTS.ckpt.pt, the loss curve WEIGHTS.loss.png
and WEIGHTS.log.json. Run again with the same flags to resume after an interruption.
See docs/learned_registration.md.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from headcap.pipeline.cli_config import add_config_arguments
    from headcap.reconstruct.learned_registration.train import TrainConfig

    p = subparsers.add_parser(
        "train-registration", help="train the learned registration (images -> template meshes) on synthetic heads",
        description="Renders random heads (identity, expression, pose, albedo, lighting) through random rigs "
                    "(camera count, layout, lens distortion, noise) and trains the multi-view network of "
                    "`headcap register --method learned`. Resumes from WEIGHTS.ckpt.pt when it exists.")
    p.add_argument("--out", type=Path, required=True, metavar="WEIGHTS", help="weights file to write (.safetensors)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start from step 0")
    add_config_arguments(p, TrainConfig)
    p.set_defaults(handler=run)


def run(args) -> int:
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from headcap.pipeline.cli_config import config_from_args
    from headcap.reconstruct.learned_registration.train import TrainConfig, train

    config = config_from_args(TrainConfig, args)
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out {args.out}: the weights file must end in .safetensors")
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=config.steps)

        def progress(done: int, total: int, text: str) -> None:
            bar.update(task, completed=done, total=total, description=text)

        info = train(config, args.out, resume=not args.fresh, log=console.print, progress=progress)
    console.print(f"wrote {args.out} (held-out median vertex error {info['held_out_median_mm']:.2f} mm after "
                  f"{info['steps']} steps)")
    return 0
