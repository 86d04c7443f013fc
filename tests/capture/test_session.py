"""session.json: round trip, path resolution inside the session, file checks, rig loading."""
import json
import os

import numpy as np
import pytest

from headcap.calib.camera import Camera, Rig, look_at
from headcap.core.fileio import FileFormatError
from headcap.calib.rig_io import write_rig
from headcap.capture.session import MANIFEST, FrameEntry, Session, read_session

CAMERAS = ["cam00", "cam01"]


def make_session(root, n_frames: int = 3, with_files: bool = True) -> Session:
    frames = []
    for f in range(n_frames):
        images = {c: f"images/{c}/{f:06d}.png" for c in CAMERAS}
        masks = {c: f"masks/{c}/{f:06d}.png" for c in CAMERAS}
        frames.append(FrameEntry(index=f, timestamp=f / 30.0, images=images, masks=masks))
        if with_files:
            for rel in list(images.values()) + list(masks.values()):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(b"\x89PNG")
    return Session(root=root, name="unit", fps=30.0, cameras=list(CAMERAS), frames=frames, rig="rig.json",
                   calibration={"cam00": ["calibration/cam00/000.png"]}, extra={"source": "test"})


def make_rig(ids=CAMERAS) -> Rig:
    K = np.array([[300.0, 0.0, 63.5], [0.0, 300.0, 47.5], [0.0, 0.0, 1.0]])
    return Rig.from_list([Camera(c, 128, 96, K, cam_from_world=look_at([0.5 * i, 0, -1.5], [0, 0, 0]))
                          for i, c in enumerate(ids)])


def test_round_trip_and_paths(tmp_path):
    session = make_session(tmp_path)
    written = session.save()
    assert written == tmp_path / MANIFEST
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks", MANIFEST]  # no temp files left
    for source in (tmp_path, tmp_path / MANIFEST):
        back = read_session(source, check_files=True)
        assert back.to_dict() == session.to_dict()
        assert back.frame_count == 3 and back.fps == 30.0 and back.cameras == CAMERAS
    back = read_session(tmp_path)
    assert back.image_path(2, "cam01") == (tmp_path / "images/cam01/000002.png").resolve()
    assert back.mask_path(1, "cam00") == (tmp_path / "masks/cam00/000001.png").resolve()
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["schema_version"] == 1 and data["frame_count"] == 3
    assert all(not os.path.isabs(p) for f in data["frames"] for p in f["images"].values())


def test_check_files_names_the_missing_file(tmp_path):
    make_session(tmp_path).save()
    (tmp_path / "images/cam00/000001.png").unlink()
    read_session(tmp_path)  # paths are only checked for existence on request
    with pytest.raises(FileFormatError, match=r"frames\[1\]\.images\.cam00.*000001\.png"):
        read_session(tmp_path, check_files=True)


def test_load_rig_checks_the_session_cameras(tmp_path):
    session = make_session(tmp_path)
    session.save()
    write_rig(make_rig(), tmp_path / "rig.json")
    assert read_session(tmp_path).load_rig() == make_rig()
    write_rig(make_rig(["cam00"]), tmp_path / "rig.json")
    with pytest.raises(FileFormatError, match=r"\['cam01'\].*missing from the calibration"):
        read_session(tmp_path).load_rig()
    session.rig = None
    session.save()
    with pytest.raises(FileFormatError, match="no rig yet"):
        read_session(tmp_path).load_rig()


def test_symlink_leaving_the_session_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"")
    root = tmp_path / "session"
    root.mkdir()
    session = make_session(root, n_frames=1)
    (root / "link").symlink_to(outside, target_is_directory=True)
    session.frames[0].images["cam00"] = "link/x.png"
    session.save()
    with pytest.raises(FileFormatError, match=r"frames\[0\]\.images\.cam00.*'link/x\.png' escapes"):
        read_session(root)


@pytest.mark.parametrize("mutate,field,value", [
    (lambda d: d["frames"][0]["images"].pop("cam01"), r"frames\[0\]\.images", r"\['cam01'\]"),
    (lambda d: d["frames"][0]["masks"].update(cam09="masks/x.png"), r"frames\[0\]\.masks\.cam09", "'cam09'"),
    (lambda d: d["frames"][1]["images"].update(cam00="C:\\data\\x.png"), r"frames\[1\]\.images\.cam00", r"C:\\\\data"),
    (lambda d: d.update(fps=-5), "fps", "-5"),
    (lambda d: d.update(cameras=[]), "cameras", "empty"),
    (lambda d: d["frames"][2].update(timestamp="soon"), r"frames\[2\]\.timestamp", "'soon'"),
    (lambda d: d.pop("frames"), "frames", "missing"),
    # camera ids name folders: one that is not a plain folder name would write outside the session
    (lambda d: d["cameras"].__setitem__(1, "../cam01"), r"cameras\[1\]", r"'\.\./cam01'"),
    (lambda d: d["cameras"].__setitem__(0, ".."), r"cameras\[0\]", r"'\.\.'"),
    (lambda d: d["cameras"].__setitem__(0, 7), r"cameras\[0\]", "7"),
])
def test_invalid_manifest_fields(tmp_path, mutate, field, value):
    make_session(tmp_path, with_files=False).save()
    data = json.loads((tmp_path / MANIFEST).read_text())
    mutate(data)
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=rf"{MANIFEST}: field '{field}'.*{value}"):
        read_session(tmp_path)
