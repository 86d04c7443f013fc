"""Files stay where they belong (issue #19): dataset manifests cannot point outside the dataset,
written files get the mode the umask gives (a studio's other users can read rig.json and the
reports), and write/read failures name the file and leave nothing half-written."""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from headcap.calib.formats.nerfstudio import rig_to_transforms
from headcap.calib.formats.nersemble import rig_to_nersemble
from headcap.capture.adapters import discover_nerfstudio, discover_nersemble
from headcap.core.fileio import FileFormatError, atomic_write_text, read_json, read_text, write_json
from reliability_inputs import tiny_rig, write_json_text


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask, mode):
    """Old: mkstemp's 0o600 survived the rename, whatever the umask."""
    umask(mask)
    atomic_write_text(tmp_path / "report.txt", "x")
    write_json(tmp_path / "rig.json", {"a": 1})
    assert _mode(tmp_path / "report.txt") == mode
    assert _mode(tmp_path / "rig.json") == mode


def test_rewrite_keeps_an_existing_files_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "rig.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_json(path, {"b": 2})
    assert _mode(path) == 0o640 and read_json(path) == {"b": 2}


def test_rig_convert_output_is_readable_by_the_group(tmp_path, umask):
    from headcap.calib.rig_io import write_rig
    from headcap.cli import main

    umask(0o022)
    write_rig(tiny_rig(), tmp_path / "rig.json")
    assert main(["rig", "convert", str(tmp_path / "rig.json"), str(tmp_path / "model"), "--to", "colmap-bin"]) == 0
    for name in ("rig.json", "model/cameras.bin", "model/images.bin", "model/points3D.bin"):
        assert _mode(tmp_path / name) == 0o644, name


def test_disk_full_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    """Old: "[Errno 28] No space left on device" without a file name; now the file is named and
    the previous content survives, with no temporary file left."""
    path = tmp_path / "rig.json"
    write_json(path, {"old": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_json(path, {"new": True})
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "No space left" in str(info.value)
    monkeypatch.undo()
    assert read_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rig.json"]


def test_disk_full_through_the_cli_is_one_named_line(tmp_path, monkeypatch, capsys):
    from headcap.calib.rig_io import write_rig
    from headcap.cli import main

    write_rig(tiny_rig(), tmp_path / "rig.json")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out.json"
    assert main(["rig", "convert", str(tmp_path / "rig.json"), str(out), "--to", "rig"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and "No space left" in err, err
    assert not out.exists()


def test_symlink_loop_names_the_file(tmp_path):
    loop = tmp_path / "loop.json"
    os.symlink(loop, loop)
    with pytest.raises(OSError, match="loop.json"):
        read_text(loop)


# --- manifests that point outside their dataset ----------------------------------------------
def _nerfstudio(tmp_path, **frame0) -> Path:
    root = tmp_path / "dataset"
    root.mkdir()
    data = rig_to_transforms(tiny_rig())
    data["frames"][0].update(frame0)
    write_json_text(root / "transforms.json", data)
    (tmp_path / "outside.png").write_bytes(b"x")
    return root


@pytest.mark.parametrize("field,value", [
    ("file_path", "../outside.png"),
    ("file_path", "images/../../outside.png"),
    ("file_path", "/etc/passwd"),
    ("mask_path", "../outside.png"),
    ("mask_path", "/etc/shadow"),
    ("fg_mask_path", "../../outside.png"),
])
def test_nerfstudio_paths_stay_inside_the_dataset(tmp_path, field, value):
    """Old: `root / file_path` was opened wherever it pointed."""
    root = _nerfstudio(tmp_path, **{field: value})
    with pytest.raises(FileFormatError) as info:
        discover_nerfstudio(root)
    assert f"frames[0].{field}" in str(info.value) and value in str(info.value)


def test_nerfstudio_symlink_out_of_the_dataset_is_refused(tmp_path):
    root = _nerfstudio(tmp_path, file_path="images/link.png")
    (root / "images").mkdir()
    os.symlink(tmp_path / "outside.png", root / "images" / "link.png")
    with pytest.raises(FileFormatError, match="escapes"):
        discover_nerfstudio(root)


def test_nerfstudio_paths_inside_the_dataset_are_kept(tmp_path):
    root = _nerfstudio(tmp_path, file_path="images/cam00.png", mask_path="masks/cam00.png")
    source = discover_nerfstudio(root)
    cam = next(cs for cs in source.cameras if cs.camera == "cam00")
    assert cam.images[0] == (root / "images" / "cam00.png").resolve()
    assert cam.masks[0] == (root / "masks" / "cam00.png").resolve()


@pytest.mark.parametrize("sequence", ["../../elsewhere", "..", "/tmp", "a/../../..", "x\\..\\.."])
def test_nersemble_sequence_stays_inside_the_participant(tmp_path, sequence):
    """Old: `src / "sequences" / sequence` was read wherever --sequence pointed."""
    root = tmp_path / "participant"
    (root / "calibration").mkdir(parents=True)
    (root / "sequences" / "EXP-1").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    rig = tiny_rig().__class__({c.id: c.undistorted() for c in tiny_rig()})
    (root / "calibration" / "camera_params.json").write_text(json.dumps(rig_to_nersemble(rig)))
    with pytest.raises(ValueError, match="--sequence"):
        discover_nersemble(root, sequence)
