import cv2
import numpy as np
import pytest
import torch

from headcap.calib import projection
from headcap.calib.boards import BoardSpec, ray_directions, render_board_view
from headcap.calib.camera import Camera, look_at

CHARUCO = "charuco:7x5:0.04:0.03:DICT_5X5_100"


def _camera(model="opencv", dist=(-0.25, 0.08, 0.001, -0.0005, -0.01), centre=(0.1, -0.05, -0.6),
            target=(0.14, 0.1, 0.0), w=320, h=240, f=260.0):
    K = np.array([[f, 0, w / 2 - 0.7], [0, f * 1.002, h / 2 + 0.4], [0, 0, 1.0]])
    return Camera("cam", w, h, K, model, np.asarray(dist, float), look_at(centre, target))


def test_parse_roundtrip_and_units():
    spec = BoardSpec.parse(CHARUCO)
    assert (spec.kind, spec.cols, spec.rows, spec.square, spec.marker, spec.dictionary) == \
        ("charuco", 7, 5, 0.04, 0.03, "DICT_5X5_100")
    assert BoardSpec.parse(str(spec)) == spec
    assert BoardSpec.parse("charuco:5x7:40mm:2cm:6x6_250") == BoardSpec("charuco", 5, 7, 0.04, 0.02, "DICT_6X6_250")
    chess = BoardSpec.parse("chessboard:9x7:25mm")
    assert chess.kind == "chessboard" and chess.n_corners == 48 and abs(chess.square - 0.025) < 1e-15


@pytest.mark.parametrize("text, words", [
    ("charuco:5x7:0.04:0.05:DICT_6X6_250", "marker"),
    ("charuco:5x7:0.04:0.02:DICT_9X9_50", "dictionary"),
    ("charuco:5x7:0.04", "5 ':'-separated"),
    ("circles:5x7:0.04", "unknown kind"),
    ("charuco:5by7:0.04:0.02:DICT_6X6_250", "COLSxROWS"),
    ("charuco:30x30:0.04:0.02:DICT_4X4_50", "holds only 50"),
    ("chessboard:9x7:25", "did you mean mm"),
    ("chessboard:1x7:0.02", "cols"),
    ("charuco:5x7:abc:0.02:DICT_6X6_250", "SQUARE"),
])
def test_parse_errors_name_the_field(text, words):
    with pytest.raises(ValueError, match=words):
        BoardSpec.parse(text)


def test_object_points_match_opencv():
    spec = BoardSpec.parse(CHARUCO)
    ref = np.asarray(spec.cv_board().getChessboardCorners(), np.float64)
    np.testing.assert_allclose(spec.object_points(), ref, atol=1e-7)
    np.testing.assert_allclose(spec.object_points([5, 0]), ref[[5, 0]], atol=1e-7)
    with pytest.raises(ValueError, match="corner ids"):
        spec.object_points([24])


def test_board_image():
    spec = BoardSpec.parse(CHARUCO)
    img = spec.board_image(40)
    assert img.shape == (200, 280) and img.dtype == np.uint8
    assert img[:40, :40].max() == 0 and img[:4, 40:80].min() == 255  # black first square, white around markers
    chess = BoardSpec.parse("chessboard:4x3:0.03").board_image(10)
    expected = np.kron((np.add.outer(np.arange(3), np.arange(4)) % 2) * 255, np.ones((10, 10)))
    np.testing.assert_array_equal(chess, expected)


@pytest.mark.parametrize("model, dist", [("opencv", (-0.3, 0.1, 0.002, -0.001, -0.02)),
                                         ("fisheye", (0.05, -0.01, 0.002, -0.0004)), ("none", ())])
def test_ray_directions_invert_the_lens(model, dist):
    cam = _camera(model, dist, w=96, h=64)
    s = 3
    dirs = ray_directions(cam, s)
    assert dirs.shape == (64 * s, 96 * s, 2)
    back = projection.distort_normalized(torch.as_tensor(dirs), model, torch.as_tensor(cam.distortion))
    pix = projection.normalized_to_pixels(back.reshape(-1, 2), torch.as_tensor(cam.K)).numpy().reshape(dirs.shape)
    xs, ys = np.meshgrid((np.arange(96 * s) + 0.5) / s - 0.5, (np.arange(64 * s) + 0.5) / s - 0.5)
    assert np.abs(pix[..., 0] - xs).max() < 1e-9 and np.abs(pix[..., 1] - ys).max() < 1e-9


def test_render_area_is_exact_for_a_frontal_board():
    """Ink coverage of an axis-aligned chessboard seen head-on equals its analytic area."""
    spec = BoardSpec.parse("chessboard:4x3:0.05")
    f, z = 210.0, 1.0  # one square = 10.5 px, so edges fall mid-pixel
    cam = Camera("c", 80, 60, np.array([[f, 0, 20.25], [0, f, 13.75], [0, 0, 1]]))
    img, vis = render_board_view(cam, spec, np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, z], [0, 0, 0, 1.0]]),
                                 supersample=4, background=255, margin=0.0, black=0, white=255)
    ink = (255 - img.astype(np.float64)).sum() / 255
    expected = 6 * (spec.square * f / z) ** 2  # 6 black squares
    assert abs(ink - expected) / expected < 0.01
    assert len(vis) == spec.n_corners
    pix, _ = cam.project(spec.object_points() + [0.0, 0.0, z])
    np.testing.assert_allclose(np.stack([vis[i] for i in range(spec.n_corners)]), pix.numpy(), atol=1e-9)
    # the pixel whose centre is inside square (0, 0) and far from its edges is fully black
    assert img[int(13.75 + 5), int(20.25 + 5)] == 0


def test_render_composites_and_detects():
    spec = BoardSpec.parse(CHARUCO)
    cam = _camera(centre=(0.1, -0.05, -0.45), w=480, h=360, f=390.0)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), (0, 0), 3)
    img, vis = render_board_view(cam, spec, np.eye(4), image=background)
    assert img.shape == (360, 480, 3)
    # far from the board the background survives untouched
    np.testing.assert_array_equal(img[:5, :5], background[:5, :5])
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(spec.cv_board()).detectBoard(gray)
    assert ids is not None and len(ids) >= 0.9 * len(vis)
    err = np.array([np.linalg.norm(c - vis[int(i)]) for c, i in zip(corners.reshape(-1, 2), ids.ravel())])
    assert np.median(err) < 0.12 and err.max() < 0.35


def test_render_back_side_and_behind():
    spec = BoardSpec.parse(CHARUCO)
    back = _camera(centre=(0.14, 0.1, 0.6), target=(0.14, 0.1, 0.0))
    img, vis = render_board_view(back, spec, np.eye(4), background=0)
    assert vis == {} and img.max() > 200  # the blank back of the board fills the view
    away = _camera(centre=(0.14, 0.1, -0.6), target=(0.14, 0.1, -1.0))
    img, vis = render_board_view(away, spec, np.eye(4), background=7)
    assert vis == {} and (img == 7).all()


def test_render_validates_inputs():
    spec = BoardSpec.parse(CHARUCO)
    cam = _camera()
    with pytest.raises(ValueError, match="world_from_board"):
        render_board_view(cam, spec, np.eye(3))
    with pytest.raises(ValueError, match="image must be uint8"):
        render_board_view(cam, spec, np.eye(4), image=np.zeros((10, 10), np.uint8))
    with pytest.raises(TypeError, match="BoardSpec"):
        render_board_view(cam, CHARUCO, np.eye(4))
