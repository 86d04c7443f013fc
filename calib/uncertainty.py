"""Parameter uncertainty of a bundle-adjusted rig: the covariance of the Gauss-Newton normal
equations at the solution, scaled by the residual variance, reduced to the cameras by the Schur
complement over the board poses, and turned into the numbers a studio acts on (1 sigma): focal %,
principal point px, distortion (coefficients and their effect in px at the image corner), camera
centre mm and rotation degrees.

Gauge: the reference camera's pose is held during the solve, so centres and rotations are
uncertain *relative to the reference camera* (whose own pose uncertainty is zero); they are
rotated into the output world frame. Intrinsic uncertainties do not depend on the gauge.
"""
from __future__ import annotations

import numpy as np

from headcap.calib.bundle import BundleProblem, matrix_to_rotvec, robust_weights, rotvec_to_matrix, schur_reduce

__all__ = ["camera_covariance", "camera_uncertainty", "distortion_effect", "residual_sigma"]


def residual_sigma(prob: BundleProblem, x: np.ndarray, keep: np.ndarray, free: np.ndarray, loss: str,
                   scale: float) -> float:
    """Per-axis noise sigma (px) of the kept corners: sqrt(sum w r^2 / (2 N - free parameters))."""
    r = prob.residuals(x, keep)
    w = robust_weights(np.linalg.norm(r, axis=1), loss, scale)
    dof = max(2 * len(r) - int(free.sum()), 1)
    return float(np.sqrt(np.sum(w[:, None] * r ** 2) / dof))


def camera_covariance(prob: BundleProblem, x: np.ndarray, keep: np.ndarray, free: np.ndarray, loss: str,
                      scale: float, prior=None) -> tuple[np.ndarray, float]:
    """(covariance [C * (ni + 6), C * (ni + 6)] of every camera parameter in `prob`'s layout
    (zero rows and columns for held ones), per-axis residual sigma px). prior: as in
    bundle.levenberg_marquardt (its rows already in pixel units)."""
    sigma = residual_sigma(prob, x, keep, free, loss, scale)
    A, _, _ = prob.normal_equations(x, keep, lambda r: robust_weights(np.linalg.norm(r, axis=1), loss, scale))
    if prior is not None:
        A = A + prior[0].T @ prior[0]
    A = A[np.ix_(free, free)]
    n_cam_all = prob.C * (prob.ni + 6)
    cam_free = free[:n_cam_all]
    S, _, _ = schur_reduce(A, int(cam_free.sum()))
    # Jacobi scaling, and a whisker of ridge so an unobservable direction gives a huge (honest)
    # variance instead of a failed factorisation
    d = 1.0 / np.sqrt(np.maximum(np.diag(S), 1e-300))
    Sn = S * d[:, None] * d[None, :]
    Sn[np.diag_indices_from(Sn)] += 1e-12
    cov_free = np.linalg.inv(Sn) * d[:, None] * d[None, :] * sigma ** 2
    cov = np.zeros((n_cam_all, n_cam_all))
    cov[np.ix_(cam_free, cam_free)] = cov_free
    return cov, sigma


def distortion_effect(intr: np.ndarray, model: str, size: tuple[int, int]) -> np.ndarray:
    """d(pixel)/d(distortion coefficients) [2, n_dist] at the image corner farthest from the
    principal point (its undistorted ray, at the current parameters)."""
    from headcap.calib.bundle import project_corners

    w, h = size
    fx, fy, cx, cy = intr[:4]
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    far = corners[np.argmax(np.linalg.norm(corners - [cx, cy], axis=1))]
    ray = np.array([[(far[0] - cx) / fx, (far[1] - cy) / fy, 1.0]])
    n_dist = len(intr) - 4
    out = np.zeros((2, n_dist))
    for i in range(n_dist):
        h_i = 1e-6
        p, m = intr.copy(), intr.copy()
        p[4 + i] += h_i
        m[4 + i] -= h_i
        out[:, i] = (project_corners(p[None], model, ray)[0] - project_corners(m[None], model, ray)[0]) / (2 * h_i)
    return out


def _pose_derivatives(pose_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d(centre)/d(pose) [3, 6] and d(world rotation perturbation)/d(pose) [3, 6] of a
    cam_from_world given as (rotation vector, translation)."""

    def centre(v):
        return -rotvec_to_matrix(v[None, :3])[0].T @ v[3:]

    r0 = rotvec_to_matrix(pose_vec[None, :3])[0]
    dc, dr = np.zeros((3, 6)), np.zeros((3, 6))
    for k in range(6):
        h = 1e-7
        p, m = pose_vec.copy(), pose_vec.copy()
        p[k] += h
        m[k] -= h
        dc[:, k] = (centre(p) - centre(m)) / (2 * h)
        # world_from_cam rotation R^T perturbed on the left: exp([d]x) R0^T
        rp = rotvec_to_matrix(p[None, :3])[0].T @ r0
        rm = rotvec_to_matrix(m[None, :3])[0].T @ r0
        dr[:, k] = (matrix_to_rotvec(rp) - matrix_to_rotvec(rm)) / (2 * h)
    return dc, dr


def camera_uncertainty(prob: BundleProblem, x: np.ndarray, cov: np.ndarray, sizes: dict[str, tuple[int, int]],
                       world_rotation: np.ndarray | None = None, reference: str | None = None) -> dict[str, dict]:
    """Per camera, the 1-sigma numbers of `cov` (from camera_covariance). world_rotation: the
    rotation [3, 3] from the solve's frame into the output world (centres and rotations are
    expressed there). Returns {camera: {...}} with plain floats and lists (JSON-ready)."""
    intr, cam_vecs, _ = prob.unpack(x)
    ni = prob.ni
    base = prob.C * ni
    rot = np.eye(3) if world_rotation is None else world_rotation
    out = {}
    names = ["fx", "fy", "cx", "cy"]
    for i, c in enumerate(prob.cams):
        ii = np.arange(i * ni, (i + 1) * ni)
        pi = base + np.arange(i * 6, (i + 1) * 6)
        ci = cov[np.ix_(ii, ii)]
        sd = np.sqrt(np.maximum(np.diag(ci), 0.0))
        fx, fy = intr[i, 0], intr[i, 1]
        aspect_var = ci[0, 0] + ci[1, 1] - 2 * ci[0, 1]
        dist_px = 0.0
        if ni > 4:
            de = distortion_effect(intr[i], prob.model, sizes[c])
            dist_px = float(np.sqrt(max(np.trace(de @ ci[4:, 4:] @ de.T), 0.0)))
        dc, dr = _pose_derivatives(cam_vecs[i])
        cp = cov[np.ix_(pi, pi)]
        cov_centre = rot @ dc @ cp @ dc.T @ rot.T
        cov_rot = rot @ dr @ cp @ dr.T @ rot.T
        out[c] = {
            **{f"{n}_px": float(v) for n, v in zip(names, sd[:4])},
            "focal_pct": float(100 * max(sd[0] / fx, sd[1] / fy)),
            "aspect_pct": float(100 * np.sqrt(max(aspect_var, 0.0)) / fx),
            "principal_point_px": float(np.hypot(sd[2], sd[3])),
            "distortion": [float(v) for v in sd[4:]],
            "distortion_px": dist_px,
            "centre_mm": float(1000 * np.sqrt(max(np.trace(cov_centre), 0.0))),
            "centre_axes_mm": [float(1000 * np.sqrt(max(v, 0.0))) for v in np.diag(cov_centre)],
            "rotation_deg": float(np.degrees(np.sqrt(max(np.trace(cov_rot), 0.0)))),
            "rotation_axes_deg": [float(np.degrees(np.sqrt(max(v, 0.0)))) for v in np.diag(cov_rot)],
        }
        if reference is not None:
            out[c]["relative_to"] = reference
    return out
