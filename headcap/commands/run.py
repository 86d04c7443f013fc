"""`headcap run SESSION [--config FILE] [--from STEP] [--only STEP] [--executor serial|local|ray]`:
every step of the chain on one session (headcap.pipeline.chain), cached and resumable; writes
SESSION/run.json (resolved configuration, versions, timings) and SESSION/report.html."""
from __future__ import annotations

from pathlib import Path


def add_executor_arguments(parser) -> None:
    from headcap.pipeline.executor import EXECUTORS

    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="where per-frame/per-session work runs: serial (default), local worker processes, "
                            "or a Ray cluster (pip install \"headcap[ray]\")")
    group.add_argument("--workers", type=int, default=None, help="worker processes / Ray CPUs (default 2)")
    group.add_argument("--address", default=None,
                       help="Ray cluster address, or 'local' for a private cluster of --workers CPUs (default)")


def executor_config(args, base):
    """The executor settings: the config file's [executor] table, overridden by flags."""
    import dataclasses

    from headcap.pipeline.executor import ExecutorConfig

    changes = {k: v for k, v in (("kind", args.executor), ("workers", args.workers), ("address", args.address))
               if v is not None}
    try:
        return dataclasses.replace(base or ExecutorConfig(), **changes)
    except ValueError as exc:
        raise ValueError(f"run: {exc}") from None


def register(subparsers) -> None:
    from headcap.pipeline.chain import describe_steps

    p = subparsers.add_parser(
        "run", help="every stage of the chain on one session (cached, resumable), with a report",
        description="Run the whole chain on a session folder: each step writes SESSION/<step>/ and is reused "
                    "while its inputs, settings and code are unchanged; an interrupted run resumes. Steps:\n"
                    + describe_steps(),
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("session", type=Path, help="session folder or session.json")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML or JSON file: one table per step with its settings, and [executor]")
    p.add_argument("--from", dest="from_step", default=None, metavar="STEP",
                   help="rerun this step and every later one (earlier steps must be up to date)")
    p.add_argument("--only", action="append", default=[], metavar="STEP",
                   help="rerun just this step (repeatable; the steps it reads must be up to date)")
    p.add_argument("--skip", action="append", default=[], metavar="STEP",
                   help="leave this step out (repeatable; added to the config file's skip list)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    add_executor_arguments(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from rich.console import Console

    from headcap.pipeline.chain import read_config_file, run_session
    from headcap.pipeline.executor import make_executor

    console = Console(stderr=True)
    from headcap.pipeline.chain import check_skip

    config = read_config_file(args.config)
    config["executor"] = executor_config(args, config["executor"])
    config["skip"] = check_skip(list(config["skip"]) + list(args.skip), "--skip")
    with make_executor(config["executor"]) as executor:
        result = run_session(args.session, config, from_step=args.from_step, only=tuple(args.only),
                             executor=executor, console=console, report=not args.no_report)
    ran = sum(r.status == "ran" for r in result.results.values())
    console.print(f"{ran} step(s) ran, {len(result.results) - ran} reused, {len(result.skipped)} skipped "
                  f"in {result.seconds:.1f} s")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0
