"""The `headcap` command. Each subcommand lives in `headcap/commands/<name>.py` and exposes
`register(subparsers)`; its handler receives the parsed arguments and returns an exit code.

One error boundary for every command: a bad input (a file, a field, an option) exits 2 with one
line `headcap CMD: error: ...`; an internal error exits 1 with one line and a hint; `--debug`
(anywhere on the command line) shows the traceback instead. Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

COMMANDS = ["demo", "run", "batch", "synth", "rig", "calibrate", "landmarks", "ingest", "doctor", "export", "view", "track", "stabilize", "avatar", "speak", "reconstruct", "register", "models", "train_registration"]

#: longest error line printed (a value's repr can be megabytes long)
MAX_MESSAGE = 2000


class UsageError(Exception):
    """A command line argparse refused: reported as one line instead of usage + error."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="headcap",
        description="Rig session or monocular video -> animatable, photoreal 3D head avatar.",
    )
    parser.add_argument("--version", action="version", version=f"headcap {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"headcap.commands.{name}").register(sub)
    return parser


def _version() -> str:
    from headcap.pipeline.fingerprint import headcap_version

    return headcap_version()


def one_line(text: str) -> str:
    """Messages go to a terminal: no newlines or control characters, bounded length."""
    flat = " ".join(str(text).split())
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in flat)
    return flat if len(flat) <= MAX_MESSAGE else flat[:MAX_MESSAGE - 3] + "..."


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit code, message) for an exception that escaped a command: 2 for bad input, 1 for a bug."""
    import struct

    name = type(exc).__name__
    if isinstance(exc, OSError):
        if exc.filename is not None:
            target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
            return 2, f"{target}: {exc.strerror or exc}"
        return 2, str(exc) or name
    if isinstance(exc, KeyError):
        return 2, str(exc.args[0]) if exc.args else name
    if isinstance(exc, RecursionError):
        return 2, f"input nested too deeply to process ({exc})"
    if isinstance(exc, MemoryError):
        return 2, ("out of memory: an input asks for more memory than this machine has "
                   f"{('(' + str(exc) + ')') if str(exc) else ''}; use a smaller input or size")
    if isinstance(exc, OverflowError):
        return 2, f"a number in the input is too large ({exc})"
    if isinstance(exc, ArithmeticError):
        return 2, f"an input value is out of range ({name}: {exc})"
    if isinstance(exc, struct.error):
        return 2, f"a value does not fit its binary field ({exc})"
    if type(exc).__module__ == "cv2" or name == "error" and "cv2" in repr(type(exc)):
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return 2, f"OpenCV refused the input: {lines[-1].strip() if lines else name}"
    if isinstance(exc, (ValueError, TypeError, RuntimeError, LookupError)):
        return 2, str(exc) or name
    return 1, f"internal error {name}: {exc} (rerun with --debug for the traceback, and please report it)"


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"headcap: warning: {one_line(message)}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {one_line(exc)} (see {exc.prog} --help)", file=sys.stderr)
        return 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    where = f"headcap {args.command}"
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_warning
        try:
            return int(args.handler(args) or 0)
        except KeyboardInterrupt:
            print(f"{where}: interrupted", file=sys.stderr)
            return 130
        except UsageError as exc:
            print(f"{exc.prog}: error: {one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:
            code, message = describe_error(exc)
            if debug:
                traceback.print_exc()
            print(f"{where}: error: {one_line(message)}", file=sys.stderr)
            return code


if __name__ == "__main__":
    sys.exit(main())
