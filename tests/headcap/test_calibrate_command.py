"""`headcap calibrate` as a user of the calibration stage: the board comes from the session, a
rerun is served from the stage folder, and a report folder written inside an image folder is not
mistaken for a camera on the next run."""
import json
import shutil

import pytest

from headcap.capture.session import read_session
from headcap.cli import main
from headcap.studio.synthesize import StudioConfig, synthesize_session


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "session"
    synthesize_session(StudioConfig(cameras=3, frames=1, resolution=160, calib_frames=10, seed=2), out)
    return out


def test_session_board_and_cached_rerun(session_dir, capsys):
    assert main(["calibrate", str(session_dir)]) == 0  # no --board: the session records it
    record = json.loads((session_dir / "calibration_report" / "stage.json").read_text())
    assert record["config"]["board"] is None and record["summary"]["rms_px"] < 1.0
    assert read_session(session_dir).rig == "rig.json"
    capsys.readouterr()
    assert main(["calibrate", str(session_dir)]) == 0
    assert "up to date" in capsys.readouterr().err
    assert main(["calibrate", str(session_dir), "--fix-k3"]) == 0
    assert json.loads((session_dir / "calibration_report" / "stage.json").read_text())["config"]["solver"]["fix_k3"]


def test_report_inside_an_image_folder_is_not_a_camera(session_dir, tmp_path, capsys):
    session = read_session(session_dir)
    folder = tmp_path / "images"
    for cam, files in session.calibration.items():
        (folder / cam).mkdir(parents=True)
        for rel in files:
            shutil.copy(session.path(rel, "calibration"), folder / cam)
    board = session.extra["board"]
    assert main(["calibrate", str(folder), "--board", board]) == 0
    assert (folder / "calibration_report" / "index.html").is_file()
    capsys.readouterr()
    assert main(["calibrate", str(folder), "--board", board, "--force"]) == 0
    err = capsys.readouterr().err
    assert "calibration_report" not in json.loads((folder / "calibration_report" / "summary.json").read_text())["cameras"]
    assert "up to date" not in err
