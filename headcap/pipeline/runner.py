"""The stage runner: every headcap stage is a `Stage`; a `Pipeline` runs them in order under one
output folder, caches each on (input artefacts, config, code version), skips what is up to date,
resumes after a crash and records the resolved config and versions beside each stage's outputs.

On disk, for a stage named `calibration` under the run folder ROOT:

    ROOT/calibration/            the committed outputs + stage.json (key, config, versions, timing)
    ROOT/calibration.partial/    the work folder while the stage runs (kept for a resumable stage)
    ROOT/.calibration.old        the previous outputs, for the instant of the swap only
    ROOT/.headcap.lock           one writer per ROOT (headcap.core.lock)

Commit order (each step a rename or an atomic write, so a crash at any line leaves either the
old or the new outputs, and the next run finishes or discards the half-done commit):
1. write stage.json into the work folder (atomic), 2. rename ROOT/name to ROOT/.name.old,
3. rename the work folder to ROOT/name, 4. remove ROOT/.name.old.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape

from headcap.core.extension import build_seconds
from headcap.core.fileio import read_json_object_or_none, swap_into_place, write_json
from headcap.core.lock import FolderLock
from headcap.pipeline.fingerprint import canonical, code_fingerprint, digest, software_versions, tree_fingerprint

RECORD = "stage.json"
MARKER = ".headcap-run"
_KEY_FILE = ".stage-key"
# Fault injection for the crash tests: HEADCAP_PIPELINE_KILL_AT=<stage>:<point> makes the process
# SIGKILL itself at that point of the commit (points: COMMIT_POINTS).
KILL_ENV = "HEADCAP_PIPELINE_KILL_AT"
COMMIT_POINTS = ("work-done", "record-written", "old-moved", "renamed", "old-removed")


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    run(ctx) writes the stage's files into ctx.work_dir and may return a small JSON-ready summary
    (kept in stage.json). `inputs` name earlier stages whose folders it reads (ctx.input_dir);
    `files` are outside files or folders it reads, fingerprinted by content; `outputs` are files
    (relative to the stage folder) it must produce; `code` names the modules whose source is the
    stage's code version. A `resumable` stage keeps its work folder after a crash (same key) and
    is expected to continue from the checkpoints it left there.
    """

    name: str
    run: Callable[["StageContext"], dict | None]
    config: object = None
    inputs: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    outputs: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    resumable: bool = False
    description: str = ""

    def __post_init__(self):
        if not self.name or self.name.startswith(".") or "/" in self.name or self.name.endswith(".partial"):
            raise ValueError(f"pipeline: stage name {self.name!r} must be a plain folder name")


@dataclass
class StageContext:
    """What a running stage sees: its config, its work folder, its inputs' folders, progress."""

    stage: Stage
    key: str
    root: Path
    work_dir: Path
    console: object
    resumed: bool = False
    executor: object = None

    @property
    def config(self):
        return self.stage.config

    def map(self, fn: Callable, items, description: str, labels=None) -> list:
        """[fn(item) for item in items] on the pipeline's executor (serial, local processes or
        Ray; headcap.pipeline.executor), in order, with a progress bar. `fn` must be a
        module-level function of one picklable item, deterministic, writing only its own files."""
        from headcap.pipeline.executor import Executor

        items = list(items)
        executor = self.executor or Executor()
        with self.progress(description, len(items)) as update:
            return executor.map(fn, items, labels, on_done=lambda done, _total: update(done))

    def input_dir(self, name: str) -> Path:
        if name not in self.stage.inputs:
            raise KeyError(f"pipeline: stage {self.stage.name!r} did not declare input {name!r}")
        return self.root / name

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """A progress bar; yields update(done, total=None, description=None)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console) as bar:
            task = bar.add_task(description, total=total)

            def update(done: int, total: int | None = None, description: str | None = None) -> None:
                changes = {"completed": done}
                if total is not None:
                    changes["total"] = total
                if description is not None:
                    changes["description"] = description
                bar.update(task, **changes)

            yield update


@dataclass
class StageResult:
    name: str
    key: str
    status: str  # "ran" or "cached"
    seconds: float
    folder: Path
    record: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        return self.record.get("summary") or {}


class Pipeline:
    """Stages run in the given order under `root`; see the module docstring for the layout."""

    def __init__(self, root: Path, stages: list[Stage], console=None, title: str = "headcap",
                 own_root: bool = False, executor=None):
        """own_root=True: ROOT is the run's own folder (the demo's, a pipeline's --out); a
        non-empty ROOT that no headcap run marked is refused. Otherwise ROOT is shared (a
        session folder) and only the stages' own folders are touched."""
        self.set_stages(stages)
        self.root = Path(root)
        self.title = title
        self.own_root = own_root
        self.executor = executor  # headcap.pipeline.executor.Executor for ctx.map; None: serial
        self._held: FolderLock | None = None
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console

    def set_stages(self, stages: list[Stage]) -> None:
        """The stages to run (a chain may add stages between runs under one hold())."""
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline: duplicate stage names in {names}")
        for i, stage in enumerate(stages):
            for name in stage.inputs:
                if name not in names[:i]:
                    raise ValueError(f"pipeline: stage {stage.name!r} reads {name!r}, which is not an earlier stage")
        self.stages = list(stages)

    # -- keys and status --------------------------------------------------------------------
    def keys(self) -> dict[str, str]:
        """Each stage's cache key: its config, code, outside files and its inputs' keys."""
        keys: dict[str, str] = {}
        for stage in self.stages:
            keys[stage.name] = self._key(stage, keys)
        return keys

    def _key(self, stage: Stage, keys: dict[str, str]) -> str:
        return digest({
            "stage": stage.name,
            "config_type": _type_name(stage.config),
            "config": self._portable(canonical(stage.config)),
            "code": code_fingerprint(tuple(stage.code)) if stage.code else "",
            "files": {self._portable(os.fspath(p)): tree_fingerprint(Path(p)) for p in stage.files},
            "inputs": {name: keys[name] for name in stage.inputs},
        })

    def _portable(self, value):
        """Paths inside ROOT as ROOT-relative: a session folder that was moved or copied keeps
        its cached results (its files' content is what counts)."""
        if isinstance(value, dict):
            return {k: self._portable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._portable(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            root = os.path.abspath(self.root)
            if value == root or value.startswith(root + os.sep):
                return "<root>" + value[len(root):]
        return value

    def record(self, name: str) -> dict | None:
        return read_json_object_or_none(self.root / name / RECORD)

    def is_current(self, stage: Stage, key: str) -> bool:
        record = self.record(stage.name)
        return (record is not None and record.get("key") == key
                and all((self.root / stage.name / out).exists() for out in stage.outputs))

    def status(self) -> dict[str, str]:
        keys = self.keys()
        return {s.name: ("up to date" if self.is_current(s, keys[s.name]) else "to run") for s in self.stages}

    # -- running ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self) -> Iterator["Pipeline"]:
        """Hold ROOT's lock across run() and whatever the caller writes after it (a report)."""
        if self._held is not None:
            yield self
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with FolderLock(self.root, f"'{self.title}'") as lock:
            self._held = lock
            try:
                self._claim_root()
                yield self
            finally:
                self._held = None

    def run(self, force: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> dict[str, StageResult]:
        """Run every stage that is not up to date (or is named in `force`), in order. With `only`,
        just those stages run; every other stage must already be up to date (its committed
        outputs are read as they are) or the run stops before any work, naming it."""
        names = [s.name for s in self.stages]
        for flag, given in (("--force", force), ("--only", only or ())):
            unknown = set(given) - set(names)
            if unknown:
                raise ValueError(f"pipeline: {flag} names unknown stage(s) {sorted(unknown)}; stages: {names}")
        results: dict[str, StageResult] = {}
        with self.hold():
            keys: dict[str, str] = {}
            if only is not None:
                keys = self.keys()
                needed = self._needed_by(only)
                for stage in self.stages:
                    self._recover(stage, keys[stage.name])
                    if stage.name in needed and stage.name not in only and not self.is_current(stage, keys[stage.name]):
                        raise ValueError(f"pipeline: stage {stage.name!r} (read by {sorted(only)}) is not up to date "
                                         "- its inputs, settings or code changed or it never ran; run it first "
                                         "(or start from it)")
            n = len(self.stages)
            for i, stage in enumerate(self.stages, 1):
                # a stage's key is taken when its turn comes: its `files` may include what an
                # earlier stage of this run just wrote (a folder inside ROOT)
                key = keys[stage.name] = self._key(stage, keys)
                self._recover(stage, key)
                label = f"[{i}/{n}] {stage.name}"
                if only is not None and stage.name not in only:
                    if (self.root / stage.name / RECORD).is_file():
                        results[stage.name] = StageResult(stage.name, key, "cached", 0.0, self.root / stage.name,
                                                          self.record(stage.name) or {})
                    continue
                if stage.name not in force and self.is_current(stage, key):
                    record = self.record(stage.name) or {}
                    self.console.print(f"{label}: up to date (reusing {escape(str(self.root / stage.name))})")
                    results[stage.name] = StageResult(stage.name, key, "cached", 0.0, self.root / stage.name, record)
                    continue
                what = f" - {stage.description}" if stage.description else ""
                self.console.print(f"[bold]{label}[/]{escape(what)}")
                results[stage.name] = self._run_stage(stage, key)
            if self.own_root:
                write_json(self.root / "pipeline.json", {
                    "title": self.title,
                    "stages": [{"name": r.name, "key": r.key, "status": r.status, "seconds": r.seconds}
                               for r in results.values()],
                    "finished": _now(),
                })
        return results

    def _needed_by(self, names) -> set[str]:
        """The stages whose outputs `names` read, directly or through others."""
        by_name = {s.name: s for s in self.stages}
        needed, todo = set(), list(names)
        while todo:
            for name in by_name[todo.pop()].inputs:
                if name not in needed:
                    needed.add(name)
                    todo.append(name)
        return needed

    def _claim_root(self) -> None:
        marker = self.root / MARKER
        if not self.own_root or marker.is_file():
            return
        # a run killed while writing the marker leaves its temporary file: not a foreign file
        foreign = [p.name for p in self.root.iterdir()
                   if p.name != ".headcap.lock" and not (p.name.startswith(f".{MARKER}.") and p.name.endswith(".tmp"))]
        if foreign:
            raise ValueError(f"{self.root}: folder is not empty and holds no earlier headcap run "
                             f"({MARKER} missing; found {sorted(foreign)[:5]}); choose another output folder")
        write_json(marker, {"title": self.title, "created": _now()})

    def _run_stage(self, stage: Stage, key: str) -> StageResult:
        final = self.root / stage.name
        if final.exists() and not (final / RECORD).is_file():
            raise ValueError(f"{final}: exists and was not written by a headcap stage ({RECORD} missing); "
                             "refusing to replace it - move it away or choose another folder")
        work = self._work_dir(stage)
        resumed = False
        if work.exists():
            resumed = stage.resumable and _read_key(work) == key
            if not resumed:
                shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        (work / _KEY_FILE).write_text(key)
        ctx = StageContext(stage, key, self.root, work, self.console, resumed, self.executor)
        if resumed:
            self.console.print(f"  resuming from the checkpoints in {escape(str(work))}")
        started = _now()
        built_before = build_seconds()
        tic = time.perf_counter()
        try:
            summary = stage.run(ctx)
        except BaseException:
            if not stage.resumable:  # a failed stage leaves nothing behind; a resumable one its checkpoints
                shutil.rmtree(work, ignore_errors=True)
            raise
        building = build_seconds() - built_before  # a first-use kernel build is not the stage's time
        seconds = time.perf_counter() - tic - building
        missing = [out for out in stage.outputs if not (work / out).exists()]
        if missing:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"pipeline: stage {stage.name!r} finished without writing {missing} in {work}")
        _maybe_kill(stage.name, "work-done")
        record = {
            "stage": stage.name,
            "key": key,
            "config_type": _type_name(stage.config),
            "config": canonical(stage.config),
            "inputs": {name: (self.record(name) or {}).get("key") for name in stage.inputs},
            "files": [os.fspath(p) for p in stage.files],
            "versions": software_versions(),
            "started": started,
            "finished": _now(),
            "seconds": seconds,
            "kernel_build_seconds": building,
            "summary": canonical(summary) if summary is not None else None,
        }
        (work / _KEY_FILE).unlink()
        write_json(work / RECORD, record)
        _maybe_kill(stage.name, "record-written")
        self._commit(stage, work)
        built = f" (+ {building:.1f} s building C++ kernels)" if building > 0 else ""
        self.console.print(f"  {stage.name}: done in {seconds:.1f} s{built}")
        return StageResult(stage.name, key, "ran", seconds, self.root / stage.name, record)

    def _work_dir(self, stage: Stage) -> Path:
        return self.root / f"{stage.name}.partial"

    def _old_dir(self, stage: Stage) -> Path:
        return self.root / f".{stage.name}.old"

    def _commit(self, stage: Stage, work: Path) -> None:
        swap_into_place(work, self.root / stage.name, self._old_dir(stage),
                        on_step=lambda point: _maybe_kill(stage.name, point))

    def _recover(self, stage: Stage, key: str) -> None:
        """Finish or undo a commit that a crash interrupted (see the module docstring)."""
        final, old, work = self.root / stage.name, self._old_dir(stage), self._work_dir(stage)
        work_record = read_json_object_or_none(work / RECORD)
        if work_record is not None:
            if work_record.get("key") == key:
                self.console.print(f"  {stage.name}: finishing the commit a crash interrupted")
                self._commit(stage, work)
            else:
                shutil.rmtree(work)
        if old.exists():
            if final.exists():
                shutil.rmtree(old)
            else:
                os.replace(old, final)


def _read_key(work: Path) -> str | None:
    try:
        return (work / _KEY_FILE).read_text().strip()
    except OSError:
        return None


def _type_name(config) -> str | None:
    return None if config is None else f"{type(config).__module__}.{type(config).__qualname__}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _maybe_kill(stage: str, point: str) -> None:
    if os.environ.get(KILL_ENV) == f"{stage}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)
