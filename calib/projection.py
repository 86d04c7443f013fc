"""Batched, differentiable pinhole projection with OpenCV and fisheye lens distortion.

Conventions (stated once, here): OpenCV camera axes (x right, y down, z forward), metres,
`K` in pixels with pixel centres at integer coordinates (the centre of the top-left pixel is
(0, 0), exactly as `cv2.projectPoints` and `cv2.calibrateCamera`). Distortion models:

- ``"none"``: no coefficients.
- ``"opencv"``: (k1, k2, p1, p2, k3), the 5-coefficient Brown-Conrady model of OpenCV.
- ``"fisheye"``: (k1, k2, k3, k4), the equidistant model of ``cv2.fisheye``.

All functions accept leading batch dimensions and broadcast; they never change their inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

DISTORTION_MODELS = {"none": 0, "opencv": 5, "fisheye": 4}


def check_distortion(model: str, coeffs) -> None:
    if model not in DISTORTION_MODELS:
        raise ValueError(f"distortion_model: unknown model {model!r}; expected one of {sorted(DISTORTION_MODELS)}")
    n = DISTORTION_MODELS[model]
    size = 0 if coeffs is None else int(torch.as_tensor(coeffs).shape[-1]) if torch.as_tensor(coeffs).ndim else 1
    if size != n:
        raise ValueError(f"distortion: model {model!r} takes {n} coefficients, got {size}")


def _coeffs(coeffs, like: Tensor) -> Tensor:
    return torch.as_tensor(coeffs, dtype=like.dtype, device=like.device)


def distort_normalized(xy: Tensor, model: str, coeffs=None) -> Tensor:
    """Apply lens distortion to normalized image coordinates.

    xy: [..., 2] points on the z=1 plane; coeffs: [..., n] broadcastable to xy's batch.
    Returns distorted normalized coordinates [..., 2].
    """
    if model == "none":
        return xy
    c = _coeffs(coeffs, xy)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    if model == "opencv":
        k1, k2, p1, p2, k3 = (c[..., i] for i in range(5))
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return torch.stack([xd, yd], dim=-1)
    if model == "fisheye":
        k1, k2, k3, k4 = (c[..., i] for i in range(4))
        r = torch.sqrt(r2)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        # theta_d / r -> 1 as r -> 0; avoid 0/0 (and its NaN gradient) at the optical axis
        safe_r = torch.where(r > 1e-12, r, torch.ones_like(r))
        scale = torch.where(r > 1e-12, theta_d / safe_r, torch.ones_like(r))
        return xy * scale[..., None]
    raise ValueError(f"distortion_model: unknown model {model!r}")


def undistort_normalized(xy_d: Tensor, model: str, coeffs=None, iterations: int = 20) -> Tensor:
    """Invert `distort_normalized` by Gauss-Newton on the 2x2 Jacobian.

    Converges to 1e-12 inside the image for real lenses; the result is differentiable
    through the unrolled iterations.
    """
    if model == "none":
        return xy_d
    xy = xy_d.clone()
    if model == "fisheye":
        # closed-form starting point: invert theta_d with Newton on the scalar polynomial
        c = _coeffs(coeffs, xy_d)
        rd = torch.linalg.norm(xy_d, dim=-1)
        theta = rd.clone()
        for _ in range(iterations):
            t2 = theta * theta
            poly = 1 + t2 * (c[..., 0] + t2 * (c[..., 1] + t2 * (c[..., 2] + t2 * c[..., 3])))
            f = theta * poly - rd
            df = 1 + t2 * (3 * c[..., 0] + t2 * (5 * c[..., 1] + t2 * (7 * c[..., 2] + t2 * 9 * c[..., 3])))
            theta = theta - f / df
        r = torch.tan(theta)
        safe = torch.where(rd > 1e-12, rd, torch.ones_like(rd))
        scale = torch.where(rd > 1e-12, r / safe, torch.ones_like(rd))
        return xy_d * scale[..., None]
    for _ in range(iterations):
        err = distort_normalized(xy, model, coeffs) - xy_d
        jac = _distortion_jacobian(xy, model, coeffs)
        step = torch.linalg.solve(jac, err[..., None])[..., 0]
        xy = xy - step
    return xy


def _distortion_jacobian(xy: Tensor, model: str, coeffs) -> Tensor:
    c = _coeffs(coeffs, xy)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    k1, k2, p1, p2, k3 = (c[..., i] for i in range(5))
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
    dxdx = radial + x * dradial * 2 * x + 2 * p1 * y + p2 * 6 * x
    dxdy = x * dradial * 2 * y + 2 * p1 * x + p2 * 2 * y
    dydx = y * dradial * 2 * x + p1 * 2 * x + 2 * p2 * y
    dydy = radial + y * dradial * 2 * y + p1 * 6 * y + 2 * p2 * x
    return torch.stack([torch.stack([dxdx, dxdy], -1), torch.stack([dydx, dydy], -1)], -2)


def transform_points(target_from_source: Tensor, points: Tensor) -> Tensor:
    """Apply a [..., 4, 4] rigid/affine transform to points [..., N, 3]."""
    rot = target_from_source[..., :3, :3]
    trans = target_from_source[..., :3, 3]
    return points @ rot.transpose(-1, -2) + trans[..., None, :]


def project_points(points_world: Tensor, K: Tensor, cam_from_world: Tensor,
                   distortion_model: str = "none", distortion=None) -> tuple[Tensor, Tensor]:
    """Project world points to pixels.

    points_world: [..., N, 3]; K: [..., 3, 3]; cam_from_world: [..., 4, 4]; distortion: [..., n].
    Returns (pixels [..., N, 2], depth [..., N]) where depth is z in the camera frame.
    Points behind the camera (depth <= 0) still get a (meaningless) pixel: mask with depth.
    """
    rot = cam_from_world[..., :3, :3]
    trans = cam_from_world[..., :3, 3]
    p_cam = points_world @ rot.transpose(-1, -2) + trans[..., None, :]
    depth = p_cam[..., 2]
    safe = torch.where(depth.abs() > 1e-12, depth, torch.full_like(depth, 1e-12))
    xy = p_cam[..., :2] / safe[..., None]
    if distortion is not None and distortion_model != "none":
        dist = torch.as_tensor(distortion, dtype=xy.dtype, device=xy.device)
        xy = distort_normalized(xy, distortion_model, dist[..., None, :] if dist.ndim > 1 else dist)
    pix = normalized_to_pixels(xy, K)
    return pix, depth


def normalized_to_pixels(xy: Tensor, K: Tensor) -> Tensor:
    """[..., N, 2] normalized coordinates -> pixels with K [..., 3, 3] (skew supported)."""
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    skew = K[..., 0, 1, None]
    u = fx * xy[..., 0] + skew * xy[..., 1] + cx
    v = fy * xy[..., 1] + cy
    return torch.stack([u, v], dim=-1)


def pixels_to_normalized(pix: Tensor, K: Tensor) -> Tensor:
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    skew = K[..., 0, 1, None]
    y = (pix[..., 1] - cy) / fy
    x = (pix[..., 0] - cx - skew * y) / fx
    return torch.stack([x, y], dim=-1)


def undistort_pixels(pix: Tensor, K: Tensor, distortion_model: str, distortion=None,
                     K_new: Tensor | None = None) -> Tensor:
    """Distorted pixels [..., N, 2] -> ideal pinhole pixels under `K_new` (default K)."""
    xy = pixels_to_normalized(pix, K)
    if distortion_model != "none":
        dist = torch.as_tensor(distortion, dtype=xy.dtype, device=xy.device)
        xy = undistort_normalized(xy, distortion_model, dist[..., None, :] if dist.ndim > 1 else dist)
    return normalized_to_pixels(xy, K if K_new is None else K_new)


def unproject(pix: Tensor, depth: Tensor, K: Tensor, cam_from_world: Tensor,
              distortion_model: str = "none", distortion=None) -> Tensor:
    """Pixels [..., N, 2] with camera-frame depth z [..., N] -> world points [..., N, 3]."""
    xy = pixels_to_normalized(pix, K)
    if distortion_model != "none":
        dist = torch.as_tensor(distortion, dtype=xy.dtype, device=xy.device)
        xy = undistort_normalized(xy, distortion_model, dist[..., None, :] if dist.ndim > 1 else dist)
    p_cam = torch.cat([xy * depth[..., None], depth[..., None]], dim=-1)
    rot = cam_from_world[..., :3, :3]
    trans = cam_from_world[..., :3, 3]
    return (p_cam - trans[..., None, :]) @ rot


def pixel_rays(pix: Tensor, K: Tensor, cam_from_world: Tensor, distortion_model: str = "none",
               distortion=None) -> tuple[Tensor, Tensor]:
    """World-space rays through pixels [..., N, 2]: (origins [..., N, 3], unit directions [..., N, 3])."""
    xy = pixels_to_normalized(pix, K)
    if distortion_model != "none":
        dist = torch.as_tensor(distortion, dtype=xy.dtype, device=xy.device)
        xy = undistort_normalized(xy, distortion_model, dist[..., None, :] if dist.ndim > 1 else dist)
    d_cam = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
    rot = cam_from_world[..., :3, :3]
    trans = cam_from_world[..., :3, 3]
    d_world = d_cam @ rot
    d_world = d_world / torch.linalg.norm(d_world, dim=-1, keepdim=True)
    centre = -(rot.transpose(-1, -2) @ trans[..., None])[..., 0]
    return centre[..., None, :].expand_as(d_world), d_world


def pixel_grid(width: int, height: int, dtype=torch.float64, device=None) -> Tensor:
    """All pixel centres [H*W, 2] in row-major order (x = column, y = row)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                            torch.arange(width, dtype=dtype, device=device), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
