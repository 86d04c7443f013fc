"""Training a `GaussianAvatar` from a multi-view session on the CPU kernel.

Each iteration renders one (frame, camera) pair of the training split, drawn by a seeded
generator: the avatar is posed on the head-model mesh of that frame (tracking parameters, or
the synthetic ground truth) and compared with the masked image (black background):

    loss = (1 - ssim_weight) L1 + ssim_weight (1 - SSIM) + alpha_weight |alpha - mask|
           + position_weight mean(relu(|local_mean| - position_threshold))
           + scale_weight mean(relu(local_scale - scale_threshold))      (local units: triangle sizes)
           [+ tracking_weight |per-frame corrections|^2 with refine_tracking]

Adam (our own: its moments follow densification row by row), exponentially decaying position
step, SH bands switched on progressively, adaptive density control per binding (avatar.density).
The whole state (parameters, moments, density statistics, the generator, the loss history) is
saved with torch.save as plain tensors every `checkpoint_every` iterations into the work folder;
`train_avatar` on a folder holding a checkpoint continues from it, and the result is the same as
an uninterrupted run (the rasterizer is bit-reproducible; tested).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from headcap.avatar.density import DensityConfig, DensityControl
from headcap.avatar.gaussian_avatar import PARAM_NAMES, GaussianAvatar
from headcap.avatar.image_metrics import ssim

__all__ = ["TrainConfig", "Adam", "TrainSetup", "prepare", "train_avatar", "CHECKPOINT", "split_session"]

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 6000
    """Optimisation steps (one rendered training view each)."""
    holdout: str | None = None
    """Held-out cameras (novel-view test), comma separated; default: `holdout_count` cameras spread over the rig."""
    holdout_count: int = 3
    """How many cameras to hold out when --holdout is not given."""
    holdout_frames: int = 5
    """The last N frames are held out (self-reenactment test)."""
    head: str | None = None
    """Head model spec (default | ict:PATH | ...); default: the parameters' or the session's own."""
    head_params: Literal["auto", "tracking", "ground_truth"] = "auto"
    """Per-frame head-model parameters to train on: auto (SESSION/tracking/params.npz when tracking
    has run, else a synthetic session's ground truth), tracking, or ground_truth (only when asked)."""
    sh_degree: int = 1
    """Highest SH degree (0-3); bands are switched on every `sh_increase_every` iterations."""
    sh_increase_every: int = 1000
    """Iterations between switching on the next SH band."""
    per_triangle: int = 1
    """Gaussians per bound triangle at the start."""
    initial_scale: float = 0.5
    """In-plane size of the initial Gaussians, in triangle sizes."""
    lr_means: float = 5e-3
    """Adam step of local positions (triangle sizes) at the start; decays to 1% at the end."""
    lr_scales: float = 1.7e-2
    """Adam step of local log-scales."""
    lr_quats: float = 1e-3
    """Adam step of local rotations (quaternion components)."""
    lr_opacity: float = 5e-2
    """Adam step of opacity logits."""
    lr_sh: float = 5e-3
    """Adam step of the SH DC coefficients (higher bands: / 20)."""
    ssim_weight: float = 0.2
    """Weight of D-SSIM (1 - SSIM) against L1."""
    alpha_weight: float = 0.1
    """Weight of |alpha - mask|."""
    position_weight: float = 0.01
    """Weight of the local-position regulariser."""
    position_threshold: float = 1.0
    """Local distance (triangle sizes) free of the position penalty."""
    scale_weight: float = 1.0
    """Weight of the local-scale regulariser."""
    scale_threshold: float = 0.6
    """Local scale (triangle sizes) free of the scale penalty."""
    refine_tracking: bool = False
    """Also optimise per-frame expression and head-pose corrections of the training frames."""
    lr_tracking: float = 1e-4
    """Adam step of the tracking corrections."""
    tracking_weight: float = 1.0
    """Weight of the squared tracking corrections."""
    checkpoint_every: int = 500
    """Iterations between checkpoints in the work folder."""
    seed: int = 0
    """Seed of the view order, the densification samples and the initialisation."""
    density: DensityConfig = field(default_factory=DensityConfig)
    """Adaptive density control (avatar.density.DensityConfig)."""

    def __post_init__(self):
        if self.head_params not in ("auto", "tracking", "ground_truth"):
            raise ValueError(f"avatar train: field 'head_params' must be auto, tracking or ground_truth, "
                             f"got {self.head_params!r}")
        for name, low in (("iterations", 0), ("holdout_count", 0), ("holdout_frames", 0), ("sh_increase_every", 1),
                          ("per_triangle", 1), ("checkpoint_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"avatar train: field '{name}' must be an integer >= {low}, got {value!r}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"avatar train: field 'sh_degree' must be 0..3, got {self.sh_degree!r}")
        for name in ("initial_scale", "lr_means", "lr_scales", "lr_quats", "lr_opacity", "lr_sh", "lr_tracking"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"avatar train: field '{name}' must be a positive number, got {value!r}")
        for name in ("ssim_weight", "alpha_weight", "position_weight", "position_threshold", "scale_weight",
                     "scale_threshold", "tracking_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"avatar train: field '{name}' must be a number >= 0, got {value!r}")
        if self.ssim_weight > 1:
            raise ValueError(f"avatar train: field 'ssim_weight' must be in [0, 1], got {self.ssim_weight!r}")


class Adam:
    """Adam over a dict of named tensors, with row-wise remapping after densification."""

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-15):
        self.betas, self.eps = betas, eps
        self.m: dict[str, Tensor] = {}
        self.v: dict[str, Tensor] = {}
        self.steps = 0

    def step(self, params: dict[str, Tensor], lrs: dict[str, float]) -> None:
        b1, b2 = self.betas
        self.steps += 1
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        with torch.no_grad():
            for name, p in params.items():
                g = p.grad
                if g is None:
                    continue
                if name not in self.m:
                    self.m[name], self.v[name] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = self.m[name], self.v[name]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-lrs[name])
                p.grad = None

    def remap(self, keep: Tensor, appended: int, names: tuple[str, ...]) -> None:
        """Rows `keep` of the per-Gaussian moments survive, `appended` zero rows follow."""
        for name in names:
            for store in (self.m, self.v):
                if name in store:
                    old = store[name][keep]
                    store[name] = torch.cat([old, old.new_zeros((appended,) + old.shape[1:])], 0)

    def state_dict(self) -> dict:
        return {"m": dict(self.m), "v": dict(self.v), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.steps = dict(state["m"]), dict(state["v"]), int(state["steps"])


def split_session(cameras: list[str], frames: int, config: TrainConfig) -> tuple[list[str], list[str], list[int], list[int]]:
    """(train cameras, held-out cameras, train frames, held-out frames)."""
    if config.holdout:
        held = [c.strip() for c in config.holdout.split(",") if c.strip()]
        unknown = [c for c in held if c not in cameras]
        if unknown:
            raise ValueError(f"--holdout: camera(s) {unknown} are not in the session (cameras: {cameras})")
    else:
        count = min(config.holdout_count, len(cameras) - 1)
        idx = [int(i) for i in np.linspace(0, len(cameras) - 1, count + 2)[1:-1].round()] if count > 0 else []
        held = [cameras[i] for i in idx]
    train = [c for c in cameras if c not in held]
    if not train:
        raise ValueError(f"--holdout: every camera is held out ({held}); nothing left to train on")
    hold_frames = min(config.holdout_frames, frames - 1)
    return train, held, list(range(frames - hold_frames)), list(range(frames - hold_frames, frames))


@dataclass
class TrainSetup:
    """Everything read from the session, shared by training and evaluation."""

    session: object
    model: object
    model_spec: str
    params: object  # HeadParams
    images: object  # SessionImages (all frames x all cameras)
    vertices: Tensor  # [T, V, 3] world, identity of the parameters
    train_cameras: list[str]
    held_cameras: list[str]
    train_frames: list[int]
    held_frames: list[int]


def prepare(session_dir: Path, config: TrainConfig) -> TrainSetup:
    """Read the session (images, rig, parameters), split it, pose the mesh of every frame."""
    from headcap.core.threads import serial_torch_ops

    with serial_torch_ops():  # many small torch ops: torch's spinning pool is slow on a busy machine
        return _prepare(session_dir, config)


def _prepare(session_dir: Path, config: TrainConfig) -> TrainSetup:
    from headcap.avatar.avatar_data import frame_vertices, head_params_path, load_images, model_spec_for, read_head_params
    from headcap.capture.session import read_session
    from headcap.reconstruct.head_loaders import load_head_model

    session = read_session(session_dir)
    rig = session.load_rig()
    params_path = head_params_path(session, config.head_params)
    spec = model_spec_for(session, params_path, config.head)
    model = load_head_model(spec)
    params = read_head_params(params_path, model)
    frames = min(params.frames, session.frame_count)
    if frames < 1:
        raise ValueError(f"{params_path}: no frames")
    train_c, held_c, train_f, held_f = split_session(list(session.cameras), frames, config)
    images = load_images(session, rig, list(range(frames)), list(session.cameras))
    verts = frame_vertices(model, torch.from_numpy(params.identity).float(), params, list(range(frames)))
    return TrainSetup(session, model, spec, params, images, verts, train_c, held_c, train_f, held_f)


def _initial_colors(avatar: GaussianAvatar, setup: TrainSetup) -> Tensor:
    """Mean masked colour at each Gaussian's projection over the training cameras of the first frame."""
    from headcap.avatar.static_fit import View, initial_colors

    t = setup.train_frames[0]
    with torch.no_grad():
        means = avatar.pose(setup.vertices[t]).means
    views = []
    for cam in setup.train_cameras:
        img, msk = setup.images.view(t, cam)
        views.append(View(setup.images.cameras[cam], img, msk))
    return initial_colors(means, views).float()


class _Tracking:
    """Per-frame corrections: expression offsets [T, Ne] and head-frame pose deltas [T, 6]."""

    def __init__(self, setup: TrainSetup):
        t = setup.vertices.shape[0]
        self.setup = setup
        self.expression = torch.zeros(t, setup.model.num_expression, requires_grad=True)
        self.pose = torch.zeros(t, 6, requires_grad=True)

    def params(self) -> dict[str, Tensor]:
        return {"tracking_expression": self.expression, "tracking_pose": self.pose}

    def vertices(self, avatar: GaussianAvatar, t: int) -> Tensor:
        from headcap.reconstruct.lbs import axis_angle_to_matrix

        p = self.setup.params
        delta = torch.cat([torch.cat([axis_angle_to_matrix(self.pose[t:t + 1, :3])[0], self.pose[t, 3:, None]], 1),
                           torch.tensor([[0.0, 0, 0, 1]])], 0)
        wfh = torch.from_numpy(p.world_from_head[t]).float() @ delta
        rot = None if p.joint_rotations is None else torch.from_numpy(p.joint_rotations[t:t + 1]).float()
        expr = torch.from_numpy(p.expression[t:t + 1]).float() + self.expression[t:t + 1]
        return avatar.vertices(expression=expr, joint_rotations=rot, world_from_head=wfh)[0]

    def penalty(self, t: int) -> Tensor:
        return (self.expression[t] ** 2).sum() + (self.pose[t] ** 2).sum()


@dataclass
class TrainResult:
    avatar: GaussianAvatar
    history: list[float]
    iterations: int
    seconds: float
    resumed_from: int
    tracking: dict | None = None


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def train_avatar(setup: TrainSetup, work_dir: Path | None, config: TrainConfig,
                 progress: Callable[[int, int, float], None] | None = None,
                 hook: Callable[[int, GaussianAvatar], None] | None = None) -> TrainResult:
    """Train (or continue from work_dir/checkpoint.pt) for config.iterations steps.

    progress(done, total, loss) after every step; hook(iteration, avatar) after every step and
    after the checkpoint of that step is written (benchmarks evaluate in it; tests raise in it to
    simulate a crash)."""
    from headcap.core.threads import serial_torch_ops

    gen = torch.Generator().manual_seed(config.seed)
    ckpt = Path(work_dir) / CHECKPOINT if work_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    adam = Adam()
    density = None
    tracking = _Tracking(setup) if config.refine_tracking else None
    start, history = 0, []
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        p = state["params"]
        avatar = GaussianAvatar(model=setup.model, model_spec=setup.model_spec, identity=state["identity"],
                                face_index=state["face_index"], **{k: p[k] for k in PARAM_NAMES})
        adam.load_state_dict(state["adam"])
        density = DensityControl(config.density, avatar.count)
        density.load_state_dict(state["density"])
        gen.set_state(state["generator"])
        start, history = int(state["iteration"]), state["history"].tolist()
        if tracking is not None:
            tracking.expression.data.copy_(state["tracking_expression"])
            tracking.pose.data.copy_(state["tracking_pose"])
    else:
        avatar = GaussianAvatar.initialise(setup.model, setup.model_spec, torch.from_numpy(setup.params.identity).float(),
                                           sh_degree=config.sh_degree, per_triangle=config.per_triangle,
                                           scale=config.initial_scale, seed=config.seed)
        colors = _initial_colors(avatar, setup)
        avatar.sh[:, 0] = (colors - 0.5) / 0.28209479177387814
        density = DensityControl(config.density, avatar.count)
    for name in PARAM_NAMES:
        getattr(avatar, name).requires_grad_(True)
    pairs = [(t, c) for t in setup.train_frames for c in setup.train_cameras]
    total = config.iterations
    tic = time.perf_counter()

    def lrs(it: int) -> dict[str, float]:
        frac = it / max(1, total)
        out = {"local_means": config.lr_means * (0.01 ** frac), "local_log_scales": config.lr_scales,
               "local_quats": config.lr_quats, "opacity_logits": config.lr_opacity, "sh": config.lr_sh}
        if tracking is not None:
            out.update(tracking_expression=config.lr_tracking, tracking_pose=config.lr_tracking)
        return out

    def snapshot(it: int) -> dict:
        state = {"iteration": it, "params": {k: getattr(avatar, k).detach().clone() for k in PARAM_NAMES},
                 "face_index": avatar.face_index.clone(), "identity": avatar.identity.clone(),
                 "adam": adam.state_dict(), "density": density.state_dict(), "generator": gen.get_state(),
                 "history": torch.tensor(history, dtype=torch.float64), "config": repr(config)}
        if tracking is not None:
            state["tracking_expression"] = tracking.expression.detach().clone()
            state["tracking_pose"] = tracking.pose.detach().clone()
        return state

    with serial_torch_ops():
        for it in range(start, total):
            t, cam = pairs[int(torch.randint(len(pairs), (1,), generator=gen))]
            image, mask = setup.images.view(t, cam)
            verts = tracking.vertices(avatar, t) if tracking is not None else setup.vertices[t]
            degree = min(config.sh_degree, it // config.sh_increase_every)
            out = avatar.render(verts, setup.images.cameras[cam], sh_degree=degree)
            rgb = out.rgb
            loss = (1 - config.ssim_weight) * (rgb - image).abs().mean()
            if config.ssim_weight > 0:
                loss = loss + config.ssim_weight * (1 - ssim(rgb, image))
            if config.alpha_weight > 0:
                loss = loss + config.alpha_weight * (out.alpha - mask).abs().mean()
            if config.position_weight > 0:
                dist = torch.linalg.norm(avatar.local_means, dim=1)
                loss = loss + config.position_weight * torch.relu(dist - config.position_threshold).mean()
            if config.scale_weight > 0:
                loss = loss + config.scale_weight * torch.relu(avatar.local_log_scales.exp() - config.scale_threshold).mean()
            if tracking is not None:
                loss = loss + config.tracking_weight * tracking.penalty(t)
            loss.backward()
            if out.means2d.grad is not None:
                from headcap.avatar.gaussians import screen_space_grad_norm

                density.observe(screen_space_grad_norm(out).detach(), out.visible.detach())
            params = avatar.params()
            if tracking is not None:
                params.update(tracking.params())
            adam.step(params, lrs(it))
            history.append(float(loss.detach()))
            done = it + 1
            if density.due(done) and done < total:
                new, faces, keep, appended = density.step(done, {k: getattr(avatar, k).detach() for k in PARAM_NAMES},
                                                          avatar.face_index, gen)
                adam.remap(keep, appended, PARAM_NAMES)
                avatar.face_index = faces
                for k in PARAM_NAMES:
                    setattr(avatar, k, new[k].requires_grad_(True))
            if ckpt is not None and (done % config.checkpoint_every == 0 or done == total):
                _save_checkpoint(ckpt, snapshot(done))
            if progress is not None:
                progress(done, total, history[-1])
            if hook is not None:
                hook(done, avatar)
    for k in PARAM_NAMES:
        setattr(avatar, k, getattr(avatar, k).detach())
    track = None
    if tracking is not None:
        track = {"expression": tracking.expression.detach(), "pose": tracking.pose.detach()}
    return TrainResult(avatar, history, total, time.perf_counter() - tic, start, track)
