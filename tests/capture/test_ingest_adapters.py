"""NeRSemble v2, nerfstudio and monocular inputs: cameras, calibration convention and scaling."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np

from calib.camera import look_at
from capture.ingest import IngestConfig, IngestHooks, ingest
from capture.ingest_fixtures import SyntheticRecording, write_recording

QUIET = IngestHooks(log=lambda m: None, progress=False)


def test_nersemble_v2(tmp_path):
    serials = ["222200042", "222200044"]
    rec = SyntheticRecording(width=110, height=160, frames=12, starts=[0, 1])
    write_recording(rec, tmp_path / "rec", plates=False)
    seq = tmp_path / "018" / "sequences" / "EXP-1-head" / "images"
    seq.mkdir(parents=True)
    for cam, serial in zip(rec.cameras, serials):
        shutil.copy(tmp_path / "rec" / f"{cam}.mp4", seq / f"cam_{serial}.mp4")
    poses = {s: look_at([0.3 * i, 0, 1.0], [0, 0, 0]).tolist() for i, s in enumerate(serials)}
    K = [[8000.0, 0, 1099.5], [0, 8000.0, 1603.5], [0, 0, 1]]
    (tmp_path / "018" / "calibration").mkdir()
    (tmp_path / "018" / "calibration" / "camera_params.json").write_text(
        json.dumps({"world_2_cam": poses, "intrinsics": K}))
    session = ingest(tmp_path / "018", tmp_path / "out", IngestConfig(sequence="EXP-1-head", colour="none"), QUIET)
    assert session.cameras == serials
    assert session.extra["ingest"]["format"] == "nersemble"
    assert session.extra["ingest"]["sync"]["offsets"] == {serials[0]: 0, serials[1]: 1}
    rig = session.load_rig()
    s = 110 / 2200
    assert np.allclose(rig[serials[1]].cam_from_world, poses[serials[1]])  # world_2_cam is cam_from_world
    assert math.isclose(rig[serials[0]].K[0, 2], (1099.5 + 0.5) * s - 0.5)
    assert math.isclose(rig[serials[0]].K[0, 0], 8000 * s)


def test_nerfstudio_multiview_timesteps(tmp_path):
    from capture.video import write_image

    frames = []
    for t in range(3):
        for c in range(2):
            path = f"images/{t:03d}_{c}.png"
            write_image(tmp_path / path, np.full((24, 32, 3), 40 * t + 20 * c + 30, np.uint8))
            frames.append({"file_path": path, "camera_id": f"c{c}", "timestep_index": t,
                           "transform_matrix": np.linalg.inv(look_at([c * 0.2, 0, 1.0], [0, 0, 0])).tolist()})
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"camera_model": "PINHOLE", "fl_x": 30.0, "fl_y": 30.0, "cx": 16.0, "cy": 12.0, "w": 32, "h": 24,
         "frames": frames}))
    session = ingest(tmp_path, tmp_path / "out", IngestConfig(colour="none"), QUIET)
    assert session.cameras == ["c0", "c1"] and session.frame_count == 3
    assert session.load_rig()["c0"].K[0, 2] == 15.5  # nerfstudio pixel centres at +0.5


def test_monocular_fov_guess(tmp_path):
    rec = SyntheticRecording(width=64, height=48, frames=6, starts=[0])
    write_recording(rec, tmp_path / "rec", plates=False)
    session = ingest(tmp_path / "rec" / "cam00.mp4", tmp_path / "out", IngestConfig(fov=60.0), QUIET)
    cam = session.load_rig()["cam00"]
    assert math.isclose(cam.fov_degrees[0], 60.0, abs_tol=1e-9)
    assert "fov_guess" in session.extra["ingest"]["notes"]["intrinsics"]
    assert session.frame_count == 6
