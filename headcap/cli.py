"""The `headcap` command. Each subcommand lives in `headcap/commands/<name>.py` and exposes
`register(subparsers)`; its handler receives the parsed arguments and returns an exit code."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["demo", "synth", "rig", "calibrate", "ingest", "doctor"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headcap",
        description="Rig session or monocular video -> animatable, photoreal 3D head avatar.",
    )
    parser.add_argument("--version", action="version", version=f"headcap {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"headcap.commands.{name}").register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("headcap")
    except Exception:
        return "0.1.0"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        print(f"headcap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"headcap {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
