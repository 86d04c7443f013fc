"""Face landmarks on real images (MediaPipe's detector + 468-point mesh via ai-edge-litert) and
their robust multi-view triangulation (issue #11, first step)."""
import cv2
import numpy as np
import pytest

from headcap.cli import main
from headcap.reconstruct.landmarks import (IBUG68_FROM_MEDIAPIPE, NOSE_TIP, FaceLandmarker, detect_image,
                                           find_models, triangulate)


@pytest.fixture(scope="module")
def models(test_data):
    return find_models(test_data / "mediapipe_face" / "models")


@pytest.fixture(scope="module")
def landmarker(models):
    return FaceLandmarker(models)


# Hand-placed on astronaut_eileen_collins.png (512 x 512 px, headcap pixel convention: integer
# coordinates are pixel centres), by looking at a 5x crop of x 176..276, y 70..170:
# pupils, the tip of the nose, the middle of the mouth (between the lips, over the teeth).
REFERENCE = {
    "right_eye": (203.0, 101.0),   # subject's right = image left
    "left_eye": (247.0, 102.6),
    "nose_tip": (224.0, 127.0),
    "mouth": (221.0, 144.0),
}
MEDIAPIPE = {
    "right_eye": IBUG68_FROM_MEDIAPIPE[36:42],
    "left_eye": IBUG68_FROM_MEDIAPIPE[42:48],
    "nose_tip": [NOSE_TIP],
    "mouth": [13, 14],  # inner lip, upper and lower midpoints
}


def test_landmarks_on_real_photo(test_data, landmarker):
    path = test_data / "face_images" / "astronaut_eileen_collins.png"
    image = cv2.imread(str(path))
    assert image.shape[:2] == (512, 512)
    r = detect_image(landmarker, path)
    assert r.found and r.confidence > 0.9, r.message
    assert r.points.shape == (468, 2) and r.ibug68.shape == (68, 2)
    iod = np.linalg.norm(np.subtract(REFERENCE["left_eye"], REFERENCE["right_eye"]))
    for name, ref in REFERENCE.items():
        got = r.points[MEDIAPIPE[name]].mean(0)
        err = np.linalg.norm(got - ref)
        assert err < 0.05 * iod, f"{name}: {got} vs hand-placed {ref} ({err:.2f} px, iod {iod:.1f} px)"
    # the box holds the face (SOURCE.md: bbox ~x 179..271, y 71..177)
    x0, y0, x1, y1 = r.box
    assert 165 < x0 < 190 and 260 < x1 < 285 and 60 < y0 < 85 and 165 < y1 < 190


def test_no_face_is_reported(test_data, landmarker):
    path = test_data / "opencv_charuco" / "img_00.jpg"
    r = detect_image(landmarker, path)
    assert not r.found and "no face found" in r.message and "img_00.jpg" in r.message
    assert np.isnan(r.points).all()


def test_missing_models_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="face_detection_short_range.tflite.*never downloads"):
        FaceLandmarker(tmp_path)


def test_triangulation_recovers_points_with_an_outlier_camera():
    from headcap.studio.rig_layout import RigLayoutConfig, studio_rig

    rng = np.random.default_rng(3)
    rig = studio_rig(RigLayoutConfig(num_cameras=6, width=512, height=512), rng)
    cams = rig.ids
    X = rng.normal(0, 0.05, (2, 468, 3))  # 2 frames of a head-sized cloud at the rig's centre
    pts = np.stack([np.stack([rig[c].project(X[t])[0].numpy() for c in cams]) for t in range(2)])
    pts += rng.normal(0, 0.2, pts.shape)  # 0.2 px detection noise
    pts[:, 2] += rng.uniform(20, 40, pts[:, 2].shape) * rng.choice([-1, 1], pts[:, 2].shape)  # outlier camera
    found = np.ones((2, len(cams)), bool)
    pts[1, 4] = np.nan
    found[1, 4] = False  # a view without a face
    r = triangulate(pts, found, rig, cams, inlier_px=3.0)
    err = np.linalg.norm(r.points - X, axis=-1)
    assert err.max() < 1e-3, err.max()
    assert (r.inliers[0] == 5).all() and (r.inliers[1] == 4).all()
    assert np.nanmax(r.rms_px) < 1.0


def test_headcap_landmarks_on_synthetic_session(tmp_path, models, capsys):
    from headcap.capture.session import read_session

    out = tmp_path / "session"
    assert main(["synth", "--out", str(out), "--cameras", "4", "--frames", "1", "--resolution", "256",
                 "--calib-frames", "4"]) == 0
    assert main(["landmarks", str(out), "--models", str(models)]) == 0
    d2 = np.load(out / "landmarks" / "landmarks2d.npz")
    d3 = np.load(out / "landmarks" / "landmarks3d.npz")
    assert d2["points"].shape == (1, 4, 468, 2) and d2["points"].dtype == np.float32
    assert d2["found"].sum() >= 3
    assert list(d2["cameras"]) == read_session(out).cameras
    gt = np.load(out / "ground_truth" / "landmarks.npz")["landmarks"][0]  # iBUG-68, world metres
    nose = d3["points"][0, NOSE_TIP]
    # measured 14 mm: MediaPipe places the tip of the procedural head's nose ~1 cm from the
    # head model's own iBUG-30 vertex (consistently in every view; reprojection RMS ~1 px)
    assert np.linalg.norm(nose - gt[30]) < 0.02
    err = np.linalg.norm(d3["points"][0, IBUG68_FROM_MEDIAPIPE] - gt, axis=1)
    assert np.median(err) < 0.01, np.median(err)
    assert np.nanmedian(d3["rms_px"]) < 2.0
    # a rerun is served from the stage folder
    assert main(["landmarks", str(out), "--models", str(models)]) == 0
    assert "up to date" in capsys.readouterr().err
    # a view without a face (its image blanked) is named in summary.json; the rest still triangulate
    session = read_session(out)
    cam = session.cameras[-1]
    path = session.image_path(0, cam)
    cv2.imwrite(str(path), np.full((256, 256, 3), 128, np.uint8))
    assert main(["landmarks", str(out), "--models", str(models)]) == 0  # the changed image reruns the stage
    d2 = np.load(out / "landmarks" / "landmarks2d.npz")
    assert not d2["found"][0, -1] and np.isnan(d2["points"][0, -1]).all()
    import json

    no_face = json.loads((out / "landmarks" / "summary.json").read_text())["no_face"]
    assert len(no_face) == 1 and f"frame 0 camera {cam}" in no_face[0] and path.name in no_face[0]
    d3 = np.load(out / "landmarks" / "landmarks3d.npz")
    assert np.isfinite(d3["points"][0, NOSE_TIP]).all() and d3["inliers"][0, NOSE_TIP] <= 3
