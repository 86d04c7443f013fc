"""A NeRSemble v1 dataset made from the studio's output (headcap.studio.nersemble), ingested
back (cameras to 1e-9, images and masks pixel for pixel), then tracked with the ICT head through
`headcap track` without ground truth and scored against the studio's truth.

Tiny size (4 cameras, 96 px, 2 frames, 6/3/0 Levenberg-Marquardt steps, no landmarks) so the file
takes ~30 s of CPU time; thresholds are ~1.5x what this size measured (see the asserts). The issue's targets
belong to the larger run of benchmarks/bm_nersemble.py (numbers in docs/avatar.md)."""
from __future__ import annotations

import numpy as np
import pytest

from headcap.core.fileio import read_json, read_npz

STEPS = ["--first-frame-iterations", "6", "--frame-iterations", "3", "--global-iterations", "0", "--no-overlay"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, test_data):
    from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
    from headcap.studio.nersemble import write_nersemble
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path_factory.mktemp("nersemble")
    head = f"ict:{test_data / 'ict_facekit' / 'ict_facekit_light_model.npz'}"
    synthesize_session(StudioConfig(cameras=4, frames=2, resolution=96, calib_frames=0, head=head, seed=3,
                                    lens_distortion=False), root / "studio")
    ds = write_nersemble(root / "studio", root / "nersemble")
    # the participant folder, as a user points ingest at a download (--sequence picks one)
    ingest(ds.participant, root / "session", IngestConfig(sequence=ds.sequence.name, colour="none"),
           IngestHooks(log=lambda m: None, progress=False))
    return {"root": root, "ds": ds, "head": head}


def test_layout_is_nersemble_v1(dataset):
    ds = dataset["ds"]
    params = read_json(ds.participant / "calibration" / "camera_params.json")
    assert set(params) == {"world_2_cam", "intrinsics", "width", "height"}
    assert sorted(params["world_2_cam"]) == sorted(ds.serials.values())
    assert list(ds.serials.values())[:2] == ["220700191", "221501007"]  # NeRSemble's serials
    assert (params["width"], params["height"]) == (192, 192)  # the full size: images-2x holds half
    frame = ds.sequence / "timesteps" / "frame_00001"
    assert sorted(p.name for p in (frame / "images-2x").iterdir()) == sorted(f"cam_{s}.png" for s in ds.serials.values())
    assert sorted(p.name for p in (frame / "alpha_map").iterdir()) == sorted(f"cam_{s}.png" for s in ds.serials.values())


def test_ingest_gives_back_the_studio_cameras_images_and_masks(dataset):
    from headcap.capture.session import read_session
    from headcap.capture.video import read_image

    root, ds = dataset["root"], dataset["ds"]
    studio, ingested = read_session(root / "studio"), read_session(root / "session")
    assert ingested.extra["ingest"]["format"] == "nersemble"
    assert ingested.cameras == [ds.serials[c] for c in studio.cameras] and ingested.frame_count == 2
    rs, ri = studio.load_rig(), ingested.load_rig()
    for cam, serial in ds.serials.items():
        a, b = rs[cam], ri[serial]
        assert (a.width, a.height) == (b.width, b.height) and b.distortion_model == "none"
        np.testing.assert_allclose(b.K, a.K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b.cam_from_world, a.cam_from_world, rtol=0, atol=1e-9)
        for t in range(2):
            assert np.array_equal(read_image(ingested.image_path(t, serial)), read_image(studio.image_path(t, cam)))
            assert np.array_equal(read_image(ingested.mask_path(t, serial)), read_image(studio.mask_path(t, cam)))


def test_track_ingested_dataset_with_ict_against_studio_truth(dataset):
    """No ground truth in the ingested session: `headcap track --head ict:...` on it, then the
    fit against the studio's truth. Measured at this size with the tracker of commit 977d7d6:
    vertex median 6.15 mm, landmark reprojection 1.55 px, skull rotation 1.48 deg, translation
    4.52 mm; the bounds are 1.5x those."""
    from headcap.cli import main
    from headcap.studio.nersemble import score_tracking

    root, ds = dataset["root"], dataset["ds"]
    assert not (root / "session" / "ground_truth").exists()
    assert main(["track", str(root / "session"), "--head", dataset["head"], *STEPS]) == 0
    out = root / "session" / "tracking"
    params = read_npz(out / "params.npz")
    assert str(params["head_spec"].reshape(-1)[0]) == dataset["head"]
    assert "ground_truth" not in read_json(out / "summary.json")  # nothing to compare with inside the session
    scores = score_tracking(out, root / "studio", {s: c for c, s in ds.serials.items()})
    assert scores["vertex_error_mm_median"] <= 9.2, scores
    assert scores["landmark_px_median"] <= 2.3, scores
    assert scores["skull_rotation_deg_max"] <= 2.2, scores
    assert scores["skull_translation_mm_max"] <= 6.8, scores
