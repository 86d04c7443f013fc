"""Bad input: a clear error naming the culprit, a non-zero exit, and no session (or partial) left."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.cli import main
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording

QUIET = IngestHooks(log=lambda m: None, progress=False)


@pytest.fixture(scope="module")
def clean_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_recording(SyntheticRecording(width=48, height=40, frames=12, starts=[0, 0, 0]), root / "src",
                    shared_clock=True)
    return root / "src"


def _copy(clean_src, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(clean_src, dst)
    return dst


def _cli_fails(tmp_path, capsys, *args):
    out = tmp_path / "session"
    code = main(["ingest", *map(str, args), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0
    assert not out.exists() and not out.with_name("session.partial").exists()
    return err


def test_truncated_video(clean_src, tmp_path, capsys):
    src = _copy(clean_src, tmp_path)
    data = (src / "cam01.mp4").read_bytes()
    (src / "cam01.mp4").write_bytes(data[: len(data) // 2])
    err = _cli_fails(tmp_path, capsys, src)
    assert "cam01.mp4" in err and "truncated" in err


def test_corrupt_video_and_skip_flag(clean_src, tmp_path, capsys):
    src = _copy(clean_src, tmp_path)
    (src / "cam02.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    err = _cli_fails(tmp_path, capsys, src)
    assert "cam02.mp4" in err and "--skip-bad" in err
    logs = []
    session = ingest(src, tmp_path / "ok", IngestConfig(skip_bad=True, sync="timestamps"),
                     IngestHooks(log=logs.append, progress=False))
    assert session.cameras == ["cam00", "cam01"]
    assert any("cam02.mp4" in m for m in logs)
    assert session.frame_count == 12


def test_unreadable_image(tmp_path, capsys):
    from headcap.capture.video import write_image

    for cam in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "src" / cam / f"{i:04d}.png", np.full((20, 24, 3), 100 + i * 40, np.uint8))
    (tmp_path / "src" / "b" / "0001.png").write_bytes(b"not a png")
    err = _cli_fails(tmp_path, capsys, tmp_path / "src")
    assert "0001.png" in err and "unreadable image" in err


def test_different_resolutions(tmp_path, capsys):
    from headcap.capture.video import write_image

    for cam, size in (("a", (20, 24)), ("b", (20, 24)), ("c", (30, 24))):
        for i in range(3):
            write_image(tmp_path / "src" / cam / f"{i:04d}.png", np.full((*size, 3), 50 * i, np.uint8))
    err = _cli_fails(tmp_path, capsys, tmp_path / "src", "--colour", "none")
    assert "different resolutions" in err and "'c'" in err
    session = ingest(tmp_path / "src", tmp_path / "ok", IngestConfig(skip_bad=True, colour="none"), QUIET)
    assert session.cameras == ["a", "b"]
    session = ingest(tmp_path / "src", tmp_path / "ok2", IngestConfig(resize="24x20", colour="none"), QUIET)
    assert session.cameras == ["a", "b", "c"]


def test_different_frame_counts_without_timing(tmp_path, capsys):
    from headcap.capture.video import write_image

    for cam, n in (("a", 4), ("b", 3)):
        for i in range(n):
            write_image(tmp_path / "src" / cam / f"img{i}.png", np.full((20, 24, 3), 60 * i, np.uint8))
        # names without usable numbers are numbered in order, so only --sync none can pair them
    err = _cli_fails(tmp_path, capsys, tmp_path / "src", "--sync", "none", "--colour", "none")
    assert "different frame counts" in err and "'a': 4" in err


def test_camera_missing_from_calibration(clean_src, tmp_path, capsys):
    from headcap.calib.camera import Camera, Rig
    from headcap.calib.rig_io import write_rig

    K = np.array([[50.0, 0, 23.5], [0, 50.0, 19.5], [0, 0, 1]])
    write_rig(Rig.from_list([Camera("cam00", 48, 40, K), Camera("cam01", 48, 40, K)]), tmp_path / "rig.json")
    err = _cli_fails(tmp_path, capsys, clean_src, "--calibration", tmp_path / "rig.json")
    assert "['cam02'] are missing from the calibration" in err
    session = ingest(clean_src, tmp_path / "ok", IngestConfig(calibration=str(tmp_path / "rig.json"),
                                                             skip_bad=True, resize="24"), QUIET)
    rig = session.load_rig()
    # resized to half: K scales about pixel corners, (c + 0.5) * s - 0.5
    assert rig["cam00"].width == 24 and abs(rig["cam00"].K[0, 2] - ((23.5 + 0.5) * 0.5 - 0.5)) < 1e-12


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _cli_fails(tmp_path, capsys, tmp_path / "empty")
    assert "empty" in err


def test_existing_output_refused(clean_src, tmp_path, capsys):
    (tmp_path / "session").mkdir()
    code = main(["ingest", str(clean_src), "--out", str(tmp_path / "session"), "--no-progress"])
    assert code != 0 and "already exists" in capsys.readouterr().err
    assert json.dumps(sorted(p.name for p in (tmp_path / "session").iterdir())) == "[]"


def test_skip_bad_image_frame(tmp_path):
    """--skip-bad drops an unreadable frame of an image sequence (a warning naming the file, the
    file in the sync report) and keeps the rest, which match the source pixels exactly."""
    from headcap.capture.video import read_image, write_image

    rng = np.random.default_rng(7)
    source = {}
    for cam in ("a", "b"):
        for i in range(4):
            source[cam, i] = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            write_image(tmp_path / "src" / cam / f"{i:04d}.png", source[cam, i])
    bad = tmp_path / "src" / "b" / "0001.png"
    bad.write_bytes(b"not a png")
    logs = []
    session = ingest(tmp_path / "src", tmp_path / "ok", IngestConfig(skip_bad=True, colour="none", sync="timestamps"),
                     IngestHooks(log=logs.append, progress=False))
    assert any(str(bad) in m and "skipped" in m for m in logs)
    sync = session.extra["ingest"]["sync"]
    assert sync["unreadable_frames_skipped"] == {"b": [str(bad)]}
    assert sync["dropped"] == {"b": [1]} and sync["incomplete_frames_skipped"] == [1]
    assert session.extra["ingest"]["frame_map"]["global"] == [0, 2, 3]
    for out, i in enumerate([0, 2, 3]):
        for cam in ("a", "b"):
            assert np.array_equal(read_image(session.image_path(out, cam)), source[cam, i])


@pytest.mark.parametrize("camera_id", ["../../outside", "a/b", ".."])
def test_camera_id_that_is_not_a_folder_name_is_refused(tmp_path, capsys, camera_id):
    """A transforms.json camera_id becomes images/<id>/ and masks/<id>/ (and an empty mask folder is
    removed): '../../outside' once made ingest delete a folder outside the session. Now: refused."""
    from headcap.calib.camera import look_at
    from headcap.capture.video import write_image

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    src = tmp_path / "src"
    frames = []
    for c, cid in enumerate(["c0", camera_id]):
        write_image(src / f"images/{c}.png", np.full((24, 32, 3), 60 + 40 * c, np.uint8))
        frames.append({"file_path": f"images/{c}.png", "camera_id": cid,
                       "transform_matrix": np.linalg.inv(look_at([c * 0.2, 0, 1.0], [0, 0, 0])).tolist()})
    (src / "transforms.json").write_text(json.dumps(
        {"camera_model": "PINHOLE", "fl_x": 30.0, "fl_y": 30.0, "cx": 16.0, "cy": 12.0, "w": 32, "h": 24,
         "frames": frames}))
    err = _cli_fails(tmp_path, capsys, src, "--format", "nerfstudio")
    assert "transforms.json" in err and "frames[1].camera_id" in err and repr(camera_id) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert (outside / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("option, value", [("--resize", "0"), ("--resize", "-5"), ("--jpeg-quality", "500"),
                                           ("--fps", "-1"), ("--fps", "nan"), ("--max-offset", "-1"),
                                           ("--workers", "-2")])
def test_bad_option_value_is_named_before_any_work(clean_src, tmp_path, capsys, option, value):
    """These once ran to the end (a 1x1 session for --resize 0, a clamped JPEG quality, a negative
    offset window) or failed far away ('timestamps go backwards' for --fps -1)."""
    err = _cli_fails(tmp_path, capsys, clean_src, option, value)
    assert err.startswith(f"headcap ingest: error: {option}:") and value in err, err
    assert len(err.strip().splitlines()) == 1, err
