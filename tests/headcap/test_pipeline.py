"""The stage runner: caching on config / inputs / files / code, downstream reruns, the commit
protocol under SIGKILL at every commit point, resumable stages, the folder lock, and the
dataclass-driven CLI flags."""
import argparse
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from headcap.pipeline import Pipeline, Stage
from headcap.pipeline.cli_config import add_config_arguments, config_from_args, field_docs
from headcap.core.lock import FolderLock, FolderLockedError
from headcap.pipeline.runner import COMMIT_POINTS, KILL_ENV, RECORD


@dataclass(frozen=True)
class Scale:
    factor: int = 2


def _toy_stages(calls: list, factor: int = 2, source: Path | None = None) -> list[Stage]:
    def numbers(ctx):
        calls.append("numbers")
        text = source.read_text() if source else "1 2 3"
        (ctx.work_dir / "numbers.txt").write_text(text)
        return {"count": len(text.split())}

    def scaled(ctx):
        calls.append("scaled")
        values = [int(v) * ctx.config.factor for v in (ctx.input_dir("numbers") / "numbers.txt").read_text().split()]
        (ctx.work_dir / "scaled.txt").write_text(" ".join(map(str, values)))

    def total(ctx):
        calls.append("total")
        values = [int(v) for v in (ctx.input_dir("scaled") / "scaled.txt").read_text().split()]
        (ctx.work_dir / "total.txt").write_text(str(sum(values)))

    return [Stage("numbers", numbers, files=(source,) if source else (), outputs=("numbers.txt",)),
            Stage("scaled", scaled, config=Scale(factor), inputs=("numbers",), outputs=("scaled.txt",)),
            Stage("total", total, inputs=("scaled",), outputs=("total.txt",))]


def test_runs_in_order_then_reuses_everything(tmp_path):
    calls = []
    results = Pipeline(tmp_path, _toy_stages(calls)).run()
    assert calls == ["numbers", "scaled", "total"]
    assert (tmp_path / "total" / "total.txt").read_text() == "12"
    assert [r.status for r in results.values()] == ["ran"] * 3
    record = json.loads((tmp_path / "scaled" / RECORD).read_text())
    assert record["config"] == {"factor": 2} and record["config_type"].endswith("Scale")
    assert record["versions"]["python"] and record["inputs"]["numbers"] == results["numbers"].key
    assert results["numbers"].summary == {"count": 3}
    calls.clear()
    results = Pipeline(tmp_path, _toy_stages(calls)).run()
    assert calls == [] and [r.status for r in results.values()] == ["cached"] * 3
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.old"))


def test_changed_config_reruns_only_downstream(tmp_path):
    calls = []
    Pipeline(tmp_path, _toy_stages(calls)).run()
    calls.clear()
    Pipeline(tmp_path, _toy_stages(calls, factor=3)).run()
    assert calls == ["scaled", "total"]
    assert (tmp_path / "total" / "total.txt").read_text() == "18"
    assert Pipeline(tmp_path, _toy_stages([], factor=2)).status() == {
        "numbers": "up to date", "scaled": "to run", "total": "to run"}


def test_changed_input_file_and_missing_output_rerun(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("1 1")
    run = tmp_path / "run"
    calls = []
    Pipeline(run, _toy_stages(calls, source=source)).run()
    assert (run / "total" / "total.txt").read_text() == "4"
    calls.clear()
    source.write_text("5 1")
    Pipeline(run, _toy_stages(calls, source=source)).run()
    assert calls == ["numbers", "scaled", "total"] and (run / "total" / "total.txt").read_text() == "12"
    calls.clear()
    (run / "scaled" / "scaled.txt").unlink()
    Pipeline(run, _toy_stages(calls, source=source)).run()
    assert calls == ["scaled"]  # same key for total: its input's key did not change


def test_force_reruns_a_stage(tmp_path):
    calls = []
    Pipeline(tmp_path, _toy_stages(calls)).run()
    calls.clear()
    Pipeline(tmp_path, _toy_stages(calls)).run(force=("scaled",))
    assert calls == ["scaled"]
    with pytest.raises(ValueError, match="unknown stage"):
        Pipeline(tmp_path, _toy_stages(calls)).run(force=("nope",))


def test_code_change_invalidates(tmp_path, monkeypatch):
    from headcap.pipeline import fingerprint

    pkg = tmp_path / "src" / "toy_stage_code"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    calls = []

    def make():
        return [Stage("a", lambda ctx: calls.append("a") or (ctx.work_dir / "a").write_text("a"),
                      outputs=("a",), code=("toy_stage_code",))]

    Pipeline(tmp_path / "run", make()).run()
    Pipeline(tmp_path / "run", make()).run()
    assert calls == ["a"]
    (pkg / "__init__.py").write_text("X = 2\n")
    fingerprint.code_fingerprint.cache_clear()
    Pipeline(tmp_path / "run", make()).run()
    assert calls == ["a", "a"]


def test_bad_declarations_and_foreign_folders(tmp_path):
    with pytest.raises(ValueError, match="not an earlier stage"):
        Pipeline(tmp_path, [Stage("b", lambda c: None, inputs=("a",))])
    with pytest.raises(ValueError, match="duplicate"):
        Pipeline(tmp_path, [Stage("a", lambda c: None), Stage("a", lambda c: None)])
    with pytest.raises(ValueError, match="plain folder name"):
        Stage("../x", lambda c: None)
    (tmp_path / "numbers").mkdir()
    (tmp_path / "numbers" / "precious.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by a headcap stage"):
        Pipeline(tmp_path, _toy_stages([])).run()
    assert (tmp_path / "numbers" / "precious.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="holds no earlier headcap run"):
        Pipeline(tmp_path, _toy_stages([]), own_root=True).run()


def test_missing_output_is_an_error_and_nothing_is_committed(tmp_path):
    with pytest.raises(RuntimeError, match="without writing"):
        Pipeline(tmp_path, [Stage("a", lambda ctx: None, outputs=("a.txt",))]).run()
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_a_failing_stage_leaves_no_work_folder_unless_resumable(tmp_path):
    def fail(ctx):
        (ctx.work_dir / "checkpoint").write_text("1")
        raise ValueError("bad input")

    for resumable in (False, True):
        with pytest.raises(ValueError, match="bad input"):
            Pipeline(tmp_path, [Stage("a", fail, resumable=resumable)]).run()
        assert (tmp_path / "a.partial" / "checkpoint").exists() == resumable
        assert not (tmp_path / "a").exists()


def test_lock_refuses_a_second_writer(tmp_path):
    with FolderLock(tmp_path, "first"):
        with pytest.raises(FolderLockedError, match="first pid"):
            Pipeline(tmp_path, _toy_stages([])).run()
    Pipeline(tmp_path, _toy_stages([])).run()  # released: runs


_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from headcap.pipeline import Pipeline, Stage

    root = Path(sys.argv[1])
    factor = int(sys.argv[2])

    def numbers(ctx):
        (ctx.work_dir / "numbers.txt").write_text("1 2 3 4")

    def slow_sum(ctx):
        # resumable: one checkpoint file per item, the kill hook fires after the second item
        values = [int(v) * factor for v in (ctx.input_dir("numbers") / "numbers.txt").read_text().split()]
        done = sorted(ctx.work_dir.glob("item*.txt"))
        print("resumed" if ctx.resumed else "fresh", len(done), flush=True)
        for i, v in enumerate(values):
            path = ctx.work_dir / f"item{i}.txt"
            if path.exists():
                continue
            path.write_text(str(v))
            if os.environ.get("KILL_AFTER_ITEM") == str(i):
                os.kill(os.getpid(), 9)
        total = sum(int(p.read_text()) for p in ctx.work_dir.glob("item*.txt"))
        (ctx.work_dir / "total.txt").write_text(str(total))

    stages = [Stage("numbers", numbers, outputs=("numbers.txt",)),
              Stage("sum", slow_sum, config={"factor": factor}, inputs=("numbers",), outputs=("total.txt",),
                    resumable=True)]
    Pipeline(root, stages, own_root=True).run()
""")


def _run_script(tmp_path, root, factor, env_extra=None):
    script = tmp_path / "pipe.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, "KILL_AFTER_ITEM")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(script), str(root), str(factor)], env=env,
                          capture_output=True, text=True, timeout=60)


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (RECORD, "pipeline.json", ".headcap-run", ".headcap.lock")}


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_sigkill_at_every_commit_point_then_rerun_gives_the_same_result(tmp_path, point):
    reference = tmp_path / "reference"
    assert _run_script(tmp_path, reference, 2).returncode == 0
    root = tmp_path / "killed"
    assert _run_script(tmp_path, root, 3).returncode == 0  # earlier outputs exist: the swap path runs
    killed = _run_script(tmp_path, root, 2, {KILL_ENV: f"sum:{point}"})
    assert killed.returncode == -9, killed.stderr
    rerun = _run_script(tmp_path, root, 2)
    assert rerun.returncode == 0, rerun.stderr
    assert _tree(root) == _tree(reference)
    assert not list(root.glob("*.partial")) and not list(root.glob(".*.old"))
    assert json.loads((root / "sum" / RECORD).read_text())["config"] == {"factor": 2}


def test_resumable_stage_continues_from_its_checkpoints(tmp_path):
    root = tmp_path / "run"
    killed = _run_script(tmp_path, root, 2, {"KILL_AFTER_ITEM": "1"})
    assert killed.returncode == -9
    assert sorted(p.name for p in (root / "sum.partial").glob("item*.txt")) == ["item0.txt", "item1.txt"]
    rerun = _run_script(tmp_path, root, 2)
    assert rerun.returncode == 0 and "resumed 2" in rerun.stdout
    assert (root / "sum" / "total.txt").read_text() == "20"
    # a different config must not resume from checkpoints of another key
    killed = _run_script(tmp_path, root, 5, {"KILL_AFTER_ITEM": "1"})
    rerun = _run_script(tmp_path, root, 7)
    assert "fresh 0" in rerun.stdout and (root / "sum" / "total.txt").read_text() == "70"


@dataclass(frozen=True)
class _Inner:
    alpha: float = 0.5
    """How much to blend."""


@dataclass(frozen=True)
class _FlagsConfig:
    count: int = 3
    """How many things
    to make."""
    mode: Literal["fast", "slow"] = "fast"
    """Speed."""
    verbose: bool = False
    label: str | None = None
    """Optional label."""
    inner: _Inner = field(default_factory=_Inner)


def test_config_dataclass_drives_flags():
    assert field_docs(_FlagsConfig)["count"] == "How many things to make."
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _FlagsConfig, renames={"count": "--n"})
    help_text = parser.format_help()
    assert "How many things to make. (default: 3)" in help_text and "--no-verbose" in help_text
    assert config_from_args(_FlagsConfig, parser.parse_args([])) == _FlagsConfig()
    cfg = config_from_args(_FlagsConfig, parser.parse_args(["--n", "7", "--mode", "slow", "--verbose",
                                                            "--label", "x"]))
    assert cfg == _FlagsConfig(count=7, mode="slow", verbose=True, label="x")
    assert config_from_args(_FlagsConfig, parser.parse_args([]), count=9).count == 9
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])
    inner = argparse.ArgumentParser()
    add_config_arguments(inner, _Inner, prefix="inner_")
    assert config_from_args(_Inner, inner.parse_args(["--inner-alpha", "0.25"]), prefix="inner_").alpha == 0.25
