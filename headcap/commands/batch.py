"""`headcap batch SESSIONS_DIR [--config FILE] [--executor local|ray] [--workers N]`: `headcap run`
on every session under a folder (each sub-folder holding a session.json), one session per worker;
a session that fails is reported and the others go on. Writes SESSIONS_DIR/batch.json and
SESSIONS_DIR/batch.html (one row per session, linking its report); exits 1 when any failed."""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    from headcap.commands.run import add_executor_arguments

    p = subparsers.add_parser(
        "batch", help="`headcap run` on every session in a folder; failures are reported, the rest go on",
        description="Run the chain on every session folder directly under SESSIONS_DIR (a folder holding "
                    "session.json), one session per worker (--executor local|ray). A failed session is "
                    "reported with its error and does not stop the others.")
    p.add_argument("sessions", type=Path, help="folder of session folders")
    p.add_argument("--config", type=Path, default=None, help="run configuration for every session (TOML/JSON)")
    add_executor_arguments(p)
    p.set_defaults(handler=run)


def find_sessions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"batch: {folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (p / "session.json").is_file())
    if not found:
        raise ValueError(f"batch: no session folders (with session.json) directly under {folder}")
    return found


def run_one(job: tuple[str, str | None]) -> dict:
    """One session, in a worker: never raises (the batch goes on); returns its row."""
    import io

    from rich.console import Console

    from headcap.pipeline.chain import read_config_file, run_session

    session, config_path = job
    tic = time.perf_counter()
    log = io.StringIO()
    console = Console(file=log, width=120, force_terminal=False)
    try:
        config = read_config_file(Path(config_path) if config_path else None)
        result = run_session(Path(session), config, console=console)
        ran = sorted(n for n, r in result.results.items() if r.status == "ran")
        return {"session": session, "status": "ok", "seconds": time.perf_counter() - tic, "ran": ran,
                "skipped": result.skipped, "report": str(result.report) if result.report else None}
    except Exception as exc:  # noqa: BLE001 - a failed session is a row of the batch, not its end
        from headcap.cli import one_line

        return {"session": session, "status": "failed", "seconds": time.perf_counter() - tic,
                "error": one_line(f"{type(exc).__name__}: {exc}"), "log": log.getvalue()[-4000:]}


def run(args) -> int:
    import dataclasses

    from rich.console import Console
    from rich.markup import escape

    from headcap.commands.run import executor_config
    from headcap.core.fileio import write_json
    from headcap.pipeline.chain import read_config_file
    from headcap.pipeline.executor import make_executor

    console = Console(stderr=True)
    sessions = find_sessions(args.sessions)
    config = read_config_file(args.config)  # a bad file fails before any session starts
    exec_config = executor_config(args, config["executor"])
    if args.executor is None and exec_config.kind == "serial":
        exec_config = dataclasses.replace(exec_config, kind="local")
    tic = time.perf_counter()
    jobs = [(str(s.resolve()), str(args.config.resolve()) if args.config else None) for s in sessions]
    console.print(f"batch: {len(jobs)} session(s) on the {exec_config.kind} executor")
    with make_executor(exec_config) as executor:
        rows = executor.map(run_one, jobs, labels=[s.name for s in sessions],
                            on_done=lambda done, total: console.print(f"  {done}/{total} session(s) done"))
    failed = [r for r in rows if r["status"] != "ok"]
    for r in rows:
        name = Path(r["session"]).name
        if r["status"] == "ok":
            console.print(f"[green]ok[/] {escape(name)} ({r['seconds']:.1f} s; ran {', '.join(r['ran']) or 'nothing'})")
        else:
            console.print(f"[red]failed[/] {escape(name)}: {escape(r['error'])}")
    record = {"sessions": rows, "executor": dataclasses.asdict(exec_config),
              "seconds": time.perf_counter() - tic, "failed": len(failed)}
    write_json(args.sessions / "batch.json", record)
    _write_page(args.sessions, rows)
    console.print(f"batch: {len(rows) - len(failed)} ok, {len(failed)} failed; wrote {args.sessions / 'batch.html'}")
    return 1 if failed else 0


def _write_page(folder: Path, rows: list[dict]) -> None:
    import html
    import os

    from headcap.report import Report

    report = Report(f"headcap batch: {folder.name}")
    cells = []
    for r in rows:
        name = html.escape(Path(r["session"]).name)
        if r["status"] == "ok" and r.get("report"):
            link = html.escape(os.path.relpath(r["report"], folder))
            status = f'<a href="{link}">report</a>'
        else:
            status = f'<span class="bad">failed: {html.escape(r.get("error", ""))}</span>'
        cells.append(f"<tr><td>{name}</td><td>{r['status']}</td><td>{r['seconds']:.1f}</td><td>{status}</td></tr>")
    report.raw("<table><tr><th>session</th><th>status</th><th>seconds</th><th>result</th></tr>"
               + "".join(cells) + "</table>")
    report.write(folder / "batch.html")
