"""headcap.studio.nersemble.write_nersemble on a studio session with lens distortion (NeRSemble
ships undistorted images): the frames are the studio's undistorted by the camera's own maps
(calib.camera.Camera.undistort_image) and agree with the same scene filmed by ideal pinhole
cameras (same seed, `lens_distortion=False`; the studio's distortion moves the head by under a
pixel at this size, so that part is a sanity check), the full-resolution intrinsics read back as
the studio's, and bad arguments are refused. The pixel-exact round trip through ingest and
the tracking of such a dataset are in tests/reconstruct/test_tracking_nersemble.py."""
from __future__ import annotations

import numpy as np
import pytest

from headcap.core.fileio import read_json


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path_factory.mktemp("nswriter")
    for name, distortion in (("distorted", True), ("pinhole", False)):
        synthesize_session(StudioConfig(cameras=3, frames=1, resolution=96, calib_frames=0, seed=5,
                                        lens_distortion=distortion), root / name)
    return root


def test_distorted_session_is_undistorted_like_a_pinhole_rig(pair, tmp_path):
    import cv2

    from headcap.calib.formats.nersemble import read_nersemble
    from headcap.capture.frame_size import scale_camera
    from headcap.capture.session import read_session
    from headcap.capture.video import read_image
    from headcap.studio.nersemble import write_nersemble

    ds = write_nersemble(pair / "distorted", tmp_path / "ns", participant="017", sequence="EXP-2-eyes", scale=1)
    assert ds.sequence == tmp_path / "ns" / "017" / "sequences" / "EXP-2-eyes"
    pinhole = read_session(pair / "pinhole")
    rig_p = pinhole.load_rig()
    assert any(np.any(c.distortion != 0) for c in read_session(pair / "distorted").load_rig())
    distorted = read_session(pair / "distorted")
    rig_d = distorted.load_rig()
    rig_n = read_nersemble(ds.participant / "calibration" / "camera_params.json")
    assert read_json(tmp_path / "ns" / "studio_cameras.json")["undistorted"] == pinhole.cameras
    for cam, serial in ds.serials.items():
        n = scale_camera(rig_n[serial], rig_p[cam].width, rig_p[cam].height)  # scale 1: the same size
        np.testing.assert_allclose(n.K, rig_p[cam].K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(n.cam_from_world, rig_p[cam].cam_from_world, rtol=0, atol=1e-9)
        frame = ds.sequence / "timesteps" / "frame_00000"
        mask = read_image(frame / "alpha_map" / f"cam_{serial}.png", cv2.IMREAD_GRAYSCALE) > 127
        truth = read_image(pinhole.mask_path(0, cam), cv2.IMREAD_GRAYSCALE) > 127
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.97, (cam, iou)  # nearest-neighbour resampling: only boundary pixels differ
        written = read_image(frame / "images" / f"cam_{serial}.png")
        assert np.array_equal(written, rig_d[cam].undistort_image(read_image(distorted.image_path(0, cam))))
        image = written.astype(np.float64)
        ref = read_image(pinhole.image_path(0, cam)).astype(np.float64)
        inside = truth & mask
        assert np.abs(image - ref)[inside].mean() < 6.0, cam  # bilinear resampling of a textured head


def test_bad_arguments_are_refused(pair, tmp_path):
    from headcap.studio.nersemble import write_nersemble

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        write_nersemble(pair / "pinhole", tmp_path / "full")
    with pytest.raises(ValueError, match="scale"):
        write_nersemble(pair / "pinhole", tmp_path / "a", scale=0)
    with pytest.raises(ValueError, match="sequence"):
        write_nersemble(pair / "pinhole", tmp_path / "b", sequence="../up")


def test_synth_command_writes_a_dataset_that_ingest_reads(tmp_path):
    """`headcap synth --nersemble DIR` then `headcap ingest DIR/000 --sequence EXP-1-head`."""
    from headcap.capture.session import read_session
    from headcap.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--cameras", "3", "--frames", "2", "--resolution", "48",
                 "--calib-frames", "0", "--no-lens-distortion", "--nersemble", str(tmp_path / "ns")]) == 0
    assert main(["ingest", str(tmp_path / "ns" / "000"), "--sequence", "EXP-1-head", "--out", str(tmp_path / "i"),
                 "--colour", "none"]) == 0
    session = read_session(tmp_path / "i")
    assert session.cameras == ["220700191", "221501007", "222200036"] and session.frame_count == 2
    assert session.mask_path(1, "222200036").is_file()
    assert main(["synth", "--out", str(tmp_path / "m"), "--monocular", "--frames", "1", "--resolution", "32",
                 "--calib-frames", "0", "--nersemble", str(tmp_path / "mn")]) == 2  # NeRSemble is a rig
