"""NeRSemble v2, nerfstudio and monocular inputs: cameras, calibration convention and scaling."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np

from headcap.calib.camera import look_at
from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording

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
    from headcap.capture.video import write_image

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


def test_phone_rotation_applied(tmp_path):
    """A phone video stored landscape with a 90 degree display matrix is ingested upright: the
    frames match what ffmpeg itself shows (its autorotation, an independent decoder path)."""
    import subprocess

    import imageio_ffmpeg

    from headcap.studio.synthetic_recording import encode
    from headcap.capture.video import probe_video, read_image

    rng = np.random.default_rng(5)
    frames = []
    for t in range(4):
        img = np.zeros((32, 48, 3), np.uint8)
        img[:, :] = (40, 60, 90)
        img[2:10, 3:15] = (230, 40, 40)  # a red block near the stored top-left corner
        img[20:30, 30 + t:40 + t] = (40, 220, 60)
        frames.append(np.clip(img + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8))
    video = tmp_path / "phone.mp4"
    encode(video, frames, range(4), 30, crf=0, rotation=90)
    info = probe_video(video)
    assert (info.width, info.height, info.rotation) == (32, 48, 90)
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(4, 48, 32, 3)  # ffmpeg rotates for display by default
    session = ingest(video, tmp_path / "out", IngestConfig(), QUIET)
    cam = session.load_rig()["cam00"]
    assert (cam.width, cam.height) == (32, 48)
    for i in range(session.frame_count):
        got = read_image(session.image_path(i, "cam00"))
        assert got.shape == (48, 32, 3)
        assert np.abs(got.astype(int) - shown[i]).mean() < 2.0
    # counterclockwise by 90: the stored top-left corner ends at the bottom-left
    assert read_image(session.image_path(0, "cam00"))[40:44, 4:8, 0].mean() > 180
