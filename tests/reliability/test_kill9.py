"""The kill -9 campaign: `headcap synth`, `ingest`, `calibrate` and `demo` are SIGKILLed at every
named commit point (HEADCAP_KILL_AT=<command>:<point>) and at seeded random moments, then the same
command is run again: it finishes, and its output is identical to an uninterrupted run's (bytes
for synth, ingest and the calibrated rig; stage keys and metrics for the demo). Two runs started at
once on one --out: the second stops at once naming the first, which finishes.

Runs are forked from one server process that imported headcap once (kill_harness.py), so a
killed run costs its own time only. Sessions are tiny (3 cameras, 128 px, 1 frame).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from kill_harness import ForkServer

SYNTH = ["--cameras", "3", "--frames", "1", "--resolution", "128", "--calib-frames", "6", "--seed", "3"]
DEMO = ["--cameras", "3", "--frames", "1", "--resolution", "128", "--calib-frames", "6", "--iterations", "10",
        "--held-out", "1", "--seed", "3", "--no-geometry"]
SYNTH_POINTS = ("rendered", "complete", "old-moved", "renamed", "old-removed")
INGEST_POINTS = ("written", "complete", "old-moved", "renamed", "old-removed", "state-moved")
_REPLACING = ("old-moved", "old-removed")  # points only a run that replaces an earlier output reaches
KILLS: dict[str, int] = {}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old", ".lock", ".replaced")))


def _killed(result: dict, what: str) -> None:
    assert result["signal"] == signal.SIGKILL, f"{what}: not killed ({result['exit']}): {result['log'][-1500:]}"
    KILLS[what.split(":")[0]] = KILLS.get(what.split(":")[0], 0) + 1


def _finishes(result: dict, what: str) -> None:
    assert result["exit"] == 0, f"{what}: rerun failed: {result['log'][-3000:]}"


def _random_chain(server, make_argv, seconds, rng, kills, what, reference) -> None:
    """Run the command again and again, each run SIGKILLed at a seeded random moment within the
    `seconds` an uninterrupted run takes, until `kills` runs were killed; then run it to the end
    and compare. A run that finishes before its kill is compared too, and the chain goes on in
    a fresh output folder."""
    done, outs = 0, 0
    out = make_argv(outs)[0]
    while done < kills:
        argv = make_argv(outs)[1]
        result = server.run(argv, kill_after=rng.uniform(0.02, 0.95 * seconds))
        if result["signal"] == signal.SIGKILL:
            done += 1
            KILLS[what] = KILLS.get(what, 0) + 1
            continue
        _finishes(result, what)
        assert _files(out) == reference and _leftovers(out.parent) == []
        outs += 1
        out = make_argv(outs)[0]
    final = server.run(make_argv(outs)[1])
    # a kill after the last step of the commit leaves a complete output: the rerun says it exists
    assert final["exit"] == 0 or "already exists" in final["log"], final["log"][-3000:]
    assert _files(out) == reference and _leftovers(out.parent) == []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ForkServer(tmp_path_factory.mktemp("logs")) as s:
        yield s
    print(f"kill -9 points tested: {KILLS} ({sum(KILLS.values())} in all)")


@pytest.fixture(scope="module")
def synth_reference(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_ref") / "session"
    result = server.run(["synth", "--out", str(out), *SYNTH])
    _finishes(result, "synth reference")
    return out, _files(out), result["seconds"]


def test_synth_killed_at_every_commit_point_and_at_random_then_rerun_is_identical(server, synth_reference, tmp_path):
    _, reference, seconds = synth_reference
    durations = [seconds]
    earlier = tmp_path / "seed9" / "session"  # an earlier session of another seed, to be replaced
    _finishes(server.run(["synth", "--out", str(earlier), *SYNTH[:-1], "9"]), "synth seed 9")
    for point in SYNTH_POINTS:
        out = tmp_path / point / "session"
        argv = ["synth", "--out", str(out), *SYNTH]
        if point in _REPLACING:
            shutil.copytree(earlier, out)
            argv.append("--overwrite")
        _killed(server.run(argv, env={"HEADCAP_KILL_AT": f"synth:{point}"}), f"synth:{point}")
        rerun = server.run(argv)
        _finishes(rerun, f"synth after synth:{point}")
        if point in ("rendered", "complete"):  # these reruns redo the whole render
            durations.append(rerun["seconds"])
        assert _files(out) == reference, point
        assert _leftovers(out.parent) == [], point

    def argv(n):
        out = tmp_path / f"random{n}" / "session"
        return out, ["synth", "--out", str(out), *SYNTH]

    _random_chain(server, argv, min(durations), random.Random(19), 6, "synth", reference)


def test_two_synths_on_one_out_the_second_stops_naming_the_first(server, synth_reference, tmp_path):
    _, reference, _ = synth_reference
    out = tmp_path / "session"
    argv = ["synth", "--out", str(out), *SYNTH]
    first = server.start(argv, env={"HEADCAP_STOP_AT": "synth:rendered"})
    _wait_stopped(first)  # holding the lock, its work done, not yet committed
    second = server.run(argv)
    os.kill(first, signal.SIGCONT)
    assert second["exit"] == 2 and f"another headcap synth pid {first} on" in second["log"], second["log"]
    assert second["seconds"] < 10
    _finishes(server.wait(first), "first synth")
    assert _files(out) == reference and _leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from headcap.studio.synthetic_recording import SyntheticRecording, write_recording

    src = tmp_path_factory.mktemp("rec") / "src"
    write_recording(SyntheticRecording(width=48, height=32, frames=10, starts=[0, 1], drops={1: [5]}), src)
    return src


@pytest.fixture(scope="module")
def ingest_reference(server, recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest_ref") / "session"
    result = server.run(["ingest", str(recording), "--out", str(out), "--no-progress"])
    _finishes(result, "ingest reference")
    return _files(out), result["seconds"]


def test_ingest_killed_at_every_commit_point_and_at_random_then_rerun_is_identical(server, recording,
                                                                                   ingest_reference, tmp_path):
    reference, seconds = ingest_reference
    durations = [seconds]
    earlier = tmp_path / "stride2" / "session"  # an earlier ingest of other options, to be replaced
    _finishes(server.run(["ingest", str(recording), "--out", str(earlier), "--no-progress", "--stride", "2"]),
              "ingest stride 2")
    for point in (*INGEST_POINTS, "renamed+overwrite"):
        out = tmp_path / point / "session"
        argv = ["ingest", str(recording), "--out", str(out), "--no-progress"]
        if point in _REPLACING or point.endswith("+overwrite"):
            shutil.copytree(earlier, out)
            argv.append("--overwrite")
        _killed(server.run(argv, env={"HEADCAP_KILL_AT": f"ingest:{point.split('+')[0]}"}), f"ingest:{point}")
        rerun = server.run(argv)
        if point in ("written", "complete"):  # these reruns redo the whole ingest's work
            durations.append(rerun["seconds"])
        assert rerun["exit"] == 0 or point == "state-moved" and "already exists" in rerun["log"], rerun["log"][-3000:]
        assert _files(out) == reference, point
        assert _leftovers(out.parent) == [], point

    def argv(n):
        out = tmp_path / f"random{n}" / "session"
        return out, ["ingest", str(recording), "--out", str(out), "--no-progress"]

    _random_chain(server, argv, min(durations), random.Random(19), 6, "ingest", reference)


def test_two_ingests_on_one_out_the_second_stops_naming_the_first(server, recording, ingest_reference, tmp_path):
    reference, _ = ingest_reference
    out = tmp_path / "session"
    argv = ["ingest", str(recording), "--out", str(out), "--no-progress"]
    first = server.start(argv, env={"HEADCAP_STOP_AT": "ingest:written"})
    _wait_stopped(first)  # holding the lock, its work done, not yet committed
    second = server.run(argv)
    os.kill(first, signal.SIGCONT)
    assert second["exit"] == 2 and f"another headcap ingest pid {first} on" in second["log"], second["log"]
    _finishes(server.wait(first), "first ingest")
    assert _files(out) == reference and _leftovers(tmp_path) == []


def test_calibrate_killed_at_random_then_rerun_writes_the_same_rig(server, synth_reference, tmp_path):
    session, _, _ = synth_reference
    ref = tmp_path / "ref"
    shutil.copytree(session, ref)
    result = server.run(["calibrate", str(ref), "--out", str(ref / "rig_est.json")])
    _finishes(result, "calibrate reference")
    rng = random.Random(7)
    work = tmp_path / "killed"
    shutil.copytree(session, work)
    argv = ["calibrate", str(work), "--out", str(work / "rig_est.json")]
    for _ in range(3):
        _killed(server.run(argv, kill_after=rng.uniform(0.1, 0.7 * result["seconds"])), "calibrate")
    _finishes(server.run(argv), "calibrate after kills")
    assert (work / "rig_est.json").read_bytes() == (ref / "rig_est.json").read_bytes()
    assert not list((work / "calibration_report").glob("*.partial"))


def test_demo_killed_at_random_then_rerun_matches_and_a_second_demo_is_refused(server, tmp_path):
    import json

    reference = tmp_path / "reference"
    argv = ["demo", "--out", str(reference), *DEMO]
    first = server.start(argv)
    _wait_for(reference / "session.partial")
    second = server.run(argv)
    assert second["exit"] == 2 and f"pid {first} on" in second["log"], second["log"]
    result = server.wait(first)
    _finishes(result, "demo reference")
    out = tmp_path / "killed"
    rng = random.Random(5)
    argv = ["demo", "--out", str(out), *DEMO]
    for _ in range(3):  # the first kills land in the session stage, later ones in the chain's steps
        _killed(server.run(argv, kill_after=rng.uniform(0.05, 0.3 * result["seconds"])), "demo")
    _finishes(server.run(argv), "demo after kills")
    # avatar_eval's key hashes avatar.json, which names the session by its absolute path (two
    # folders here): its scores are compared instead
    steps = ("calibration_report", "tracking", "stabilize", "avatar", "export")
    keys = {d: {"session": json.loads((d / "session" / "stage.json").read_text())["key"]}
            | {n: json.loads((d / "session" / n / "stage.json").read_text())["key"] for n in steps}
            for d in (reference, out)}
    assert keys[out] == keys[reference]
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert ours["calibration"] == theirs["calibration"]
    assert ours["tracking"]["ground_truth"] == theirs["tracking"]["ground_truth"]
    assert ours["avatar_eval"]["novel_view"] == theirs["avatar_eval"]["novel_view"]
    for name in ("calibration_report/rig.json", "tracking/meshes.npz", "avatar/gaussians.ply", "export/head.glb"):
        assert (out / "session" / name).read_bytes() == (reference / "session" / name).read_bytes(), name
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.old"))


def _run_artefacts(session: Path) -> dict:
    """What `headcap run` leaves, minus what records time or the process: every file's bytes
    (the session's own path replaced: the runs are in two folders) except run.json, report.html,
    the lock file and the stage records (whose cache keys are compared instead)."""
    import json

    files = {k: v.replace(str(session).encode(), b"<root>") for k, v in _files(session).items()
             if k not in ("run.json", "report.html", ".headcap.lock") and not k.endswith("/stage.json")}
    keys = {p.parent.name: json.loads(p.read_text())["key"] for p in session.glob("*/stage.json")}
    return {"files": files, "keys": keys}


def test_run_killed_at_ten_random_moments_then_rerun_is_identical(server, synth_reference, tmp_path, test_data):
    """`headcap run` (check, calibration, landmarks) SIGKILLed at 10 seeded random moments; the
    rerun finishes with the same files and cache keys as an uninterrupted run, nothing left over."""
    session, _, _ = synth_reference
    config = tmp_path / "run.toml"
    config.write_text('skip = ["geometry", "registration", "tracking", "stabilize", "avatar", "avatar_eval", "export"]\n'
                      f'[landmarks]\nmodels = "{test_data / "mediapipe_face" / "models"}"\n')
    reference = tmp_path / "reference"
    shutil.copytree(session, reference)
    result = server.run(["run", str(reference), "--config", str(config), "--no-report"])
    _finishes(result, "run reference")
    expected = _run_artefacts(reference)
    assert set(expected["keys"]) == {"check", "calibration_report", "landmarks"}
    work = tmp_path / "killed"
    shutil.copytree(session, work)
    rng = random.Random(23)
    argv = ["run", str(work), "--config", str(config), "--no-report"]
    for _ in range(10):
        killed = server.run(argv, kill_after=rng.uniform(0.05, 0.95 * result["seconds"]))
        if killed["signal"] == signal.SIGKILL:
            KILLS["run"] = KILLS.get("run", 0) + 1
        else:
            _finishes(killed, "run")
    _finishes(server.run(argv), "run after kills")
    got = _run_artefacts(work)
    assert got["keys"] == expected["keys"]
    differ = sorted(k for k in set(got["files"]) | set(expected["files"])
                    if got["files"].get(k) != expected["files"].get(k))
    assert not differ, differ
    assert not [p for p in work.rglob("*") if p.name.endswith((".partial", ".old", ".tmp"))]


def test_kill_count(server):
    """Runs last in this module: the campaign killed at least 30 runs."""
    assert sum(KILLS.values()) >= 30, KILLS


def _wait_stopped(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"pid {pid} never stopped"
        time.sleep(0.005)


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
