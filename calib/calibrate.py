"""Multi-camera calibration from board detections: per-camera intrinsics initialisation,
extrinsics by chaining shared board views over the camera graph, then one global bundle
adjustment of every intrinsic, distortion, cam_from_world and board pose.

The bundle adjustment is a robust (IRLS) Levenberg-Marquardt whose sparse Jacobian comes from
grouped central differences (each residual touches one camera and one board pose, so ~42
residual evaluations per iteration whatever the rig size) and whose small normal matrix is
solved by Cholesky, with rounds of outlier rejection. (scipy's least_squares with a sparsity
pattern was tried first: its inexact LSMR trust-region steps stalled at 100 evaluations.)
Scale is metric because the board's squares are. Frames are matched across
cameras by name: detections of different cameras with the same `frame` saw one board pose.

RMS everywhere is OpenCV's definition: sqrt(mean over corners of |reprojection error|^2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calib.camera import Camera, Rig, invert_rigid
from calib.detect import Detection
from calib.projection import DISTORTION_MODELS

WORLD_FRAMES = ("first-camera", "board", "centroid", "seed")


class CalibrationError(ValueError):
    """Calibration cannot proceed; the message names the cameras and frames at fault."""


@dataclass
class CalibrationConfig:
    distortion_model: str = "opencv"
    """Lens model solved for: 'opencv' (k1 k2 p1 p2 k3), 'fisheye' (k1..k4) or 'none'."""
    fix_k3: bool = False
    """Hold k3 at zero (advisable with few or central-only views)."""
    refine_intrinsics: bool = True
    """False: keep K and distortion at their initial (seed) values and refine poses only."""
    world: str = "first-camera"
    """World frame: 'first-camera', 'board' (the frame seen by most cameras), 'centroid' (camera
    centroid, `up` axis = mean camera up, front towards the first camera) or 'seed'."""
    up: str = "y"
    """Up axis for world='centroid': 'y' (y up, z front) or 'z' (z up, -y front)."""
    reference_camera: str | None = None
    """Camera held fixed during the solve (gauge); default the first camera."""
    loss: str = "huber"
    loss_scale_px: float = 1.0
    outlier_sigmas: float = 5.0
    """Reject corners whose error exceeds this many robust sigmas (and `min_outlier_px`)."""
    min_outlier_px: float = 1.0
    outlier_rounds: int = 3
    min_views_warn: int = 3
    coverage_warn: float = 0.3
    """Warn when the corners of a camera fill less than this fraction of an 8x6 image grid."""
    max_iterations: int = 50

    def __post_init__(self):
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"CalibrationConfig: distortion_model {self.distortion_model!r} not in {sorted(DISTORTION_MODELS)}")
        if self.world not in WORLD_FRAMES:
            raise ValueError(f"CalibrationConfig: world {self.world!r} not in {list(WORLD_FRAMES)}")
        if self.up not in ("y", "z"):
            raise ValueError(f"CalibrationConfig: up {self.up!r} must be 'y' or 'z'")
        if self.loss not in ("linear", "huber", "soft_l1", "cauchy"):
            raise ValueError(f"CalibrationConfig: loss {self.loss!r} not supported")


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


@dataclass
class CalibrationResult:
    rig: Rig
    world_from_board: dict[str, np.ndarray]
    observations: list[Observation]
    per_camera: dict[str, dict]
    rms: float
    initial_rms: float
    warnings: list[str] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"rms_px": self.rms, "initial_rms_px": self.initial_rms, "cameras": self.per_camera,
                "frames": len(self.world_from_board), "warnings": list(self.warnings), "rounds": self.rounds}


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


def _pose_to_vec(m: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix_to_rotvec(m[:3, :3]), m[:3, 3]])


def _vec_to_pose(v: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotvec_to_matrix(v[None, :3])[0]
    m[:3, 3] = v[3:]
    return m


def average_poses(poses: list[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean rotation and median translation of [4, 4] rigid transforms."""
    stack = np.stack(poses)
    u, _, vt = np.linalg.svd(stack[:, :3, :3].sum(axis=0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = np.median(stack[:, :3, 3], axis=0)
    return out


# --- projection (numpy, vectorised over corners) -----------------------------------------
def _project(intr: np.ndarray, model: str, points_cam: np.ndarray) -> np.ndarray:
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


class _Problem:
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
        return _project(intr[self.cidx[sel]], self.model, pc) - self.pix[sel]

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


def _robust_weights(norms: np.ndarray, loss: str, scale: float) -> np.ndarray:
    """IRLS weights of a per-corner robust loss on the residual norm."""
    z = norms / scale
    if loss == "linear":
        return np.ones_like(z)
    if loss == "huber":
        return np.where(z <= 1, 1.0, 1.0 / np.maximum(z, 1e-12))
    if loss == "soft_l1":
        return 1.0 / np.sqrt(1 + z * z)
    return 1.0 / (1 + z * z)  # cauchy


def _robust_cost(norms: np.ndarray, loss: str, scale: float) -> float:
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


def levenberg_marquardt(prob: "_Problem", x: np.ndarray, free: np.ndarray, keep: np.ndarray, loss: str,
                        scale: float, max_iterations: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, dict]:
    """Robust (IRLS) Levenberg-Marquardt on the kept corners. The normal matrix is at most a few
    thousand parameters square, so it is formed densely and solved by Cholesky."""
    import torch

    def cost_of(xx):
        return _robust_cost(np.linalg.norm(prob.residuals(xx, keep), axis=1), loss, scale)

    cost = cost_of(x)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):
        r = prob.residuals(x, keep)
        w = _robust_weights(np.linalg.norm(r, axis=1), loss, scale)
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


def _check_inputs(detections: dict[str, list[Detection]], config: CalibrationConfig):
    if not detections:
        raise CalibrationError("calibrate: no cameras given")
    sizes: dict[str, tuple[int, int]] = {}
    usable: dict[str, list[Detection]] = {}
    problems = []
    for cam, dets in detections.items():
        if not dets:
            problems.append(f"camera {cam!r} has no calibration images")
            continue
        s = {d.image_size for d in dets}
        if len(s) > 1:
            raise CalibrationError(f"camera {cam!r}: calibration images differ in size {sorted(s)}: "
                                   + ", ".join(f"{d.frame}={d.image_size}" for d in dets[:8]))
        sizes[cam] = dets[0].image_size
        good = [d for d in dets if d.usable]
        if not good:
            why = ", ".join(f"{d.frame} ({d.n_corners} corners{': ' + '/'.join(d.flags) if d.flags else ''})" for d in dets[:12])
            more = f" and {len(dets) - 12} more" if len(dets) > 12 else ""
            problems.append(f"camera {cam!r} never sees the board well enough in its {len(dets)} frames: {why}{more}")
        usable[cam] = good
    if problems:
        if all(not usable.get(c) for c in detections):
            problems.insert(0, "no camera sees the board: check the --board specification (kind, size, dictionary)")
        raise CalibrationError("calibrate: " + "; ".join(problems))
    return sizes, usable


def camera_graph_components(usable: dict[str, list[Detection]]) -> list[list[str]]:
    """Cameras linked when they see the board in the same frame; the connected pieces."""
    cams = list(usable)
    parent = {c: c for c in cams}

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    by_frame: dict[str, list[str]] = {}
    for c, dets in usable.items():
        for d in dets:
            by_frame.setdefault(d.frame, []).append(c)
    for members in by_frame.values():
        for other in members[1:]:
            parent[find(other)] = find(members[0])
    groups: dict[str, list[str]] = {}
    for c in cams:
        groups.setdefault(find(c), []).append(c)
    return list(groups.values())


def _init_intrinsics(cam: str, dets: list[Detection], size, config: CalibrationConfig, warnings: list[str]):
    import cv2

    w, h = size
    obj = [d.object_points.astype(np.float32) for d in dets]
    img = [d.corners.astype(np.float32) for d in dets]
    K0 = np.array([[max(w, h), 0, (w - 1) / 2], [0, max(w, h), (h - 1) / 2], [0, 0, 1.0]])
    flags = cv2.CALIB_USE_INTRINSIC_GUESS
    if len(dets) < 3:
        flags |= (cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_ASPECT_RATIO
                  | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3)
    elif config.fix_k3 or config.distortion_model != "opencv":
        flags |= cv2.CALIB_FIX_K3
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, (w, h), K0.copy(), np.zeros(5), flags=flags)
    if not np.isfinite(rms) or rms > 5:
        warnings.append(f"camera {cam!r}: its own initial calibration has RMS {rms:.2f} px; the board may be misdetected")
    poses = []
    for rv, tv in zip(rvecs, tvecs):
        m = np.eye(4)
        m[:3, :3] = cv2.Rodrigues(rv)[0]
        m[:3, 3] = tv.ravel()
        poses.append(m)
    ndist = DISTORTION_MODELS[config.distortion_model]
    d = np.zeros(ndist)
    if config.distortion_model == "opencv":
        d = np.asarray(dist, np.float64).ravel()[:5]
    return K, d, poses


def _pnp(dets: list[Detection], K: np.ndarray, model: str, dist: np.ndarray) -> list[np.ndarray]:
    """cam_from_board [4, 4] per detection with known intrinsics (corners undistorted first)."""
    import cv2
    import torch

    from calib.projection import undistort_pixels

    poses = []
    for d in dets:
        pts = d.corners if model == "none" else undistort_pixels(
            torch.as_tensor(d.corners), torch.as_tensor(K), model, torch.as_tensor(dist)).numpy()
        ok, rv, tv = cv2.solvePnP(d.object_points, pts, K, None, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            ok, rv, tv = cv2.solvePnP(d.object_points, pts, K, None)
        m = np.eye(4)
        m[:3, :3] = cv2.Rodrigues(rv)[0]
        m[:3, 3] = np.asarray(tv).ravel()
        poses.append(m)
    return poses


def _view_rms(cam_from_board: np.ndarray, det: Detection, K, dist, model: str) -> float:
    """Reprojection RMS (px) of a detection under a candidate pose; inf when behind the camera."""
    pc = det.object_points @ cam_from_board[:3, :3].T + cam_from_board[:3, 3]
    if (pc[:, 2] <= 1e-6).any():
        return float("inf")
    intr = np.concatenate([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], dist])
    pix = _project(np.broadcast_to(intr, (len(pc), len(intr))), model, pc)
    return float(np.sqrt(np.mean(np.sum((pix - det.corners) ** 2, axis=1))))


def _coverage(pixels: np.ndarray, size, grid=(8, 6)) -> float:
    w, h = size
    gx = np.clip((pixels[:, 0] / w * grid[0]).astype(int), 0, grid[0] - 1)
    gy = np.clip((pixels[:, 1] / h * grid[1]).astype(int), 0, grid[1] - 1)
    return len(set(zip(gx.tolist(), gy.tolist()))) / (grid[0] * grid[1])


def calibrate_rig(detections: dict[str, list[Detection]], config: CalibrationConfig | None = None,
                  seed: Rig | None = None, progress=None) -> CalibrationResult:
    """detections: {camera id: [Detection, ...]} (frames matched by `Detection.frame`);
    seed: an existing rig to start from (its cameras' K/distortion/poses replace the
    initialisation). progress: optional callable(message). Returns a CalibrationResult."""
    config = config or CalibrationConfig()
    say = progress or (lambda msg: None)
    sizes, usable = _check_inputs(detections, config)
    warnings: list[str] = []
    cams = list(detections)
    pieces = camera_graph_components(usable)
    if len(pieces) > 1:
        desc = "; ".join(f"piece {i + 1}: {p} (frames {sorted({d.frame for c in p for d in usable[c]})[:10]})"
                         for i, p in enumerate(pieces))
        raise CalibrationError(f"calibrate: the camera graph is in {len(pieces)} pieces — no frame shows the board "
                               f"to cameras of two pieces at once, so their relative pose is unknown: {desc}. "
                               "Add frames where the board is visible to cameras of both pieces.")
    if seed is not None and config.distortion_model != "none":
        for c in cams:
            if c in seed.cameras and seed[c].distortion_model != config.distortion_model:
                raise CalibrationError(f"calibrate: seed camera {c!r} uses distortion model "
                                       f"{seed[c].distortion_model!r}, the solve uses {config.distortion_model!r}")
    if config.world == "seed" and seed is None:
        raise CalibrationError("calibrate: world='seed' needs a seed rig")
    for c in cams:
        for d in usable[c]:
            for flag in ("marker_size_mismatch", "foreign_markers", "inconsistent_geometry"):
                if flag in d.flags:
                    warnings.append(f"camera {c!r} frame {d.frame}: {flag.replace('_', ' ')} (does --board match the printed board?)")

    # 1. intrinsics and per-view board poses
    say("initialising intrinsics")
    K, dist, view_pose = {}, {}, {}
    for c in cams:
        if len(usable[c]) < config.min_views_warn:
            warnings.append(f"camera {c!r}: only {len(usable[c])} usable view(s) of the board "
                            f"(frames {[d.frame for d in usable[c]]}); its intrinsics are weakly constrained")
        if seed is not None and c in seed.cameras:
            K[c], dist[c] = seed[c].K.copy(), seed[c].distortion.copy()
            poses = _pnp(usable[c], K[c], config.distortion_model, dist[c])
        else:
            K[c], dist[c], poses = _init_intrinsics(c, usable[c], sizes[c], config, warnings)
            if config.distortion_model != "opencv":
                poses = _pnp(usable[c], K[c], config.distortion_model, dist[c])
        for d, p in zip(usable[c], poses):
            view_pose[(c, d.frame)] = p  # cam_from_board

    # 2. extrinsics: maximum spanning tree over shared frames, from the reference camera
    ref = config.reference_camera or cams[0]
    if ref not in cams:
        raise CalibrationError(f"calibrate: reference camera {ref!r} is not among {cams}")
    frames_of = {c: {d.frame for d in usable[c]} for c in cams}
    det_of = {(c, d.frame): d for c in cams for d in usable[c]}
    cam_from_world: dict[str, np.ndarray] = {}
    if seed is not None and all(c in seed.cameras for c in cams):
        cam_from_world = {c: seed[c].cam_from_world.copy() for c in cams}
    else:
        if seed is not None:
            warnings.append("seed rig lacks cameras " + str([c for c in cams if c not in seed.cameras])
                            + ": extrinsics initialised from the board instead")
        cam_from_world[ref] = np.eye(4)
        while len(cam_from_world) < len(cams):
            best = max(((len(frames_of[a] & frames_of[b]), a, b) for a in cam_from_world for b in cams
                        if b not in cam_from_world), key=lambda t: t[0])
            _, a, b = best
            shared = sorted(frames_of[a] & frames_of[b])
            rel = [view_pose[(b, f)] @ invert_rigid(view_pose[(a, f)]) for f in shared]
            # one view's pose can be a planar flip: score every candidate on all shared frames
            score = [np.median([_view_rms(r @ view_pose[(a, g)], det_of[(b, g)], K[b], dist[b], config.distortion_model)
                                for g in shared]) for r in rel]
            good = [r for r, e in zip(rel, score) if e <= 3 * min(score) + 1.0]
            cam_from_world[b] = average_poses(good) @ cam_from_world[a]
    frames = sorted({f for c in cams for f in frames_of[c]})
    world_from_board = {}
    for f in frames:
        seen = [c for c in cams if f in frames_of[c]]
        cand = [invert_rigid(cam_from_world[c]) @ view_pose[(c, f)] for c in seen]
        score = [np.median([_view_rms(cam_from_world[c] @ w, det_of[(c, f)], K[c], dist[c], config.distortion_model)
                            for c in seen]) for w in cand]
        world_from_board[f] = average_poses([w for w, e in zip(cand, score) if e <= 3 * min(score) + 1.0])

    # 3. bundle adjustment with outlier rounds
    obs = [Observation(c, d.frame, d.ids, d.corners, d.object_points) for c in cams for d in usable[c]]
    prob = _Problem(cams, frames, obs, config.distortion_model)
    intr = np.stack([np.concatenate([[K[c][0, 0], K[c][1, 1], K[c][0, 2], K[c][1, 2]], dist[c]]) for c in cams])
    x = prob.pack(intr, np.stack([_pose_to_vec(cam_from_world[c]) for c in cams]),
                  np.stack([_pose_to_vec(world_from_board[f]) for f in frames]))
    free = np.ones(prob.n_params, bool)
    ri = cams.index(ref)
    free[prob.C * prob.ni + ri * 6: prob.C * prob.ni + ri * 6 + 6] = False
    if not config.refine_intrinsics:
        free[:prob.C * prob.ni] = False
    elif config.fix_k3 and config.distortion_model == "opencv":
        free[np.arange(prob.C) * prob.ni + 8] = False
    initial = np.linalg.norm(prob.residuals(x), axis=1)
    initial_rms = float(np.sqrt(np.mean(initial ** 2)))
    # corners the initialisation puts far off (a bad single-view pose) would dominate the first
    # solve; they rejoin in the next round if the refined rig explains them
    keep = initial <= max(50.0, 20 * float(np.median(initial)))
    rounds = []
    for rnd in range(config.outlier_rounds + 1):
        say(f"bundle adjustment round {rnd + 1}: {keep.sum()} corners, {free.sum()} parameters")
        x, info = levenberg_marquardt(prob, x, free, keep, config.loss, config.loss_scale_px, config.max_iterations)
        err = np.linalg.norm(prob.residuals(x), axis=1)
        sigma = np.median(err[keep]) / np.sqrt(2 * np.log(2))  # Rayleigh median -> per-axis sigma
        thresh = max(config.outlier_sigmas * sigma, config.min_outlier_px)
        new_keep = err <= thresh
        rounds.append({"round": rnd + 1, "corners": int(keep.sum()), "rms_px": float(np.sqrt(np.mean(err[keep] ** 2))),
                       "threshold_px": float(thresh), "rejected": int((~new_keep).sum()), "iterations": info["iterations"]})
        if np.array_equal(new_keep, keep) or rnd == config.outlier_rounds:
            keep = new_keep if rnd < config.outlier_rounds else keep
            break
        keep = new_keep

    # 4. results in the chosen world frame
    intr, cam_vecs, board_vecs = prob.unpack(x)
    res = prob.residuals(x)
    start = 0
    for o in obs:
        n = len(o.ids)
        o.residuals, o.inlier = res[start:start + n], keep[start:start + n]
        start += n
    cameras = []
    for i, c in enumerate(cams):
        Kc = np.array([[intr[i, 0], 0, intr[i, 2]], [0, intr[i, 1], intr[i, 3]], [0, 0, 1.0]])
        cameras.append(Camera(c, sizes[c][0], sizes[c][1], Kc, config.distortion_model, intr[i, 4:],
                              _vec_to_pose(cam_vecs[i])))
    rig = Rig.from_list(cameras)
    boards = {f: _vec_to_pose(board_vecs[j]) for j, f in enumerate(frames)}
    world_from_new = _world_transform(rig, boards, frames_of, config, seed)
    rig = rig.transformed(world_from_new)
    new_from_world = invert_rigid(world_from_new)
    boards = {f: new_from_world @ m for f, m in boards.items()}

    per_camera = {}
    for c in cams:
        mine = [o for o in obs if o.camera == c]
        r = np.concatenate([o.residuals[o.inlier] for o in mine])
        pix = np.concatenate([o.pixels for o in mine])
        cov = _coverage(pix, sizes[c])
        per_camera[c] = {"rms_px": float(np.sqrt(np.mean(np.sum(r ** 2, axis=1)))), "views": len(mine),
                         "corners": int(sum(len(o.ids) for o in mine)),
                         "outliers": int(sum((~o.inlier).sum() for o in mine)), "coverage": cov,
                         "fx": float(rig[c].K[0, 0]), "fy": float(rig[c].K[1, 1]),
                         "cx": float(rig[c].K[0, 2]), "cy": float(rig[c].K[1, 2])}
        if cov < config.coverage_warn:
            warnings.append(f"camera {c!r}: the board covered only {cov:.0%} of the image (8x6 grid cells, frames "
                            f"{[o.frame for o in mine][:10]}); lens distortion near the uncovered edges is extrapolated")
    inl = np.concatenate([o.residuals[o.inlier] for o in obs])
    rms = float(np.sqrt(np.mean(np.sum(inl ** 2, axis=1))))
    say(f"done: RMS {rms:.4f} px over {len(inl)} corners")
    return CalibrationResult(rig, boards, obs, per_camera, rms, initial_rms, warnings, rounds, dict(sizes))


def _world_transform(rig: Rig, boards: dict[str, np.ndarray], frames_of, config: CalibrationConfig,
                     seed: Rig | None) -> np.ndarray:
    """world_from_new_world for the requested world frame."""
    cams = rig.ids
    if config.world == "first-camera":
        return rig[cams[0]].world_from_cam
    if config.world == "board":
        best = max(sorted(boards), key=lambda f: sum(f in frames_of[c] for c in cams))
        return boards[best]
    if config.world == "seed":
        common = [c for c in cams if c in seed.cameras]
        return average_poses([rig[c].world_from_cam @ seed[c].cam_from_world for c in common])
    centres = np.stack([cam.centre for cam in rig])
    centroid = centres.mean(axis=0)
    up = -np.stack([cam.cam_from_world[1, :3] for cam in rig]).mean(axis=0)
    up /= np.linalg.norm(up)
    front = centres[0] - centroid
    front = front - up * (front @ up)
    if np.linalg.norm(front) < 1e-9:
        front = rig[cams[0]].world_from_cam[:3, 2] * -1
        front = front - up * (front @ up)
    front /= np.linalg.norm(front)
    out = np.eye(4)
    if config.up == "y":
        out[:3, 0], out[:3, 1], out[:3, 2] = np.cross(up, front), up, front
    else:
        out[:3, 0], out[:3, 1], out[:3, 2] = np.cross(-front, up), -front, up
    out[:3, 3] = centroid
    return out
