"""calib.projection against OpenCV: projection, (un)distortion, undistortion maps and images,
unprojection, rays, batching, gradients, and the OpenGL conversions."""
import cv2
import numpy as np
import pytest
import torch

from headcap.calib import conventions, projection
from headcap.calib.camera import Camera, look_at

W, H = 640, 480
COEFFS = {
    # a strong real-world barrel lens and a fisheye; both stay monotonic well past the image corners
    "opencv": np.array([-0.28, 0.09, 0.0012, -0.0007, -0.012]),
    "fisheye": np.array([0.05, -0.012, 0.003, -0.0005]),
}


def make_camera(model: str, skew: float = 0.0, width: int = W, height: int = H) -> Camera:
    s = width / W
    K = np.array([[520.0 * s, skew, 322.3 * s], [0.0, 515.0 * s, 236.9 * s], [0.0, 0.0, 1.0]])
    dist = COEFFS.get(model, np.zeros(0))
    return Camera("cam", width, height, K, model, dist, look_at([0.3, -0.2, -2.5], [0.05, 0.0, 0.1]))


def points_in_view(cam: Camera, n: int, seed: int) -> np.ndarray:
    """n world points whose ideal pinhole projection lies inside the image, at depths 1-4 m."""
    rng = np.random.default_rng(seed)
    pix = rng.uniform([0, 0], [cam.width - 1, cam.height - 1], size=(n, 2))
    depth = rng.uniform(1.0, 4.0, size=n)
    return cam.undistorted().unproject(pix, depth).numpy()


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_projection_matches_cv2_on_10000_points(model):
    cam = make_camera(model, skew=0.0 if model == "opencv" else 0.8)  # cv2.projectPoints has no skew
    pts = points_in_view(cam, 10_000, seed=1)
    pix, depth = cam.project(pts)
    rvec, _ = cv2.Rodrigues(cam.cam_from_world[:3, :3])
    tvec = cam.cam_from_world[:3, 3]
    if model == "opencv":
        ref, _ = cv2.projectPoints(pts, rvec, tvec, cam.K, cam.distortion)
    else:
        ref, _ = cv2.fisheye.projectPoints(pts[:, None], rvec, tvec, cam.K, cam.distortion,
                                           alpha=cam.K[0, 1] / cam.K[0, 0])
    err = np.abs(pix.numpy() - ref.reshape(-1, 2)).max()
    assert err < 1e-6, f"max |ours - cv2| = {err} px"
    assert torch.all(depth > 0.9)


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_undistort_inverts_distort_inside_image(model):
    cam = make_camera(model)
    K = torch.as_tensor(cam.K)
    d = torch.as_tensor(cam.distortion)
    rng = np.random.default_rng(2)
    # every border pixel plus random interior ones: the border is where the inversion is hardest
    border = np.concatenate([np.stack([np.arange(W), np.zeros(W)], 1), np.stack([np.arange(W), np.full(W, H - 1)], 1),
                             np.stack([np.zeros(H), np.arange(H)], 1), np.stack([np.full(H, W - 1), np.arange(H)], 1)])
    x = torch.as_tensor(np.concatenate([border, rng.uniform([0, 0], [W - 1, H - 1], (10_000, 2))]))
    # distorted pixel -> ideal pixel -> distorted pixel
    ideal = projection.undistort_pixels(x, K, model, d)
    back = projection.normalized_to_pixels(projection.distort_normalized(projection.pixels_to_normalized(ideal, K), model, d), K)
    err_a = (back - x).abs().max().item()
    # ideal pixel -> distorted pixel -> ideal pixel
    xd = projection.normalized_to_pixels(projection.distort_normalized(projection.pixels_to_normalized(x, K), model, d), K)
    again = projection.undistort_pixels(xd, K, model, d)
    err_b = (again - x).abs().max().item()
    assert err_a < 1e-6 and err_b < 1e-6, (err_a, err_b)


def test_undistort_matches_cv2_undistort_points():
    cam = make_camera("opencv")
    rng = np.random.default_rng(3)
    pix = rng.uniform([0, 0], [W - 1, H - 1], (2000, 2))
    ours = projection.undistort_pixels(torch.as_tensor(pix), torch.as_tensor(cam.K), "opencv",
                                       torch.as_tensor(cam.distortion)).numpy()
    ref = cv2.undistortPoints(pix[:, None], cam.K, cam.distortion, None, None, cam.K,
                                  (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)).reshape(-1, 2)
    assert np.abs(ours - ref).max() < 1e-6


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_undistort_maps_match_cv2(model):
    cam = make_camera(model, width=160, height=120)
    K_new = cam.K.copy()
    K_new[:2, :2] *= 0.9
    map_x, map_y = cam.undistort_maps(K_new)
    if model == "opencv":
        ref_x, ref_y = cv2.initUndistortRectifyMap(cam.K, cam.distortion, None, K_new, (cam.width, cam.height), cv2.CV_32FC1)
    else:
        ref_x, ref_y = cv2.fisheye.initUndistortRectifyMap(cam.K, cam.distortion, None, K_new, (cam.width, cam.height),
                                                          cv2.CV_32FC1)
    err = max(np.abs(map_x - ref_x).max(), np.abs(map_y - ref_y).max())
    assert err < 2e-3, f"map difference {err} px"


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_undistort_image_recovers_pinhole_pattern(model):
    cam = make_camera(model, width=160, height=120)

    def pattern(uv: np.ndarray) -> np.ndarray:
        # smooth, so that bilinear resampling error stays far below the threshold
        return 0.5 + 0.25 * np.sin(uv[..., 0] / 9.0) + 0.25 * np.cos(uv[..., 1] / 7.0)

    grid = projection.pixel_grid(cam.width, cam.height)
    K = torch.as_tensor(cam.K)
    ideal = projection.undistort_pixels(grid, K, model, torch.as_tensor(cam.distortion)).numpy()
    distorted_image = pattern(ideal).reshape(cam.height, cam.width).astype(np.float32)
    restored = cam.undistort_image(distorted_image)
    truth = pattern(grid.numpy()).reshape(cam.height, cam.width)
    # compare where the undistorted view samples inside the distorted image (not the black border)
    map_x, map_y = cam.undistort_maps()
    inside = (map_x >= 1) & (map_x <= cam.width - 2) & (map_y >= 1) & (map_y <= cam.height - 2)
    assert inside.mean() > 0.6
    err = np.abs(restored - truth)[inside]
    assert err.max() < 5e-3, err.max()
    # and the identity check fails loudly if the remap direction were swapped
    assert np.abs(distorted_image - truth)[inside].max() > 0.05


@pytest.mark.parametrize("model", ["none", "opencv", "fisheye"])
def test_unproject_and_rays_invert_projection(model):
    cam = make_camera(model)
    pts = points_in_view(cam, 500, seed=4)
    pix, depth = cam.project(pts)
    back = cam.unproject(pix, depth).numpy()
    assert np.abs(back - pts).max() < 1e-9
    origins, dirs = cam.rays(pix)
    to_pts = torch.as_tensor(pts) - origins
    off_ray = torch.linalg.norm(to_pts - (to_pts * dirs).sum(-1, keepdim=True) * dirs, dim=-1)
    assert off_ray.max().item() < 1e-9
    assert torch.allclose(torch.linalg.norm(dirs, dim=-1), torch.ones(len(pts), dtype=torch.float64))
    assert np.abs(origins.numpy() - cam.centre).max() < 1e-12


def test_camera_rays_cover_every_pixel_in_row_major_order():
    cam = make_camera("opencv", width=32, height=24)
    origins, dirs = cam.rays()
    assert dirs.shape == (32 * 24, 3)
    # the ray of pixel (row 5, column 7) must project back onto (7, 5)
    pix, _ = cam.project(origins[5 * 32 + 7] + 2.0 * dirs[5 * 32 + 7])
    assert torch.allclose(pix, torch.tensor([7.0, 5.0], dtype=torch.float64), atol=1e-9)


def test_batched_projection_equals_per_camera():
    cams = [make_camera("opencv"), make_camera("opencv").replace(cam_from_world=look_at([1, 0, -2], [0, 0, 0]))]
    rng = np.random.default_rng(5)
    pts = torch.as_tensor(rng.uniform(-0.3, 0.3, (2, 50, 3)))
    K = torch.stack([torch.as_tensor(c.K) for c in cams])
    cfw = torch.stack([torch.as_tensor(c.cam_from_world) for c in cams])
    dist = torch.stack([torch.as_tensor(c.distortion) for c in cams])
    pix, depth = projection.project_points(pts, K, cfw, "opencv", dist)
    for b, cam in enumerate(cams):
        ref, ref_depth = cam.project(pts[b])
        assert torch.allclose(pix[b], ref, atol=1e-10) and torch.allclose(depth[b], ref_depth, atol=1e-12)


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_projection_and_undistortion_gradients(model):
    cam = make_camera(model)
    pts = torch.as_tensor(points_in_view(cam, 6, seed=6), dtype=torch.float64).requires_grad_()
    K = torch.as_tensor(cam.K).requires_grad_()
    cfw = torch.as_tensor(cam.cam_from_world).requires_grad_()
    d = torch.as_tensor(cam.distortion).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k, c, dd: projection.project_points(p, k, c, model, dd)[0],
                                    (pts, K, cfw, d))
    xy_d = torch.tensor([[0.1, -0.2], [0.3, 0.25]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, dd: projection.undistort_normalized(x, model, dd), (xy_d, d))


def test_opengl_pose_and_projection_agree_with_opencv_pixels():
    cam = make_camera("none")
    cam = cam.replace(K=np.array([[520.0, 1.5, 322.3], [0.0, 515.0, 236.9], [0.0, 0.0, 1.0]]))
    original = cam.cam_from_world.copy()
    world_from_glcam = conventions.opencv_cam_from_world_to_opengl_world_from_cam(cam.cam_from_world)
    assert np.array_equal(cam.cam_from_world, original), "conversion changed its input"
    back = conventions.opengl_world_from_cam_to_opencv_cam_from_world(world_from_glcam)
    assert np.abs(back - original).max() < 1e-12
    pts = points_in_view(cam, 100, seed=7)
    pix, _ = cam.project(pts)
    glcam_from_world = np.linalg.inv(world_from_glcam)
    p_gl = (glcam_from_world[:3, :3] @ pts.T).T + glcam_from_world[:3, 3]
    assert np.all(p_gl[:, 2] < 0), "points in front of an OpenGL camera have negative z"
    clip = (conventions.opengl_projection(cam.K, cam.width, cam.height) @ np.c_[p_gl, np.ones(len(pts))].T).T
    ndc = clip[:, :3] / clip[:, 3:]
    win_x = (ndc[:, 0] + 1) / 2 * cam.width
    win_y = (ndc[:, 1] + 1) / 2 * cam.height  # OpenGL windows count rows from the bottom
    # OpenGL pixel centres sit at .5: the OpenCV pixel u is window x = u + 0.5
    assert np.abs(win_x - 0.5 - pix[:, 0].numpy()).max() < 1e-9
    assert np.abs(cam.height - win_y - 0.5 - pix[:, 1].numpy()).max() < 1e-9
