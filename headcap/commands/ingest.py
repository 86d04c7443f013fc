"""`headcap ingest SRC --out SESSION`: videos, image folders, NeRSemble, nerfstudio or a phone
video -> one synchronised, masked, colour-matched session (see docs/capture.md)."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="turn videos/images/datasets into a session folder",
                              description=__doc__)
    p.add_argument("src", help="folder of per-camera videos or image folders, a NeRSemble or nerfstudio "
                               "dataset, or one video file")
    p.add_argument("--out", required=True, help="session folder to create")
    p.add_argument("--format", default="auto",
                   choices=["auto", "videos", "images", "nersemble", "nerfstudio", "monocular"])
    p.add_argument("--start", type=int, default=0, help="first synchronised frame to keep")
    p.add_argument("--end", type=int, default=None, help="one past the last synchronised frame to keep")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--resize", default=None, help="long side in pixels ('512') or WxH ('550x802')")
    p.add_argument("--image-format", default="png", choices=["png", "jpg"])
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--sync", default="auto", choices=["auto", "timestamps", "flash", "audio", "none"],
                   help="how to align cameras (auto: a flash if every camera sees one, else a shared sound, "
                        "else container timestamps)")
    p.add_argument("--max-offset", type=float, default=5.0, help="largest offset between cameras (seconds)")
    p.add_argument("--on-missing", default="skip", choices=["skip", "fill"],
                   help="a frame some camera dropped: skip it, or fill with that camera's previous frame")
    p.add_argument("--masks", default="auto", choices=["auto", "plate", "none"],
                   help="background-plate matting (user masks are always kept)")
    p.add_argument("--background", default=None, help="folder of per-camera background plates "
                                                      "(default: SRC/background)")
    p.add_argument("--grabcut", action="store_true", help="refine mask boundaries with GrabCut")
    p.add_argument("--colour", default="auto", choices=["auto", "chart", "subject", "none"])
    p.add_argument("--reference", default=None, help="reference camera for colour (default: the first)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of image sequences (default 30)")
    p.add_argument("--fov", type=float, default=60.0,
                   help="monocular: horizontal field of view guess in degrees when the video has no focal length")
    p.add_argument("--calibration", default=None, help="rig.json, NeRSemble camera_params.json or transforms.json")
    p.add_argument("--sequence", default=None, help="NeRSemble: sequence name inside a participant folder")
    p.add_argument("--skip-bad", action="store_true",
                   help="warn and drop bad cameras, or unreadable frames of image sequences, instead of failing")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a session an earlier `headcap ingest` wrote (any other folder, and SRC, are refused)")
    p.add_argument("--workers", type=int, default=0, help="threads (0: one per CPU)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def check_options(args) -> None:
    """Counts and sizes checked before any file is read (libraries crash or exhaust memory on
    absurd ones)."""
    from headcap.capture.frame_size import parse_resize
    from headcap.core.limits import check_count, check_image_size, check_threads

    check_threads(args.workers, "--workers", low=0)
    check_count(args.start, "--start", 0)
    check_count(args.stride, "--stride", 1)
    if args.end is not None and check_count(args.end, "--end", 1) <= args.start:
        raise ValueError(f"--end {args.end}: must be greater than --start {args.start}")
    if args.resize is not None:
        width, height = parse_resize(args.resize, 1000, 1000)
        check_image_size(width, height, f"--resize {args.resize}", what="asks for")


def run(args) -> int:
    from headcap.capture.ingest import IngestConfig, IngestHooks, ingest

    check_options(args)

    config = IngestConfig(format=args.format, start=args.start, end=args.end, stride=args.stride,
                          resize=args.resize, image_format=args.image_format, jpeg_quality=args.jpeg_quality,
                          sync=args.sync, max_offset_s=args.max_offset, on_missing=args.on_missing,
                          masks=args.masks, grabcut=args.grabcut, colour=args.colour, reference=args.reference,
                          fps=args.fps, fov=args.fov, calibration=args.calibration, background=args.background,
                          sequence=args.sequence, skip_bad=args.skip_bad, workers=args.workers)
    hooks = IngestHooks(log=lambda m: print(m, file=sys.stderr), progress=not args.no_progress)
    session = ingest(args.src, args.out, config, hooks, overwrite=args.overwrite)
    sync = session.extra["ingest"]["sync"]
    colour = session.extra["ingest"]["colour"]
    print(f"{session.root}: {len(session.cameras)} cameras x {session.frame_count} frames at {session.fps:g} fps; "
          f"sync {sync['method']} offsets {sync['offsets']}; dropped {sync['dropped'] or 'none'}; "
          f"duplicated {sync['duplicated'] or 'none'}; colour {colour['method']}")
    return 0
