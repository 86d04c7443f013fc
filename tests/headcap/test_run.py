"""`headcap run` and `headcap batch`: the chain on a tiny synthetic session (check, calibration
against the ground truth, landmarks with the real MediaPipe models), caching and --only/--from,
config files, the executors (serial, local processes, a local Ray cluster) giving identical
artefacts, a batch where one session fails, and the report in headless Chromium."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from headcap.cli import main

SYNTH = ["--cameras", "3", "--frames", "2", "--resolution", "160", "--calib-frames", "10", "--seed", "4"]


def _status(session: Path, ran_only: bool = True) -> dict[str, str]:
    """Each step's status in run.json (without the steps the configuration skipped)."""
    steps = json.loads((session / "run.json").read_text())["steps"]
    return {s["name"]: s["status"] for s in steps
            if not (ran_only and "skipped by the configuration" in (s.get("reason") or ""))}


@pytest.fixture(scope="module")
def models(test_data) -> Path:
    return test_data / "mediapipe_face" / "models"


@pytest.fixture(scope="module")
def config_file(models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_text('skip = ["geometry", "registration", "tracking", "stabilize", "avatar", "avatar_eval", "export"]\n'
                    f'[landmarks]\nmodels = "{models}"\n\n[calibration_report.solver]\nfix_k3 = true\n')
    return path


@pytest.fixture(scope="module")
def session_template(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "session"
    assert main(["synth", "--out", str(out), *SYNTH]) == 0
    return out


@pytest.fixture(scope="module")
def ran(session_template, config_file, tmp_path_factory) -> Path:
    """A copy of the session after one full `headcap run`."""
    session = tmp_path_factory.mktemp("ran") / "session"
    shutil.copytree(session_template, session)
    assert main(["run", str(session), "--config", str(config_file)]) == 0
    return session


def test_run_calibrates_then_finds_landmarks_and_records_everything(ran, session_template):
    from headcap.calib.rig_compare import compare_rigs
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session

    assert _status(ran) == {"check": "ran", "calibration_report": "ran", "landmarks": "ran"}
    session = read_session(ran)
    assert session.rig == "calibration_report/rig.json" and session.extra["rig_prior"] == "rig.json"
    # the calibrated rig stays in the studio's world frame (seeded by the earlier rig)
    calibrated, truth = session.load_rig(), read_rig(session_template / "rig.json")
    raw = [1000 * np.linalg.norm(calibrated[c].centre - truth[c].centre) for c in truth.ids]
    # no alignment: the same world frame (world='first-camera' would put the centres ~1 m away);
    # 3 cameras x 10 board poses at 160 px leave ~2 cm of 1-sigma centre uncertainty
    assert max(raw) < 40.0, raw
    rows = compare_rigs(calibrated, truth).rows()
    assert max(abs(r["focal_error_pct"]) for r in rows) < 3.0, rows
    summary = json.loads((ran / "landmarks" / "summary.json").read_text())
    assert summary["views"] == 6 and summary["found"] >= 4 and summary["triangulated_fraction"] > 0.8, summary
    record = json.loads((ran / "run.json").read_text())
    assert record["config"]["landmarks"]["models"].endswith("models")
    assert record["config"]["calibration_report"]["solver"]["fix_k3"] is True
    assert record["config"]["calibration_report"]["solver"]["world"] == "first-camera"  # as given; seeded at run
    assert {"torch", "numpy", "python"} <= set(record["software"])
    assert (ran / "report.html").is_file()


def test_rerun_reuses_everything_and_only_from_rerun_what_they_name(ran, config_file, tmp_path):
    session = tmp_path / "session"
    shutil.copytree(ran, session)
    before = (session / "landmarks" / "landmarks2d.npz").read_bytes()
    assert main(["run", str(session), "--config", str(config_file)]) == 0
    assert set(_status(session).values()) == {"cached"}
    assert main(["run", str(session), "--config", str(config_file), "--only", "landmarks"]) == 0
    assert _status(session) == {"check": "cached", "calibration_report": "cached", "landmarks": "ran"}
    assert (session / "landmarks" / "landmarks2d.npz").read_bytes() == before
    assert main(["run", str(session), "--config", str(config_file), "--from", "calibration_report"]) == 0
    assert _status(session) == {"check": "cached", "calibration_report": "ran", "landmarks": "ran"}


def test_only_refuses_when_what_it_reads_is_stale(session_template, config_file, tmp_path, capsys):
    """--only on a step whose upstream changed: stop before any work, naming the stale step."""
    from headcap.pipeline import Pipeline, Stage

    root = tmp_path / "p"

    def write(name):
        def run(ctx):
            (ctx.work_dir / "out.txt").write_text(name + str(ctx.config))
        return run

    stages = [Stage("a", write("a"), config=1), Stage("b", write("b"), config=1, inputs=("a",))]
    Pipeline(root, stages).run()
    stages = [Stage("a", write("a"), config=2), Stage("b", write("b"), config=1, inputs=("a",))]
    with pytest.raises(ValueError, match="stage 'a' .* is not up to date"):
        Pipeline(root, stages).run(only=("b",))
    assert (root / "b" / "out.txt").read_text() == "b1"


@pytest.mark.parametrize("text, match", [
    ("[tracking_typo]\nx = 1\n", r"unknown step\(s\) \['tracking_typo'\]"),
    ("[landmarks]\nmin_detection = 'high'\n", r"\[landmarks\]\.min_detection: expected a number"),
    ("[landmarks]\nthreshold = 1\n", r"\[landmarks\]: unknown setting\(s\) \['threshold'\]"),
    ("[calibration_report.solver]\nworld = 'moon'\n", r"world: 'moon' is not one of"),
    ("[executor]\nkind = 'slurm'\n", r"\[executor\].*slurm"),
    ("[landmarks\n", "not valid TOML"),
])
def test_a_bad_config_file_names_the_file_and_the_setting(session_template, tmp_path, capsys, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    before = (session_template / "session.json").read_bytes()
    assert main(["run", str(session_template), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    import re

    assert "bad.toml" in err and re.search(match, err), err
    assert (session_template / "session.json").read_bytes() == before
    assert not (session_template / "run.json").exists()


def _landmarks_of(session: Path) -> dict:
    with np.load(session / "landmarks" / "landmarks2d.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_executors_give_the_same_artefacts_as_serial(ran, config_file, tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray", reason="Ray is the [ray] extra (installed in CI)")
    session = tmp_path / "session"
    shutil.copytree(ran, session)
    argv = ["run", str(session), "--config", str(config_file), "--only", "landmarks", "--executor", executor,
            "--workers", "2"]
    assert main(argv) == 0
    record = json.loads((session / "run.json").read_text())
    assert record["executor"]["kind"] == executor and _status(session)["landmarks"] == "ran"
    ours, theirs = _landmarks_of(session), _landmarks_of(ran)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert (session / "landmarks" / "landmarks3d.npz").read_bytes() == (ran / "landmarks" / "landmarks3d.npz").read_bytes()


def test_batch_reports_a_failed_session_and_finishes_the_others(session_template, config_file, tmp_path, capsys):
    folder = tmp_path / "sessions"
    for name in ("a_good", "c_good"):
        shutil.copytree(session_template, folder / name)
    broken = folder / "b_broken"
    shutil.copytree(session_template, broken)
    (broken / "images" / "cam01" / "000001.png").unlink()
    (folder / "notes").mkdir()  # a folder without session.json is not a session
    code = main(["batch", str(folder), "--config", str(config_file), "--executor", "serial"])
    err = capsys.readouterr().err
    assert code == 1, err
    record = json.loads((folder / "batch.json").read_text())
    rows = {Path(r["session"]).name: r for r in record["sessions"]}
    assert sorted(rows) == ["a_good", "b_broken", "c_good"]
    assert rows["b_broken"]["status"] == "failed" and "camera cam01" in rows["b_broken"]["error"]
    assert "1 image(s) missing" in rows["b_broken"]["error"]
    for name in ("a_good", "c_good"):
        assert rows[name]["status"] == "ok" and (folder / name / "report.html").is_file()
        assert _status(folder / name)["landmarks"] == "ran"
    page = (folder / "batch.html").read_text()
    assert 'href="a_good/report.html"' in page and "failed" in page


def test_report_opens_in_chromium_with_every_image_and_video_loaded(chained, tmp_path):
    from export_clients import JS_DIR, chromium, require_node_package, run_node
    from headcap.report import Report

    require_node_package("playwright-core")
    exe = chromium()
    page = chained / "report.html"
    text = page.read_text()
    assert "src=\"data:image/png;base64," in text and "Warnings" in text
    assert "calibration_report" in text and "landmarks" in text
    # a video embedded the same way (the tracking and avatar steps add overlay videos)
    import imageio.v3 as iio

    frames = np.zeros((12, 64, 96, 3), np.uint8)
    frames[:, :, :48] = 200
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=12, codec="libx264", pixelformat="yuv420p")
    report = Report("video check")
    report.video(tmp_path / "clip.mp4", "a clip", inline=True)
    report.image(chained / "contact_sheet.png", "sheet", inline=True)
    report.write(tmp_path / "video.html")
    for url, want_video in ((page.as_uri(), False), ((tmp_path / "video.html").as_uri(), True)):
        # the chain's report embeds the tracking overlay video too: every video must load
        proc = run_node(JS_DIR / "report_check.cjs", exe, url, tmp_path / "out.json", timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads((tmp_path / "out.json").read_text())
        bad = [m for m in out["console"] if m["type"] in ("error", "pageerror", "requestfailed", "warning")]
        assert not bad, bad
        assert out["images"] and all(i["width"] > 0 and i["height"] > 0 for i in out["images"]), out["images"]
        assert all(v["error"] is None and v["readyState"] >= 2 and v["width"] > 0 for v in out["videos"]), out["videos"]
        if want_video:
            assert [v["width"] for v in out["videos"]] == [96], out["videos"]
            assert abs(out["videos"][0]["duration"] - 1.0) < 0.1
        else:
            assert out["videos"], "the chain's report has the tracking overlay video"


FAST = """skip = ["geometry"]
[landmarks]
models = "{models}"
[tracking]
first_frame_iterations = 6
frame_iterations = 3
global_iterations = 2
[avatar]
iterations = 120
holdout_count = 1
holdout_frames = 1
[avatar_eval]
turntable = 4
[export]
texture_size = 128
"""


@pytest.fixture(scope="module")
def chained(session_template, models, tmp_path_factory) -> Path:
    """A copy of the session after the whole chain, with small iteration counts."""
    folder = tmp_path_factory.mktemp("chain")
    session = folder / "session"
    shutil.copytree(session_template, session)
    config = folder / "fast.toml"
    config.write_text(FAST.format(models=models))
    assert main(["run", str(session), "--config", str(config)]) == 0
    return session


def test_the_whole_chain_tracks_trains_exports_and_reports(chained):
    from export_clients import validate

    status = _status(chained, ran_only=False)
    assert status == {"check": "ran", "calibration_report": "ran", "landmarks": "ran", "geometry": "skipped",
                      "registration": "skipped", "tracking": "ran", "stabilize": "ran", "avatar": "ran", "avatar_eval": "ran", "export": "ran"}
    record = json.loads((chained / "run.json").read_text())
    reason = {s["name"]: s.get("reason") for s in record["steps"]}
    assert "skip" in reason["geometry"] and "no geometry for frame 0" in reason["registration"]
    for name in ("tracking/params.npz", "tracking/overlay.mp4", "stabilize/params.npz", "avatar/gaussians.ply",
                 "avatar_eval/metrics.json", "export/head.glb", "export/avatar.glb", "export/avatar.ply"):
        assert (chained / name).is_file(), name
    export = json.loads((chained / "export" / "summary.json").read_text())
    assert export["morph_targets"] > 40 and export["frames"] == 2
    reports = validate(chained / "export" / "head.glb")
    assert reports[0]["issues"]["numErrors"] == 0, reports[0]["issues"]
    page = (chained / "report.html").read_text()
    assert page.count("<video") >= 1 and "avatar_eval" in page and "head.glb" in page and "avatar.glb" in page


@pytest.mark.parametrize("kind", ["serial", "local"])
def test_a_failing_item_is_named_and_results_keep_their_order(kind):
    import math

    from headcap.pipeline.executor import ExecutorConfig, WorkError, make_executor

    seen = []
    with make_executor(ExecutorConfig(kind=kind, workers=2)) as executor:
        assert executor.map(math.sqrt, [9.0, 4.0, 1.0], on_done=lambda d, t: seen.append((d, t))) == [3.0, 2.0, 1.0]
        assert seen[-1] == (3, 3)
        with pytest.raises(WorkError, match=r"frame 1: ValueError: math domain error") as info:
            executor.map(math.sqrt, [4.0, -1.0, 9.0], labels=["frame 0", "frame 1", "frame 2"])
        assert isinstance(info.value.error, ValueError)
