"""Bundle adjustment of a rig: parameter layout, board-corner projection and a robust sparse
Levenberg-Marquardt.

Each residual touches one camera and one board pose, so the Jacobian is a dense block per corner
(analytic for the 'opencv' and 'none' lens models, grouped central differences for 'fisheye'),
the normal matrix is accumulated per view and solved by Cholesky. (scipy's least_squares with a sparsity pattern was tried
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

    def param_index(self) -> np.ndarray:
        """[corners, ni + 12] global parameter index of each column of a corner's Jacobian block
        (its camera's intrinsics, its camera's cam_from_world, its board's world_from_board)."""
        base_c = self.C * self.ni
        base_f = base_c + self.C * 6
        return np.concatenate([self.cidx[:, None] * self.ni + np.arange(self.ni),
                               base_c + self.cidx[:, None] * 6 + np.arange(6),
                               base_f + self.fidx[:, None] * 6 + np.arange(6)], axis=1)

    def jacobian_blocks(self, x, keep) -> tuple[np.ndarray, np.ndarray]:
        """(residuals [kept, 2], Jacobian blocks [kept, 2, ni + 12]): each corner depends on one
        camera and one board only, so its row of the Jacobian is a dense block over those
        parameters (columns as in `param_index`). Analytic for 'opencv' and 'none'; grouped central
        differences for 'fisheye'."""
        if self.model == "fisheye":
            return self.residuals(x, keep), self._numeric_blocks(x, keep)
        return self._analytic_blocks(x, keep)

    def _analytic_blocks(self, x, keep):
        intr, cams, boards = self.unpack(x)
        idx = np.nonzero(keep)[0]
        c, f = self.cidx[idx], self.fidx[idx]
        rc, rb = rotvec_to_matrix(cams[:, :3]), rotvec_to_matrix(boards[:, :3])
        jl_c, jl_b = left_jacobian(cams[:, :3]), left_jacobian(boards[:, :3])
        obj = self.obj[idx]
        pw_b = _bmv(rb[:, :, :2][f], obj[:, :2])  # board point rotated, [n, 3]
        pw = pw_b + boards[f, 3:]  # world point
        q = _bmv(rc[c], pw)  # rotated into the camera, before translation
        pc = q + cams[c, 3:]
        z = np.maximum(pc[:, 2], 1e-9)
        xn, yn = pc[:, 0] / z, pc[:, 1] / z
        k = intr[c]
        fx, fy = k[:, 0], k[:, 1]
        n = len(idx)
        J = np.zeros((n, 2, self.ni + 12))
        if self.model == "opencv":
            k1, k2, p1, p2, k3 = k[:, 4:].T
            r2 = xn * xn + yn * yn
            radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            dradial = k1 + r2 * (2 * k2 + 3 * k3 * r2)
            xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
            yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
            dxd_dx = radial + 2 * xn * xn * dradial + 2 * p1 * yn + 6 * p2 * xn
            dxd_dy = 2 * xn * yn * dradial + 2 * p1 * xn + 2 * p2 * yn
            dyd_dx = 2 * xn * yn * dradial + 2 * p1 * xn + 2 * p2 * yn
            dyd_dy = radial + 2 * yn * yn * dradial + 6 * p1 * yn + 2 * p2 * xn
            r4 = r2 * r2
            J[:, 0, 4], J[:, 1, 4] = fx * xn * r2, fy * yn * r2
            J[:, 0, 5], J[:, 1, 5] = fx * xn * r4, fy * yn * r4
            J[:, 0, 6], J[:, 1, 6] = fx * 2 * xn * yn, fy * (r2 + 2 * yn * yn)
            J[:, 0, 7], J[:, 1, 7] = fx * (r2 + 2 * xn * xn), fy * 2 * xn * yn
            J[:, 0, 8], J[:, 1, 8] = fx * xn * r4 * r2, fy * yn * r4 * r2
        else:
            xd, yd = xn, yn
            dxd_dx = dyd_dy = np.ones(n)
            dxd_dy = dyd_dx = np.zeros(n)
        J[:, 0, 0], J[:, 0, 2] = xd, 1.0
        J[:, 1, 1], J[:, 1, 3] = yd, 1.0
        # d pixel / d camera-frame point: [n, 2, 3]
        inv_z = 1.0 / z
        dn = np.zeros((n, 2, 3))
        dn[:, 0, 0], dn[:, 0, 2] = inv_z, -xn * inv_z
        dn[:, 1, 1], dn[:, 1, 2] = inv_z, -yn * inv_z
        dd = np.stack([np.stack([dxd_dx, dxd_dy], -1), np.stack([dyd_dx, dyd_dy], -1)], 1)
        dp = np.stack([fx, fy], -1)[:, :, None] * _bmm(dd, dn)
        ni = self.ni
        # rotations perturbed through their rotation vectors: d(R(v) p)/dv = -[R p]x J_l(v)
        J[:, :, ni:ni + 3] = -_bmm(np.cross(dp, q[:, None, :]), jl_c[c])
        J[:, :, ni + 3:ni + 6] = dp
        dp_w = _bmm(dp, rc[c])
        J[:, :, ni + 6:ni + 9] = -_bmm(np.cross(dp_w, pw_b[:, None, :]), jl_b[f])
        J[:, :, ni + 9:ni + 12] = dp_w
        res = np.stack([fx * xd + k[:, 2], fy * yd + k[:, 3]], axis=1) - self.pix[idx]
        return res, J

    def _numeric_blocks(self, x, keep, step=1e-6):
        """Grouped central differences: parameter k of EVERY camera (or board) is perturbed at
        once, since each corner depends on one camera and one board."""
        idx = np.nonzero(keep)[0]
        pidx = self.param_index()[idx]
        J = np.zeros((len(idx), 2, self.ni + 12))
        base_c = self.C * self.ni
        base_f = base_c + self.C * 6
        groups = ([np.arange(self.C) * self.ni + k for k in range(self.ni)]
                  + [base_c + np.arange(self.C) * 6 + k for k in range(6)]
                  + [base_f + np.arange(self.F) * 6 + k for k in range(6)])
        for col, params in enumerate(groups):
            h = step * np.maximum(1.0, np.abs(x[params]))
            xp, xm = x.copy(), x.copy()
            xp[params] += h
            xm[params] -= h
            hp = np.zeros(self.n_params)
            hp[params] = h
            J[:, :, col] = (self.residuals(xp, keep) - self.residuals(xm, keep)) / (2 * hp[pidx[:, col]])[:, None]
        return J

    def normal_equations(self, x, keep, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A = J^T W J [n_params, n_params], g = J^T W r [n_params], residuals [kept, 2]) over the
        kept corners, accumulated per view (a view's corners share their parameters, and are
        contiguous) from the per-corner blocks. weights: None (all 1) or callable(residuals [kept, 2])
        -> per-corner weights [kept]."""
        r, J = self.jacobian_blocks(x, keep)
        w = np.ones(len(r)) if weights is None else weights(r)
        views = self.vidx[keep]
        bounds = np.concatenate([[0], np.nonzero(np.diff(views))[0] + 1, [len(views)]])
        pidx = self.param_index()[keep][bounds[:-1]]  # [views, ni + 12]
        m = J.shape[2]
        per_view = np.empty((len(pidx), m, m))
        grad = np.empty((len(pidx), m))
        for v, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            Jv = J[s:e].reshape(-1, m)
            JtW = Jv.T * np.repeat(w[s:e], 2)
            per_view[v] = JtW @ Jv
            grad[v] = JtW @ r[s:e].ravel()
        A = np.zeros((self.n_params, self.n_params))
        np.add.at(A, (pidx[:, :, None], pidx[:, None, :]), per_view)
        g = np.zeros(self.n_params)
        np.add.at(g, pidx, grad)
        return A, g, r


def _bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked small matrix products [n, i, j] @ [n, j, k] (numpy's matmul loops over n)."""
    out = a[:, :, 0, None] * b[:, None, 0, :]
    for j in range(1, a.shape[2]):
        out += a[:, :, j, None] * b[:, None, j, :]
    return out


def _bmv(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = a[:, :, 0] * v[:, 0, None]
    for j in range(1, a.shape[2]):
        out += a[:, :, j] * v[:, j, None]
    return out


def skew(v: np.ndarray) -> np.ndarray:
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    return out - np.swapaxes(out, -1, -2)


def left_jacobian(rv: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobian [M, 3, 3] of rotation vectors [M, 3]: R(v + dv) = exp([J_l dv]x) R(v)."""
    theta = np.linalg.norm(rv, axis=-1)[:, None, None]
    t = np.maximum(theta, 1e-12)
    small = theta < 1e-6
    a = np.where(small, 0.5 - theta ** 2 / 24, (1 - np.cos(t)) / t ** 2)
    b = np.where(small, 1 / 6 - theta ** 2 / 120, (t - np.sin(t)) / t ** 3)
    k = skew(rv)
    return np.eye(3) + a * k + b * (k @ k)


def schur_reduce(A: np.ndarray, n_cam: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A = [[U, W], [W^T, V]] with V block diagonal (6x6 per board pose, the last rows):
    (S = U - W V^-1 W^T [n_cam, n_cam], W [n_cam, n_boards * 6], V^-1 blocks [n_boards, 6, 6])."""
    nb = (A.shape[0] - n_cam) // 6
    V = A[n_cam:, n_cam:].reshape(nb, 6, nb, 6)[np.arange(nb), :, np.arange(nb), :]
    V_inv = np.linalg.inv(V)
    W = A[:n_cam, n_cam:]
    WV = (W.reshape(n_cam, nb, 1, 6) * V_inv[None]).sum(axis=3).reshape(n_cam, nb * 6)
    return A[:n_cam, :n_cam] - WV @ W.T, W, V_inv


def schur_solve(A: np.ndarray, g: np.ndarray, n_cam: int) -> np.ndarray | None:
    """Solve A dx = -g via the Schur complement over the board poses; None when not positive definite."""
    import torch

    nb = (A.shape[0] - n_cam) // 6
    S, W, V_inv = schur_reduce(A, n_cam)
    gb = g[n_cam:].reshape(nb, 6)
    rhs = -g[:n_cam] + W @ (V_inv @ gb[:, :, None])[..., 0].ravel()
    # torch's Cholesky: multi-threaded OpenBLAS stalls on small matrices on a busy machine
    L, info = torch.linalg.cholesky_ex(torch.as_tensor(S))
    if int(info) != 0 or not np.all(np.isfinite(V_inv)):
        return None
    dc = torch.cholesky_solve(torch.as_tensor(rhs)[:, None], L)[:, 0].numpy()
    db = -(V_inv @ (gb + (W.T @ dc).reshape(nb, 6))[:, :, None])[..., 0]
    return np.concatenate([dc, db.ravel()])


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
                        scale: float, max_iterations: int = 50, tol: float = 1e-10, prior=None,
                        on_iteration=None) -> tuple[np.ndarray, dict]:
    """Robust (IRLS) Levenberg-Marquardt on the kept corners. The normal matrix is formed densely
    from the per-view blocks of the Jacobian and solved through the Schur complement over the board
    poses (their 6x6 blocks are independent), so only the cameras' block is factorised.
    prior: None or (P [m, n_params], b [m]), extra residuals P x - b in pixel units (the priors of
    calib.observability). on_iteration(iteration, cost): progress."""
    def prior_cost(xx):
        return 0.0 if prior is None else float(np.sum((prior[0] @ xx - prior[1]) ** 2))

    def cost_of(xx):
        return robust_cost(np.linalg.norm(prob.residuals(xx, keep), axis=1), loss, scale) + prior_cost(xx)

    cost = cost_of(x)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):
        A, g, _ = prob.normal_equations(x, keep, lambda r: robust_weights(np.linalg.norm(r, axis=1), loss, scale))
        if prior is not None:
            A = A + prior[0].T @ prior[0]
            g = g + prior[0].T @ (prior[0] @ x - prior[1])
        A, g = A[np.ix_(free, free)], g[free]
        n_cam = int(free[:prob.C * (prob.ni + 6)].sum())
        diag = np.maximum(np.diag(A), 1e-12)
        improved = False
        for _ in range(12):
            dx = schur_solve(A + lam * np.diag(diag), g, n_cam)
            if dx is None:
                lam *= 10
                continue
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
        if on_iteration is not None:
            on_iteration(it, cost)
        if not improved or rel < tol:
            break
    return x, {"iterations": it, "cost": cost}
