"""Stabilization: the skull's rigid motion (`world_from_head` per frame) from a sequence of
meshes in one topology (registered or tracked), robust to expressions.

A jaw drop or a frown moves many vertices; plain all-vertex Procrustes follows them and tilts
the skull. Here each frame's pose is a weighted Procrustes fit of a reference shape (head
frame) to the frame's vertices, with weights that are

* a prior of rigidity per vertex (`rigidity_prior`: from a head model, vertices driven little
  by expressions and the jaw, i.e. forehead, nose bridge, ears, skull cap; else uniform),
* re-estimated per frame by iteratively reweighted least squares (Geman-McClure weights of the
  residual over a robust scale, 1.4826 x the weighted median residual), and
* re-estimated over the sequence: after each round the meshes are brought into the head frame,
  the reference becomes their per-vertex median and each vertex's temporal spread there
  down-weights the vertices that move relative to the skull,

then smoothed over time (Gaussian on translations and on rotations' log-map about a running
mean). `plain_procrustes` is the baseline (all vertices, equal weights, one pass).

Poses are `world_from_head` 4x4 (metres): world = R @ head + t. Without a reference in a
model's head frame, the head frame is the first frame's world frame (poses relative to it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StabilizeConfig", "StabilizeResult", "weighted_procrustes", "plain_procrustes", "stabilize_sequence",
           "rigidity_prior", "stabilized_vertices", "skull_pose_errors", "smooth_poses"]


@dataclass(frozen=True)
class StabilizeConfig:
    irls_iterations: int = 12
    """Reweighting iterations of the per-frame fit."""
    rounds: int = 3
    """Sequence rounds: fit every frame, re-estimate the reference and the per-vertex rigidity."""
    robust_scale: float = 2.0
    """Geman-McClure scale, in units of the robust residual scale (smaller: stricter)."""
    min_scale_m: float = 2e-4
    """Floor of the residual scale (metres): below it, residuals count as noise."""
    smooth_frames: float = 0.0
    """Standard deviation (frames) of the temporal Gaussian on the poses; 0 turns smoothing off."""

    def __post_init__(self):
        for name in ("irls_iterations", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"stabilize: field '{name}' must be an integer >= 1, got {value!r}")
        for name in ("robust_scale", "min_scale_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"stabilize: field '{name}' must be a positive number, got {value!r}")
        if not (isinstance(self.smooth_frames, (int, float)) and np.isfinite(self.smooth_frames) and self.smooth_frames >= 0):
            raise ValueError(f"stabilize: field 'smooth_frames' must be >= 0, got {self.smooth_frames!r}")


@dataclass
class StabilizeResult:
    world_from_head: np.ndarray   # [T, 4, 4]
    reference: np.ndarray         # [V, 3] head frame (the per-vertex median of the stabilized meshes)
    weights: np.ndarray           # [T, V] final per-frame weights (prior x rigidity x IRLS)
    rigidity: np.ndarray          # [V] sequence rigidity in [0, 1]
    residual_m: np.ndarray        # [T] weighted RMS residual of each frame's fit (metres)


def _check_vertices(vertices, name: str = "vertices") -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 3 or v.shape[2] != 3 or v.shape[0] < 1 or v.shape[1] < 3:
        raise ValueError(f"stabilize: {name}: expected shape [T, V>=3, 3], got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"stabilize: {name}: holds NaN or infinite values")
    return v


def weighted_procrustes(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The rigid transform [4, 4] minimising sum_v w_v |R source_v + t - target_v|^2 (Kabsch with
    weights; a proper rotation). source, target: [V, 3]; weights: [V] >= 0 (default equal)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    total = w.sum()
    if not total > 0:
        raise ValueError("weighted_procrustes: weights sum to zero")
    w = w / total
    mu_s, mu_d = w @ src, w @ dst
    cov = ((dst - mu_d) * w[:, None]).T @ (src - mu_s)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, mu_d - rot @ mu_s
    return out


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def _inverse(transform: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = transform[:3, :3].T
    out[:3, 3] = -transform[:3, :3].T @ transform[:3, 3]
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def plain_procrustes(vertices, reference=None) -> np.ndarray:
    """Baseline: all-vertex, equal-weight Procrustes of `reference` (default: the first frame)
    to every frame. vertices [T, V, 3] -> world_from_head [T, 4, 4]."""
    v = _check_vertices(vertices)
    ref = v[0] if reference is None else np.asarray(reference, np.float64)
    return np.stack([weighted_procrustes(ref, frame) for frame in v])


def rigidity_prior(model, identity=None, jaw_joint: str = "jaw") -> np.ndarray:
    """Prior weight per vertex [V] in [0, 1] from a head model: 1 where no expression and no
    joint below the head (jaw, eyes) moves the vertex relative to the skull, falling towards 0
    where they do (lips, chin, cheeks, eyelids, eyeballs, teeth, tongue)."""
    import torch

    basis = model.expression_basis.double()
    motion = basis.norm(dim=-1).max(dim=0).values.numpy() if basis.shape[0] else np.zeros(model.num_vertices)
    scale = max(float(np.percentile(motion, 90)), 1e-6)
    prior = 1.0 / (1.0 + (motion / (0.1 * scale)) ** 2)
    if model.lbs_weights is not None and model.num_joints:
        names = list(model.joint_names)
        moving = [i for i, n in enumerate(names) if n == jaw_joint or n.startswith("eye") or "jaw" in n]
        if moving:
            w = model.lbs_weights.double()[:, moving].sum(dim=1).numpy()
            prior = prior * np.clip(1.0 - 4.0 * w, 0.0, 1.0)
    for name in ("eyeball_left", "eyeball_right", "eyes", "teeth", "teeth_upper", "teeth_lower", "tongue"):
        mask = model.region_masks.get(name)
        if mask is not None:
            prior[torch.as_tensor(mask).numpy().astype(bool)] = 0.0
    if not prior.any():
        return np.ones(model.num_vertices)
    return prior


def _irls_frame(reference, frame, prior, config: StabilizeConfig, init=None):
    pose = weighted_procrustes(reference, frame, prior) if init is None else init
    w = prior
    for _ in range(config.irls_iterations):
        r = np.linalg.norm(_apply(pose, reference) - frame, axis=1)
        active = prior > 0
        sigma = max(1.4826 * _weighted_median(r[active], prior[active]), config.min_scale_m)
        c = config.robust_scale * sigma
        w = prior / (1.0 + (r / c) ** 2) ** 2
        pose = weighted_procrustes(reference, frame, w)
    r = np.linalg.norm(_apply(pose, reference) - frame, axis=1)
    rms = float(np.sqrt((w * r ** 2).sum() / max(w.sum(), 1e-30)))
    return pose, w, rms


def stabilize_sequence(vertices, reference=None, prior=None, config: StabilizeConfig = StabilizeConfig()) -> StabilizeResult:
    """vertices [T, V, 3] (world, one topology) -> StabilizeResult.

    reference: [V, 3] a shape in the head frame (e.g. the head model's neutral with the
    subject's identity): poses are then in that frame. Default: the first frame's vertices, and
    the head frame is the world frame at the first frame. prior: [V] rigidity prior (default
    equal weights: the IRLS starts from all vertices)."""
    v = _check_vertices(vertices)
    T, V = v.shape[:2]
    ref = v[0].copy() if reference is None else np.asarray(reference, np.float64)
    if ref.shape != (V, 3):
        raise ValueError(f"stabilize: reference: expected shape ({V}, 3), got {ref.shape}")
    fixed_frame = reference is not None
    base = np.ones(V) if prior is None else np.asarray(prior, np.float64)
    if base.shape != (V,) or (base < 0).any() or not base.sum() > 0:
        raise ValueError(f"stabilize: prior: expected [{V}] non-negative weights, not all zero")
    rigidity = np.ones(V)
    poses = np.stack([np.eye(4)] * T)
    weights = np.zeros((T, V))
    rms = np.zeros(T)
    for round_ in range(config.rounds):
        w_seq = base * rigidity
        for t in range(T):
            init = poses[t] if round_ > 0 else (poses[t - 1] if t > 0 else None)
            poses[t], weights[t], rms[t] = _irls_frame(ref, v[t], w_seq, config, init)
        if round_ == config.rounds - 1:
            break
        stab = stabilized_vertices(v, poses)
        median = np.median(stab, axis=0)
        spread = np.median(np.linalg.norm(stab - median, axis=2), axis=0)
        active = w_seq > 0
        sigma = max(1.4826 * _weighted_median(spread[active], w_seq[active]), config.min_scale_m)
        rigidity = 1.0 / (1.0 + (spread / (config.robust_scale * sigma)) ** 2) ** 2
        if fixed_frame:
            # keep the given head frame: move the median shape back onto the reference rigidly
            median = _apply(weighted_procrustes(median, ref, base * rigidity), median)
        else:
            # the first frame's skull keeps defining the head frame
            median = _apply(weighted_procrustes(median, v[0], base * rigidity * weights[0]), median)
        ref = median
    if config.smooth_frames > 0:
        poses = smooth_poses(poses, config.smooth_frames)
    return StabilizeResult(world_from_head=poses, reference=ref, weights=weights, rigidity=rigidity, residual_m=rms)


def stabilized_vertices(vertices, world_from_head) -> np.ndarray:
    """Every frame's vertices in the head frame: head_from_world[t] applied to vertices[t]."""
    v = np.asarray(vertices, np.float64)
    poses = np.asarray(world_from_head, np.float64)
    rot, trans = poses[:, :3, :3], poses[:, :3, 3]
    return np.einsum("tji,tvj->tvi", rot, v - trans[:, None])


def _rotvec(rot: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


def _rotmat(rotvec: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvec).as_matrix()


def smooth_poses(world_from_head, sigma_frames: float) -> np.ndarray:
    """Gaussian temporal smoothing of poses [T, 4, 4]: translations directly, rotations in the
    log map about each frame's own rotation (so no wrap-around), edges renormalised."""
    poses = np.asarray(world_from_head, np.float64)
    T = len(poses)
    if sigma_frames <= 0 or T < 2:
        return poses.copy()
    radius = int(np.ceil(3 * sigma_frames))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    out = poses.copy()
    for t in range(T):
        idx = t + offsets
        ok = (idx >= 0) & (idx < T)
        k = kernel[ok] / kernel[ok].sum()
        base = poses[t, :3, :3]
        logs = np.stack([_rotvec(base.T @ poses[i, :3, :3]) for i in idx[ok]])
        out[t, :3, :3] = base @ _rotmat(k @ logs)
        out[t, :3, 3] = k @ poses[idx[ok], :3, 3]
    return out


def skull_pose_errors(estimated, truth, points=None, align: bool = True) -> dict:
    """Per-frame rotation (degrees) and translation (metres) errors of estimated vs true
    world_from_head [T, 4, 4]. align: remove one constant head-frame offset first (an estimate
    relative to another head frame, e.g. the first frame's). The translation error is measured
    at `points` [N, 3] in the estimate's head frame (their mean displacement; default its origin)."""
    est, gt = np.asarray(estimated, np.float64), np.asarray(truth, np.float64)
    if est.shape != gt.shape or est.shape[1:] != (4, 4):
        raise ValueError(f"skull_pose_errors: shapes differ or are not [T, 4, 4]: {est.shape} vs {gt.shape}")
    if align:
        # est[t] ~= gt[t] @ offset: average the offsets (rotation by SVD projection)
        offsets = np.stack([_inverse(g) @ e for g, e in zip(gt, est)])
        u, _, vt = np.linalg.svd(offsets[:, :3, :3].mean(axis=0))
        offset = np.eye(4)
        offset[:3, :3] = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt
        offset[:3, 3] = offsets[:, :3, 3].mean(axis=0)
        gt = gt @ offset
    rel = np.einsum("tji,tjk->tik", gt[:, :3, :3], est[:, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rot_deg = np.degrees(np.arccos(cos))
    pts = np.zeros((1, 3)) if points is None else np.asarray(points, np.float64)
    trans = np.array([np.linalg.norm(_apply(e, pts) - _apply(g, pts), axis=1).mean() for e, g in zip(est, gt)])
    return {"rotation_deg": rot_deg, "translation_m": trans}
