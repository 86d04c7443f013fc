"""Parameter uncertainty of a bundle-adjusted rig: the covariance of the Gauss-Newton normal
equations at the solution, scaled by the residual variance, reduced to the cameras by the Schur
complement over the board poses, and turned into the numbers a studio acts on (1 sigma): focal %,
principal point px, distortion (coefficients and their effect in px at the image corner), camera
centre mm and rotation degrees.

Gauge: the reference camera's pose is held during the solve, so the raw covariance says how well
each camera is placed *relative to the reference camera*. The centres and rotations reported are
instead those of the rig aligned to the truth as calib.rig_compare does (rotation by the mean of
the orientation differences, then translation by the least-squares fit of the centres): the
linearised alignment is applied to the joint covariance of every camera's centre and rotation, so
no camera is special and the numbers predict `compare_rigs` errors. They are rotated into the
output world frame. Intrinsic uncertainties do not depend on the gauge.
"""
from __future__ import annotations

import numpy as np

from headcap.calib.bundle import BundleProblem, robust_weights, rotvec_to_matrix, schur_reduce

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
        # world_from_cam rotation R^T perturbed on the left: exp([d]x) R0^T, d from the skew part
        # (cv2.Rodrigues rounds rotations this small to zero)
        dm = (rotvec_to_matrix(p[None, :3])[0].T - rotvec_to_matrix(m[None, :3])[0].T) @ r0 / (2 * h)
        dr[:, k] = 0.5 * np.array([dm[2, 1] - dm[1, 2], dm[0, 2] - dm[2, 0], dm[1, 0] - dm[0, 1]])
    return dc, dr


def aligned_pose_covariance(prob: BundleProblem, x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Joint covariance [6C, 6C] of (centres [3C] then world rotation perturbations [3C]) of the
    rig after the linearised rig_compare alignment (in the solve's frame): with d the reference
    gauge errors, rotations become dr_i - mean(dr) and centres dc_i - mean(dc) + [c_i - c_mean]x mean(dr)."""
    _, cam_vecs, _ = prob.unpack(x)
    C, base = prob.C, prob.C * prob.ni
    D = np.zeros((6 * C, 6 * C))  # (centres, rotations) from the pose parameters
    centres = np.zeros((C, 3))
    for i in range(C):
        dc, dr = _pose_derivatives(cam_vecs[i])
        D[3 * i:3 * i + 3, 6 * i:6 * i + 6] = dc
        D[3 * C + 3 * i:3 * C + 3 * i + 3, 6 * i:6 * i + 6] = dr
        centres[i] = -rotvec_to_matrix(cam_vecs[i][None, :3])[0].T @ cam_vecs[i, 3:]
    P = np.eye(6 * C)
    mean = np.kron(np.ones((C, C)) / C, np.eye(3))
    P[:3 * C, :3 * C] -= mean
    P[3 * C:, 3 * C:] -= mean
    from headcap.calib.bundle import skew

    lever = skew(centres - centres.mean(axis=0))  # [C, 3, 3]
    P[:3 * C, 3 * C:] += np.concatenate([np.concatenate([lever[i] / C] * C, axis=1) for i in range(C)], axis=0)
    poses = cov[base:, base:]
    T = P @ D
    return T @ poses @ T.T


def camera_uncertainty(prob: BundleProblem, x: np.ndarray, cov: np.ndarray, sizes: dict[str, tuple[int, int]],
                       world_rotation: np.ndarray | None = None) -> dict[str, dict]:
    """Per camera, the 1-sigma numbers of `cov` (from camera_covariance). world_rotation: the
    rotation [3, 3] from the solve's frame into the output world (centres and rotations are
    expressed there). Returns {camera: {...}} with plain floats and lists (JSON-ready)."""
    intr, cam_vecs, _ = prob.unpack(x)
    ni = prob.ni
    rot = np.eye(3) if world_rotation is None else world_rotation
    aligned = aligned_pose_covariance(prob, x, cov)
    C = prob.C
    out = {}
    names = ["fx", "fy", "cx", "cy"]
    for i, c in enumerate(prob.cams):
        ii = np.arange(i * ni, (i + 1) * ni)
        ci = cov[np.ix_(ii, ii)]
        sd = np.sqrt(np.maximum(np.diag(ci), 0.0))
        fx, fy = intr[i, 0], intr[i, 1]
        aspect_var = ci[0, 0] + ci[1, 1] - 2 * ci[0, 1]
        dist_px = 0.0
        if ni > 4:
            de = distortion_effect(intr[i], prob.model, sizes[c])
            dist_px = float(np.sqrt(max(np.trace(de @ ci[4:, 4:] @ de.T), 0.0)))
        cov_centre = rot @ aligned[3 * i:3 * i + 3, 3 * i:3 * i + 3] @ rot.T
        j = 3 * C + 3 * i
        cov_rot = rot @ aligned[j:j + 3, j:j + 3] @ rot.T
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
        out[c]["relative_to"] = "rig"  # aligned as calib.rig_compare aligns
    return out
