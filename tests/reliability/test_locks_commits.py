"""Output locks, ownership on --overwrite, and the recovery of half-done commits of synth and
ingest (in process; the kill -9 campaign is test_kill9.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.cli import main
from headcap.core.lock import FolderLock, FolderLockedError, OutputLock, lock_path_for
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording

QUIET = IngestHooks(log=lambda m: None, progress=False)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec") / "src"
    write_recording(SyntheticRecording(width=40, height=32, frames=5, starts=[0, 1]), folder)
    return folder


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "session"
    ingest(src, out, IngestConfig(workers=1), QUIET)
    return _files(out)


def test_output_lock_refuses_a_second_writer_and_names_it(tmp_path):
    out = tmp_path / "session"
    with OutputLock(out, "headcap synth"):
        assert lock_path_for(out) == tmp_path / ".session.lock" and lock_path_for(out).is_file()
        with pytest.raises(FolderLockedError, match=rf"headcap synth pid {os.getpid()} on {socket.gethostname()}"):
            OutputLock(out, "headcap ingest").acquire()
    assert not lock_path_for(out).exists()  # removed on release
    assert not out.exists()  # the lock does not create the output


def test_a_lock_left_by_a_dead_process_is_taken_over_and_named(tmp_path):
    out = tmp_path / "session"
    child = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from headcap.core.lock import OutputLock\n"
        f"OutputLock({str(out)!r}, 'headcap ingest').acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")])
    assert child.returncode == -9 and lock_path_for(out).is_file()  # the file stays, the flock does not
    with OutputLock(out, "headcap synth") as lock:
        assert lock.stale_holder is not None and lock.stale_holder.startswith("headcap ingest pid")
    with FolderLock(tmp_path, "a run") as lock:
        assert lock.stale_holder is None


def test_ingest_and_synth_refuse_while_the_output_is_locked(src, tmp_path, capsys):
    out = tmp_path / "busy"
    with OutputLock(out, "headcap demo"):
        with pytest.raises(FolderLockedError, match="another headcap demo pid"):
            ingest(src, out, IngestConfig(), QUIET)
        assert main(["synth", "--out", str(out), "--cameras", "1", "--frames", "1", "--resolution", "32",
                     "--calib-frames", "0"]) == 2
        assert "another headcap demo pid" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("busy.partial").exists()


def test_ingest_overwrite_never_replaces_a_foreign_folder_or_its_source(src, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    before = _files(src)
    for out in (work, src, src.parent):
        code = main(["ingest", str(src), "--out", str(out), "--overwrite", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "is not a session written by headcap ingest" in err or "is or holds the input SRC" in err, err
    assert (work / "notes.txt").read_text() == "mine" and _files(src) == before
    calibration = work / "rig.json"
    calibration.write_text("{}")
    with pytest.raises(ValueError, match="--calibration"):
        ingest(src, work, IngestConfig(calibration=str(calibration)), QUIET, overwrite=True)


def test_ingest_overwrite_replaces_its_own_session(src, reference, tmp_path):
    out = tmp_path / "session"
    ingest(src, out, IngestConfig(workers=1, stride=2), QUIET)
    assert _files(out) != reference
    ingest(src, out, IngestConfig(workers=1), QUIET, overwrite=True)
    assert _files(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session"]


@pytest.mark.parametrize("left", ["old-only", "old-and-complete-partial", "old-and-new", "legacy-replaced"])
def test_ingest_recovers_a_half_done_replacement(src, reference, tmp_path, left):
    """Every state a crash inside the commit can leave: the next run restores the old session or
    finishes the new one, says which, and ends with the same files as an uninterrupted run."""
    out = tmp_path / "session"
    ingest(src, out, IngestConfig(workers=1), QUIET)
    old = tmp_path / (".session.old" if left != "legacy-replaced" else "session.replaced")
    if left in ("old-only", "legacy-replaced"):
        os.replace(out, old)
    elif left == "old-and-complete-partial":
        partial = tmp_path / "session.partial"
        os.replace(out, partial)
        (partial / ".ingest").mkdir()
        (partial / ".ingest" / "state.json").write_text('{"complete": true, "fingerprint": "x"}')
        import shutil

        shutil.copytree(partial, old, ignore=shutil.ignore_patterns(".ingest"))
    else:
        import shutil

        shutil.copytree(out, old)
    logs = []
    ingest(src, out, IngestConfig(workers=1), IngestHooks(log=logs.append, progress=False), overwrite=True)
    assert _files(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session"]
    if left in ("old-only", "legacy-replaced"):
        assert any("restored the previous session" in m for m in logs), logs


def test_synth_recovers_a_commit_interrupted_after_the_rename(tmp_path, capsys):
    """The marker says 'complete' (same config): the rerun finishes the commit and renders nothing."""
    from headcap.studio.synthesize import _PARTIAL_MARKER

    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--cameras", "1", "--frames", "1", "--resolution", "32",
            "--calib-frames", "0"]
    assert main(args) == 0
    before = _files(out)
    from headcap.core.fileio import write_json
    from headcap.studio.synthesize import StudioConfig, _config_record

    config = StudioConfig(cameras=1, frames=1, resolution=32, calib_frames=0)
    write_json(out / _PARTIAL_MARKER, {"state": "complete", "config": _config_record(config)})
    capsys.readouterr()
    assert main(args) == 0
    assert "finished its commit" in capsys.readouterr().err
    assert _files(out) == before
    assert main(args) == 2  # complete now: the ordinary refusal


def _kill_debris(folder, kind):
    """What a run SIGKILLed while creating its work folder leaves: nothing, an empty inner folder,
    or the temporary file of an interrupted atomic write of its marker."""
    folder.mkdir(parents=True)
    if kind == "inner-folder":
        (folder / ".ingest").mkdir()
        (folder / ".ingest" / ".state.json.k2j3.tmp").write_bytes(b'{"fing')
    elif kind == "marker-tmp":
        (folder / ".synth_in_progress.json.a1b2.tmp").write_bytes(b"")


@pytest.mark.parametrize("kind", ["empty", "inner-folder", "marker-tmp"])
def test_a_work_folder_left_by_a_kill_before_its_marker_is_reclaimed(src, reference, tmp_path, kind):
    """The kill -9 campaign found it: a run killed between creating <out>.partial and marking it
    left a folder the rerun refused as foreign. Such debris holds no one's data and is reclaimed."""
    out = tmp_path / "session"
    _kill_debris(out.with_name("session.partial"), kind)
    ingest(src, out, IngestConfig(workers=1), QUIET)
    assert _files(out) == reference and sorted(p.name for p in tmp_path.iterdir()) == ["session"]
    synth = tmp_path / "synth"
    _kill_debris(synth.with_name("synth.partial"), kind)
    assert main(["synth", "--out", str(synth), "--cameras", "1", "--frames", "1", "--resolution", "32",
                 "--calib-frames", "0"]) == 0
    assert (synth / "session.json").is_file() and not synth.with_name("synth.partial").exists()


def test_a_work_folder_holding_anything_else_is_refused_and_kept(src, tmp_path, capsys):
    out = tmp_path / "session"
    partial = out.with_name("session.partial")
    (partial / "sub").mkdir(parents=True)
    (partial / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"session\.partial: exists and was not left by `headcap ingest`"):
        ingest(src, out, IngestConfig(workers=1), QUIET)
    synth = tmp_path / "synth"
    (synth.with_name("synth.partial")).mkdir()
    (synth.with_name("synth.partial") / "a.tmp").write_text("not ours: no leading dot")
    assert main(["synth", "--out", str(synth), "--cameras", "1", "--frames", "1", "--resolution", "32",
                 "--calib-frames", "0"]) == 2
    assert "synth.partial: exists and was not left by" in capsys.readouterr().err
    assert (partial / "sub" / "notes.txt").read_text() == "mine"
    assert (synth.with_name("synth.partial") / "a.tmp").read_text() == "not ours: no leading dot"
    assert not out.exists() and not synth.exists()


def test_a_pipeline_root_with_only_a_half_written_marker_is_claimed(tmp_path):
    from headcap.pipeline import Pipeline, Stage
    from headcap.pipeline.runner import MARKER

    root = tmp_path / "run"
    root.mkdir()
    (root / f".{MARKER}.x9y8.tmp").write_bytes(b'{"tit')

    def write(ctx):
        (ctx.work_dir / "out.txt").write_text("ok")

    Pipeline(root, [Stage("only", write, config={})], own_root=True).run()
    assert (root / "only" / "out.txt").read_text() == "ok" and (root / MARKER).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no earlier headcap run"):
        Pipeline(other, [Stage("only", write, config={})], own_root=True).run()
    assert (other / "notes.txt").read_text() == "mine" and not (other / "only").exists()
