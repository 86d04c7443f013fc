"""Bundle adjustment of a rig: parameter layout, board-corner projection and a robust sparse
Levenberg-Marquardt.

Each residual touches one camera and one board pose, so the sparse Jacobian comes from grouped
central differences (~42 residual evaluations per iteration whatever the rig size) and the small
normal matrix is solved by Cholesky. (scipy's least_squares with a sparsity pattern was tried
first: its inexact LSMR trust-region steps stalled at 100 evaluations.) The robust loss is
applied by iteratively reweighted least squares (IRLS).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcap.calib.projection import DISTORTION_MODELS


@dataclass
class Observation:
    """One camera's view of one board pose: corners [N, 2], board points [N, 3], and after the
    solve residuals [N, 2] (pixels, projected - detected) and inlier mask [N]."""

    camera: str
    frame: str
    ids: np.ndarray
    pixels: np.ndarray
    object_points: np.ndarray
    residuals: np.ndarray | None = None
    inlier: np.ndarray | None = None

    @property
    def rms(self) -> float:
        r = self.residuals[self.inlier]
        return float(np.sqrt(np.mean(np.sum(r ** 2, axis=1)))) if len(r) else float("nan")


# --- rotations ---------------------------------------------------------------------------
def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """Rodrigues, vectorised: [M, 3] -> [M, 3, 3]."""
    theta = np.linalg.norm(rv, axis=-1)[..., None, None]
    small = theta < 1e-12
    k = rv / np.where(small[..., 0, 0], 1.0, theta[..., 0, 0])[..., None]
    kx = np.zeros(rv.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx = kx - np.swapaxes(kx, -1, -2)
    eye = np.broadcast_to(np.eye(3), kx.shape)
    rot = eye + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)
    # first order near zero so finite differences stay smooth
    rx = np.zeros_like(kx)
    rx[..., 0, 1], rx[..., 0, 2], rx[..., 1, 2] = -rv[..., 2], rv[..., 1], -rv[..., 0]
    rx = rx - np.swapaxes(rx, -1, -2)
    return np.where(small, eye + rx, rot)


def matrix_to_rotvec(rot: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Rodrigues(np.asarray(rot, np.float64))[0].ravel()


def pose_to_vec(m: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix_to_rotvec(m[:3, :3]), m[:3, 3]])


def vec_to_pose(v: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotvec_to_matrix(v[None, :3])[0]
    m[:3, 3] = v[3:]
    return m


# --- projection (numpy, vectorised over corners) -----------------------------------------
def project_corners(intr: np.ndarray, model: str, points_cam: np.ndarray) -> np.ndarray:
    """Pixels [N, 2] of camera-frame points [N, 3]; intr [N, 4 + n_dist] holds each point's
    camera as fx, fy, cx, cy, then the distortion coefficients of `model`."""
    z = np.maximum(points_cam[:, 2], 1e-9)
    x, y = points_cam[:, 0] / z, points_cam[:, 1] / z
    d = intr[:, 4:]
    if model == "opencv":
        k1, k2, p1, p2, k3 = d.T
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    elif model == "fisheye":
        k1, k2, k3, k4 = d.T
        r = np.sqrt(x * x + y * y)
        th = np.arctan(r)
        t2 = th * th
        thd = th * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        scale = np.where(r > 1e-12, thd / np.maximum(r, 1e-12), 1.0)
        x, y = x * scale, y * scale
    return np.stack([intr[:, 0] * x + intr[:, 2], intr[:, 1] * y + intr[:, 3]], axis=1)


class BundleProblem:
    """Parameter layout: [C x (4 + n_dist) intrinsics | C x 6 cam_from_world | F x 6 world_from_board]."""

    def __init__(self, cams: list[str], frames: list[str], obs: list[Observation], model: str):
        self.cams, self.frames, self.model = cams, frames, model
        self.ni = 4 + DISTORTION_MODELS[model]
        self.C, self.F = len(cams), len(frames)
        ci = {c: i for i, c in enumerate(cams)}
        fi = {f: i for i, f in enumerate(frames)}
        self.cidx = np.concatenate([np.full(len(o.ids), ci[o.camera]) for o in obs])
        self.fidx = np.concatenate([np.full(len(o.ids), fi[o.frame]) for o in obs])
        self.obj = np.concatenate([o.object_points for o in obs])
        if np.abs(self.obj[:, 2]).max() > 0:
            raise ValueError("calibrate: board object points must lie on z = 0")
        self.view_cam = np.array([ci[o.camera] for o in obs])
        self.view_frame = np.array([fi[o.frame] for o in obs])
        self.vidx = np.concatenate([np.full(len(o.ids), k) for k, o in enumerate(obs)])
        self.pix = np.concatenate([o.pixels for o in obs])
        self.n_params = self.C * self.ni + self.C * 6 + self.F * 6

    def unpack(self, x):
        a = self.C * self.ni
        b = a + self.C * 6
        return x[:a].reshape(self.C, self.ni), x[a:b].reshape(self.C, 6), x[b:].reshape(self.F, 6)

    def pack(self, intr, cams, boards):
        return np.concatenate([intr.ravel(), cams.ravel(), boards.ravel()])

    def residuals(self, x, keep=None):
        """Projected minus detected pixels [kept corners, 2]. Board points have z = 0, so each
        corner needs only the first two columns of its view's cam_from_board."""
        intr, cams, boards = self.unpack(x)
        rb = rotvec_to_matrix(boards[:, :3])
        rc = rotvec_to_matrix(cams[:, :3])
        rot = rc[self.view_cam] @ rb[self.view_frame]  # [V, 3, 3] cam_from_board per view
        trans = (rc[self.view_cam] @ boards[self.view_frame, 3:, None])[..., 0] + cams[self.view_cam, 3:]
        sel = slice(None) if keep is None else keep
        v = self.vidx[sel]
        X, Y = self.obj[sel, 0], self.obj[sel, 1]
        pc = np.stack([rot[v, i, 0] * X + rot[v, i, 1] * Y + trans[v, i] for i in range(3)], axis=1)
        return project_corners(intr[self.cidx[sel]], self.model, pc) - self.pix[sel]

    def jacobian(self, x, keep, free, step=1e-6):
        """Sparse Jacobian [2 * kept corners, free params] of `residuals` by central differences.

        Each corner depends on one camera and one board pose, so parameter k of EVERY camera
        (or board) can be perturbed at once: 2 * (n_intrinsics + 6 + 6) residual evaluations
        whatever the number of cameras and frames."""
        from scipy.sparse import csr_matrix

        idx = np.nonzero(keep)[0]
        n = len(idx)
        c, f = self.cidx[idx], self.fidx[idx]
        base_c = self.C * self.ni
        base_f = base_c + self.C * 6
        groups = ([(np.arange(self.C) * self.ni + k, c * self.ni + k) for k in range(self.ni)]
                  + [(base_c + np.arange(self.C) * 6 + k, base_c + c * 6 + k) for k in range(6)]
                  + [(base_f + np.arange(self.F) * 6 + k, base_f + f * 6 + k) for k in range(6)])
        full_to_free = -np.ones(self.n_params, np.int64)
        full_to_free[free] = np.arange(free.sum())
        rows, cols, vals = [], [], []
        for params, per_point in groups:
            params = params[free[params]]
            if len(params) == 0:
                continue
            h = step * np.maximum(1.0, np.abs(x[params]))
            xp, xm = x.copy(), x.copy()
            xp[params] += h
            xm[params] -= h
            hp = np.zeros(self.n_params)
            hp[params] = h
            denom = np.where(hp[per_point] > 0, 2 * hp[per_point], 1.0)
            d = (self.residuals(xp, keep) - self.residuals(xm, keep)) / denom[:, None]
            col = full_to_free[per_point]
            ok = col >= 0
            r = np.nonzero(ok)[0]
            rows += [2 * r, 2 * r + 1]
            cols += [col[ok], col[ok]]
            vals += [d[ok, 0], d[ok, 1]]
        return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(2 * n, int(free.sum())))


def robust_weights(norms: np.ndarray, loss: str, scale: float) -> np.ndarray:
    """IRLS weights of a per-corner robust loss on the residual norm."""
    z = norms / scale
    if loss == "linear":
        return np.ones_like(z)
    if loss == "huber":
        return np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12))
    if loss == "soft_l1":
        return 1.0 / np.sqrt(1 + z * z)
    return 1.0 / (1 + z * z)  # cauchy


def robust_cost(norms: np.ndarray, loss: str, scale: float) -> float:
    z2 = (norms / scale) ** 2
    if loss == "linear":
        rho = z2
    elif loss == "huber":
        rho = np.where(z2 <= 1, z2, 2 * np.sqrt(z2) - 1)
    elif loss == "soft_l1":
        rho = 2 * (np.sqrt(1 + z2) - 1)
    else:
        rho = np.log1p(z2)
    return float(scale ** 2 * rho.sum())


def levenberg_marquardt(prob: BundleProblem, x: np.ndarray, free: np.ndarray, keep: np.ndarray, loss: str,
                        scale: float, max_iterations: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, dict]:
    """Robust (IRLS) Levenberg-Marquardt on the kept corners. The normal matrix is at most a few
    thousand parameters square, so it is formed densely and solved by Cholesky."""
    import torch

    def cost_of(xx):
        return robust_cost(np.linalg.norm(prob.residuals(xx, keep), axis=1), loss, scale)

    cost = cost_of(x)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):
        r = prob.residuals(x, keep)
        w = robust_weights(np.linalg.norm(r, axis=1), loss, scale)
        J = prob.jacobian(x, keep, free)
        wr = (np.repeat(w, 2) * r.ravel())
        JtW = J.T.multiply(np.repeat(w, 2)[None, :]).tocsr()
        A = (JtW @ J).toarray()
        g = J.T @ wr
        diag = np.maximum(np.diag(A), 1e-12)
        improved = False
        for _ in range(12):
            # torch's Cholesky: multi-threaded OpenBLAS stalls on small matrices on a busy machine
            L, info = torch.linalg.cholesky_ex(torch.as_tensor(A + lam * np.diag(diag)))
            if int(info) != 0:
                lam *= 10
                continue
            dx = -torch.cholesky_solve(torch.as_tensor(g)[:, None], L)[:, 0].numpy()
            x_new = x.copy()
            x_new[free] += dx
            new_cost = cost_of(x_new)
            if new_cost < cost:
                rel = (cost - new_cost) / max(cost, 1e-300)
                if np.abs(dx).max() < 1e-12 * (1 + np.abs(x[free]).max()) or new_cost < 1e-24:
                    rel = 0.0
                x, cost = x_new, new_cost
                lam = max(lam / 5, 1e-12)
                improved = True
                break
            lam *= 8
        if not improved or rel < tol:
            break
    return x, {"iterations": it, "cost": cost}
