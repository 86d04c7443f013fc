"""`headcap ingest SRC --out SESSION`: videos, image folders, NeRSemble, nerfstudio or a phone
video -> one synchronised, masked, colour-matched session (see docs/capture.md)."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    from headcap.capture.ingest import IngestConfig
    from headcap.capture.masks import MatteConfig
    from headcap.pipeline.cli_config import add_config_arguments

    p = subparsers.add_parser("ingest", help="turn videos/images/datasets into a session folder",
                              description=__doc__)
    p.add_argument("src", help="folder of per-camera videos or image folders, a NeRSemble or nerfstudio "
                               "dataset, or one video file")
    p.add_argument("--out", required=True, help="session folder to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a session an earlier `headcap ingest` wrote (any other folder, and SRC, are refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, IngestConfig, skip=("matte",), renames={"max_offset_s": "--max-offset"})
    add_config_arguments(p, MatteConfig, prefix="matte_", skip=("grabcut",), group_title="background matting")
    p.set_defaults(handler=run)


def check_options(config) -> None:
    """Counts and sizes checked before any file is read (libraries crash or exhaust memory on
    absurd ones)."""
    from headcap.capture.frame_size import parse_resize
    from headcap.core.limits import check_count, check_image_size, check_threads

    check_threads(config.workers, "--workers", low=0)
    check_count(config.start, "--start", 0)
    check_count(config.stride, "--stride", 1)
    if config.end is not None and check_count(config.end, "--end", 1) <= config.start:
        raise ValueError(f"--end {config.end}: must be greater than --start {config.start}")
    if config.resize is not None:
        width, height = parse_resize(config.resize, 1000, 1000)
        check_image_size(width, height, f"--resize {config.resize}", what="asks for")


def run(args) -> int:
    from headcap.capture.ingest import IngestConfig, IngestHooks, ingest

    from headcap.capture.masks import MatteConfig
    from headcap.pipeline.cli_config import config_from_args

    matte = config_from_args(MatteConfig, args, prefix="matte_")
    config = config_from_args(IngestConfig, args, matte=matte)
    check_options(config)
    hooks = IngestHooks(log=lambda m: print(m, file=sys.stderr), progress=not args.no_progress)
    session = ingest(args.src, args.out, config, hooks, overwrite=args.overwrite)
    sync = session.extra["ingest"]["sync"]
    colour = session.extra["ingest"]["colour"]
    print(f"{session.root}: {len(session.cameras)} cameras x {session.frame_count} frames at {session.fps:g} fps; "
          f"sync {sync['method']} offsets {sync['offsets']}; dropped {sync['dropped'] or 'none'}; "
          f"duplicated {sync['duplicated'] or 'none'}; colour {colour['method']}")
    return 0
