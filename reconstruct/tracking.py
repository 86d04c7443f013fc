"""Head-model tracking: identity (shared), expression, joint rotations and head pose per frame
of any HeadModel, fitted to the views of a sequence (reconstruct.tracking_terms: silhouettes,
landmarks when present, a photometric term with estimated albedo and SH lighting, registered
meshes when present), with temporal smoothness.

Schedule (coarse to fine):
  first frame: rigid pose on silhouettes (+ landmarks) -> + identity, expression, joints ->
               albedo and lighting estimated -> + photometric on blurred, then sharp images;
  sequential:  every further frame warm-started from the previous (constant velocity), identity
               held, a temporal term towards the previous frame;
  global:      every frame at once, identity free again, a vertex-acceleration term.
Monocular (one camera): the same, with the focal length a parameter of the global pass.

The head pose is world_from_head = [R | c + t - R c] with R = exp(rotvec) about the neutral
head's centre c (decorrelates rotation from translation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from headcap.reconstruct.lbs import axis_angle_to_matrix
from headcap.reconstruct.tracking_terms import (ViewObservation, estimate_appearance,
                                                landmark_energy, photometric_energy, silhouette_energy,
                                                visible_vertices)

__all__ = ["TrackingConfig", "TrackingResult", "track_sequence", "initial_pose", "model_vertices", "LinearHead",
           "INTERIOR_REGIONS"]

INTERIOR_REGIONS = ("eyeball_left", "eyeball_right", "eyes", "teeth", "teeth_upper", "teeth_lower", "tongue",
                    "gums_tongue", "mouth_socket", "eye_socket_left", "eye_socket_right", "lacrimal_fluid",
                    "eye_blend", "eye_occlusion", "eyelashes")


@dataclass(frozen=True)
class TrackingConfig:
    first_frame_iterations: int = 150
    """Adam steps per level (rigid, shape, photometric) on the first frame."""
    frame_iterations: int = 50
    """Adam steps per further frame of the sequential pass."""
    global_iterations: int = 40
    """Adam steps of the global pass over every frame (0: none)."""
    silhouette_weight: float = 1.0
    """Weight of the silhouette term (px^2)."""
    landmark_weight: float = 1.0
    """Weight of the landmark term (px^2; used when landmarks are given)."""
    photometric_weight: float = 0.05
    """Weight of the photometric term (percent of full scale)."""
    mesh_weight: float = 1e6
    """Weight of the registered-mesh term (m^2; used when meshes are given)."""
    identity_prior: float = 0.5
    """Weight of the identity coefficients' squared norm."""
    expression_prior: float = 0.05
    """Weight of the expression coefficients' squared norm."""
    joint_prior: float = 5.0
    """Weight of the fitted joints' squared rotation (radians)."""
    temporal_weight: float = 1e5
    """Weight of the squared vertex acceleration (m^2) over time."""
    identity_modes: int = 50
    """Identity modes fitted (at most the model's)."""
    learning_rate: float = 0.01
    """Adam's base step (parameters are scaled so one step moves the head about a millimetre)."""
    monocular: bool = False
    """One camera: the focal length is estimated too."""

    def __post_init__(self):
        for name in ("first_frame_iterations", "frame_iterations", "global_iterations", "identity_modes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"track: field '{name}' must be an integer >= 0, got {value!r}")
        for name in ("silhouette_weight", "landmark_weight", "photometric_weight", "mesh_weight", "identity_prior",
                     "expression_prior", "joint_prior", "temporal_weight", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"track: field '{name}' must be a number >= 0, got {value!r}")


@dataclass
class TrackingResult:
    identity: np.ndarray          # [Ni]
    expression: np.ndarray        # [T, Ne]
    joint_rotations: np.ndarray   # [T, J, 3]
    world_from_head: np.ndarray   # [T, 4, 4]
    vertices: np.ndarray          # [T, V, 3] world metres
    focal_scale: float            # monocular: fitted focal / given focal (1 for a rig)
    albedo: np.ndarray            # [V, 3]
    sh_coeffs: np.ndarray         # [9, 3]
    residuals: dict = field(default_factory=dict)  # name -> [T] per-frame energies


def _rotvec_from_matrix(rot: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


def initial_pose(model, views: list[ViewObservation], centre: np.ndarray) -> np.ndarray:
    """A first world_from_head [4, 4] from the masks alone: the head's centre where the mask
    centroids' rays meet (one view: on its ray, at the depth its width implies), facing the
    cameras' mean centre, upright as the cameras are."""
    rows, rhs, dirs, ups, centres = [], [], [], [], []
    with torch.no_grad():
        verts = model.forward().vertices[0].double().numpy()
    width_m = float(np.ptp(verts[:, 0]))
    depth_guess = None
    for view in views:
        cam = view.camera
        mask = view.mask.numpy()
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        px = np.array([0.5 * (xs.min() + xs.max()), 0.5 * (ys.min() + ys.max()), 1.0])
        K = cam.K.double().numpy()
        cfw = cam.cam_from_world.double().numpy()
        d_cam = np.linalg.solve(K, px)
        d = cfw[:3, :3].T @ d_cam
        d /= np.linalg.norm(d)
        o = -cfw[:3, :3].T @ cfw[:3, 3]
        proj = np.eye(3) - np.outer(d, d)
        rows.append(proj)
        rhs.append(proj @ o)
        dirs.append(d)
        centres.append(o)
        ups.append(-cfw[1, :3])
        depth_guess = K[0, 0] * width_m / max(xs.max() - xs.min(), 1)
    if not rows:
        raise ValueError("track: no view of the first frame has any mask pixel; cannot place the head")
    if len(rows) >= 2:
        point = np.linalg.solve(sum(rows), sum(rhs))
    else:
        point = centres[0] + depth_guess * dirs[0]
    forward = np.mean(centres, axis=0) - point
    forward /= np.linalg.norm(forward)
    up = np.mean(ups, axis=0)
    up = up - forward * (up @ forward)
    up /= np.linalg.norm(up)
    x_axis = np.cross(up, forward)
    rot = np.stack([x_axis, up, forward], axis=1)  # head x, y, z in world
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = point - rot @ centre
    return out


@dataclass
class LinearHead:
    """A HeadModel restricted to some vertices, with its joints as linear functions of the
    coefficients (so a subset needs no full-mesh joint regression): what the optimiser evaluates."""

    template: Tensor            # [V', 3]
    identity_basis: Tensor      # [Ni, V'*3]
    expression_basis: Tensor    # [Ne, V'*3]
    joint_template: Tensor | None = None        # [J, 3]
    joint_identity: Tensor | None = None        # [Ni, J*3]
    joint_expression: Tensor | None = None      # [Ne, J*3]
    parents: Tensor | None = None
    lbs_weights: Tensor | None = None           # [V', J]
    pose_correctives: Tensor | None = None      # [P, V'*3]

    @classmethod
    def of(cls, model, vertex_ids: Tensor | None = None) -> "LinearHead":
        ids = torch.arange(model.num_vertices) if vertex_ids is None else vertex_ids
        flat = lambda b: b[:, ids].reshape(b.shape[0], -1).contiguous()  # noqa: E731
        out = cls(model.template[ids].contiguous(), flat(model.identity_basis), flat(model.expression_basis))
        if model.num_joints:
            J = model.num_joints
            if model.joint_regressor is not None:
                reg = model.joint_regressor
                out.joint_template = reg @ model.template
                out.joint_identity = torch.einsum("jv,kvc->kjc", reg, model.identity_basis).reshape(-1, J * 3)
                out.joint_expression = torch.einsum("jv,kvc->kjc", reg, model.expression_basis).reshape(-1, J * 3)
            else:
                out.joint_template = model.rest_joints
                if model.joint_identity_basis is not None:
                    out.joint_identity = model.joint_identity_basis.reshape(-1, J * 3)
            out.parents = model.parents
            out.lbs_weights = model.lbs_weights[ids].contiguous()
            if model.pose_correctives is not None and model.pose_correctives.shape[0] > 0:
                out.pose_correctives = flat(model.pose_correctives)
        return out


def model_vertices(head: LinearHead, identity: Tensor | None, expression: Tensor | None, joint_rotations: Tensor | None,
                   world_from_head: Tensor) -> Tensor:
    """HeadModel.forward's vertices [B, V', 3] (of the LinearHead's vertices), evaluated with flat
    matrix products instead of one small product per vertex (several times faster forward and
    backward on the CPU; compared with HeadModel.forward in the tests)."""
    from headcap.reconstruct.lbs import joint_transforms, pose_feature

    batch = world_from_head.shape[0]
    V = head.template.shape[0]
    verts = head.template.reshape(1, -1).expand(batch, -1)
    if identity is not None:
        verts = verts + identity @ head.identity_basis[: identity.shape[1]]
    if expression is not None:
        verts = verts + expression @ head.expression_basis[: expression.shape[1]]
    verts = verts.reshape(batch, V, 3)
    if head.joint_template is not None and joint_rotations is not None:
        J = head.joint_template.shape[0]
        joints = head.joint_template.reshape(1, -1).expand(batch, -1)
        if identity is not None and head.joint_identity is not None:
            joints = joints + identity @ head.joint_identity[: identity.shape[1]]
        if expression is not None and head.joint_expression is not None:
            joints = joints + expression @ head.joint_expression[: expression.shape[1]]
        joints = joints.reshape(batch, J, 3)
        rotations = axis_angle_to_matrix(joint_rotations)
        if head.pose_correctives is not None:
            verts = verts + (pose_feature(rotations) @ head.pose_correctives).reshape(batch, V, 3)
        _, transforms = joint_transforms(rotations, joints, head.parents)
        blended = (head.lbs_weights @ transforms[:, :, :3, :].reshape(batch, J, 12)).reshape(batch, V, 3, 4)
        verts = (blended[..., :3] * verts[:, :, None, :]).sum(-1) + blended[..., 3]
    rot, trans = world_from_head[:, :3, :3], world_from_head[:, :3, 3]
    return verts @ rot.transpose(1, 2) + trans[:, None]


class _Sequence(torch.nn.Module):
    """The parameters being fitted, and the model evaluated for chosen frames."""

    def __init__(self, model, frames: int, centre: np.ndarray, config: TrackingConfig, pose0: np.ndarray):
        super().__init__()
        self.model = model
        dtype = model.dtype
        self.ni = min(config.identity_modes, model.num_identity)
        self.identity = torch.nn.Parameter(torch.zeros(self.ni, dtype=dtype))
        self.expression = torch.nn.Parameter(torch.zeros(frames, model.num_expression, dtype=dtype))
        self.fit_joints = [j for j, n in enumerate(model.joint_names)
                           if "eye" in n.lower() or ("jaw" in n.lower() and "jawOpen" not in model.expression_names)]
        self.joints = torch.nn.Parameter(torch.zeros(frames, len(self.fit_joints), 3, dtype=dtype))
        rv = torch.as_tensor(_rotvec_from_matrix(pose0[:3, :3]), dtype=dtype)
        self.rotvec = torch.nn.Parameter(rv.repeat(frames, 1))
        self.centre = torch.as_tensor(centre, dtype=dtype)
        rot0 = torch.as_tensor(pose0[:3, :3], dtype=dtype)
        t0 = torch.as_tensor(pose0[:3, 3], dtype=dtype) - self.centre + rot0 @ self.centre
        self.translation = torch.nn.Parameter(t0.repeat(frames, 1))
        self.log_focal = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.bounded = "jawOpen" in model.expression_names or "eyeBlinkLeft" in model.expression_names

    def world_from_head(self, idx: Tensor) -> Tensor:
        rot = axis_angle_to_matrix(self.rotvec[idx])
        trans = self.centre + self.translation[idx] - rot @ self.centre
        top = torch.cat([rot, trans[..., None]], -1)
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype).expand(len(idx), 1, 4)
        return torch.cat([top, bottom], 1)

    def joint_rotations(self, idx: Tensor) -> Tensor | None:
        if self.model.num_joints == 0:
            return None
        full = torch.zeros(len(idx), self.model.num_joints, 3, dtype=self.model.dtype)
        if self.fit_joints:
            full = full.index_copy(1, torch.tensor(self.fit_joints), self.joints[idx])
        return full

    def vertices(self, idx: Tensor, head: LinearHead) -> Tensor:
        identity = self.identity[None].expand(len(idx), -1) if self.ni else None
        expression = self.expression[idx] if self.model.num_expression else None
        return model_vertices(head, identity, expression, self.joint_rotations(idx), self.world_from_head(idx))

    def project_bounds(self) -> None:
        with torch.no_grad():
            if self.bounded:
                self.expression.clamp_(0.0, 1.0)
            self.log_focal.clamp_(-0.7, 0.7)


def _surface_ids(model) -> Tensor:
    """Vertices of the outer surface (no eyeballs, teeth, mouth or eye sockets)."""
    interior = torch.zeros(model.num_vertices, dtype=torch.bool)
    for name in INTERIOR_REGIONS:
        mask = model.region_masks.get(name)
        if mask is not None:
            interior |= torch.as_tensor(mask, dtype=torch.bool)
    ids = (~interior).nonzero().squeeze(1)
    return ids if len(ids) else torch.arange(model.num_vertices)


class _Tracker:
    """The optimiser evaluates the model on a subset of the surface vertices (about
    `max_vertices`, plus the landmarks); visibility, normals and the results use the full mesh."""

    def __init__(self, model, frames: list[list[ViewObservation]], config: TrackingConfig,
                 meshes: Tensor | None, mesh_confidence: Tensor | None, progress: Callable[[str, int, int], None],
                 max_vertices: int = 3000):
        from headcap.reconstruct.shading import vertex_normals

        self.model, self.frames, self.config = model, frames, config
        self.progress = progress
        self.normals_of = lambda v: vertex_normals(v, model.faces)
        self.T = len(frames)
        with torch.no_grad():
            neutral = model.forward().vertices[0].double().numpy()
        self.centre = 0.5 * (neutral.min(0) + neutral.max(0))
        surface = _surface_ids(model)
        surf_faces = torch.isin(model.faces, surface).all(1)
        self.render_faces = model.faces[surf_faces] if surf_faces.any() else model.faces
        step = max(1, len(surface) // max_vertices)
        self.subset = torch.unique(torch.cat([surface[::step], model.landmark_ids.long()]))
        self.local = torch.full((model.num_vertices,), -1, dtype=torch.long)
        self.local[self.subset] = torch.arange(len(self.subset))
        self.lm_local = self.local[model.landmark_ids.long()]
        self.full_head = LinearHead.of(model)
        self.head = LinearHead.of(model, self.subset)
        self.meshes = meshes[:, self.subset] if meshes is not None else None
        self.mesh_confidence = mesh_confidence[:, self.subset] if mesh_confidence is not None else None
        self.landmark_weights = torch.ones(len(model.landmark_ids), dtype=model.dtype)
        if len(model.landmark_ids) == 68:
            self.landmark_weights[:17] = 0.3  # the jaw line is a silhouette, not a point on the skin
        pose0 = initial_pose(model, frames[0], self.centre)
        self.seq = _Sequence(model, self.T, self.centre, config, pose0)
        self.albedo = None
        self.sh = None
        self.cache: dict[int, tuple[list[Tensor], Tensor]] = {}

    # -------------------------------------------------------------- helpers
    def focal(self) -> Tensor | None:
        return torch.exp(self.seq.log_focal) if self.config.monocular else None

    def full_vertices(self, idx: list[int]) -> Tensor:
        return self.seq.vertices(torch.tensor(idx), self.full_head)

    @torch.no_grad()
    def refresh(self, t: int, verts: Tensor) -> None:
        """Frame t's visible vertices per view (subset positions) and subset normals, from the full mesh."""
        normals = self.normals_of(verts)
        visible = []
        for view in self.frames[t]:
            ids = self.local[visible_vertices(verts, self.render_faces, normals, view, self.focal())]
            visible.append(ids[ids >= 0])
        self.cache[t] = (visible, normals[self.subset])

    def frame_energy(self, t: int, verts: Tensor, photometric: str | None) -> dict[str, Tensor]:
        """Energies of frame t for subset vertices [V', 3]."""
        cfg = self.config
        visible, normals = self.cache[t]
        views = self.frames[t]
        sil = lm = photo = verts.sum() * 0.0
        focal = self.focal()
        for k, view in enumerate(views):
            pix, _ = view.camera.project(verts, focal)
            sil = sil + silhouette_energy(pix, None, view)
            if view.landmarks is not None and len(self.lm_local):
                lm = lm + landmark_energy(pix[self.lm_local], view, self.landmark_weights)
            if photometric and self.albedo is not None:
                image = view.image_coarse if photometric == "coarse" else view.image
                photo = photo + photometric_energy(pix, normals, visible[k], self.albedo, self.sh, image)
        n = len(views)
        out = {"silhouette": cfg.silhouette_weight * sil / n, "landmarks": cfg.landmark_weight * lm / n}
        if photometric:
            out["photometric"] = cfg.photometric_weight * photo / n
        if self.meshes is not None:
            conf = self.mesh_confidence[t] if self.mesh_confidence is not None else torch.ones(len(verts), dtype=verts.dtype)
            d2 = ((verts - self.meshes[t]) ** 2).sum(-1)
            out["mesh"] = cfg.mesh_weight * (conf * d2).sum() / conf.sum().clamp(min=1e-9)
        return out

    def priors(self, idx: Tensor) -> Tensor:
        cfg, seq = self.config, self.seq
        e = cfg.identity_prior * (seq.identity ** 2).sum() / max(self.T, 1) * len(idx)
        e = e + cfg.expression_prior * (seq.expression[idx] ** 2).sum()
        e = e + cfg.joint_prior * (seq.joints[idx] ** 2).sum()
        return e

    def optimise(self, idx: list[int], params: list[tuple[Tensor, float]], steps: int, photometric: str | None,
                 previous: Tensor | None = None) -> dict[str, float]:
        """Adam on `params` (tensor, step scale) for frames idx, linear learning-rate decay to 5%."""
        if steps == 0:
            return {}
        groups = [{"params": [p], "lr": self.config.learning_rate * s} for p, s in params]
        opt = torch.optim.Adam(groups)
        base = [g["lr"] for g in groups]
        index = torch.tensor(idx)
        last = {}
        for step in range(steps):
            frac = step / max(steps - 1, 1)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * (1.0 - 0.95 * frac)
            if step % 25 == 0 and photometric:
                with torch.no_grad():
                    verts_now = self.full_vertices(idx)
                for i, t in enumerate(idx):
                    self.refresh(t, verts_now[i])
            opt.zero_grad(set_to_none=True)
            verts = self.seq.vertices(index, self.head)
            total = self.priors(index)
            terms: dict[str, float] = {}
            for i, t in enumerate(idx):
                if t not in self.cache:
                    with torch.no_grad():
                        self.refresh(t, self.full_vertices([t])[0])
                for name, value in self.frame_energy(t, verts[i], photometric).items():
                    total = total + value
                    terms[name] = terms.get(name, 0.0) + float(value.detach()) / len(idx)
            if previous is not None:
                total = total + self.config.temporal_weight * ((verts[0] - previous) ** 2).sum(-1).mean()
            if len(idx) >= 3:
                accel = verts[2:] - 2 * verts[1:-1] + verts[:-2]
                total = total + self.config.temporal_weight * (accel ** 2).sum(-1).mean() * len(idx)
            total.backward()
            opt.step()
            self.seq.project_bounds()
            last = terms
        return last

    @torch.no_grad()
    def appearance(self, idx: list[int]) -> None:
        """Albedo (subset vertices) and SH lighting from the given frames (median / mean over frames)."""
        verts = self.full_vertices(idx)
        albedos, shs = [], []
        for i, t in enumerate(idx):
            self.refresh(t, verts[i])
            visible, normals = self.cache[t]
            a, s = estimate_appearance(verts[i][self.subset], normals, self.frames[t], visible, self.focal())
            albedos.append(a)
            shs.append(s)
        self.albedo = torch.stack(albedos).median(dim=0).values.to(self.model.dtype)
        self.sh = torch.stack(shs).mean(dim=0).to(self.model.dtype)

    # -------------------------------------------------------------- schedule
    def state(self, frames_done: int) -> dict[str, np.ndarray]:
        out = {name: p.detach().numpy().copy() for name, p in self.seq.named_parameters()}
        out["frames_done"] = np.array(frames_done)
        if self.albedo is not None:
            out["albedo"], out["sh"] = self.albedo.numpy().copy(), self.sh.numpy().copy()
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> int:
        with torch.no_grad():
            for name, p in self.seq.named_parameters():
                value = torch.as_tensor(np.asarray(state[name]), dtype=p.dtype)
                if value.shape != p.shape:
                    raise ValueError(f"track: checkpoint field {name!r} has shape {tuple(value.shape)}, "
                                     f"expected {tuple(p.shape)}")
                p.copy_(value)
        if "albedo" in state:
            self.albedo = torch.as_tensor(state["albedo"], dtype=self.model.dtype)
            self.sh = torch.as_tensor(state["sh"], dtype=self.model.dtype)
        return int(state["frames_done"])

    def run(self, resume: dict | None = None, checkpoint: Callable[[dict], None] | None = None) -> TrackingResult:
        cfg, seq = self.config, self.seq
        n1 = cfg.first_frame_iterations
        pose = [(seq.rotvec, 2.0), (seq.translation, 0.2)]
        shape = pose + [(seq.identity, 10.0), (seq.expression, 5.0), (seq.joints, 2.0)]
        use_photo = cfg.photometric_weight > 0
        done = self.load_state(resume) if resume else 0
        save = checkpoint or (lambda state: None)
        if done == 0:
            self.first_frame(pose, shape, n1, use_photo)
            done = 1
            save(self.state(done))
        self.sequential(done, use_photo, save)
        if cfg.global_iterations and self.T > 1:
            if use_photo:
                self.appearance(list(range(0, self.T, max(1, self.T // 8))))
            everything = self.per_frame_params() + [(seq.identity, 3.0)]
            if cfg.monocular:
                everything.append((seq.log_focal, 0.5))
            self.optimise(list(range(self.T)), everything, cfg.global_iterations, "fine" if use_photo else None)
            self.progress("global", 1, 1)
        return self.result(use_photo)

    def per_frame_params(self):
        seq = self.seq
        return [(seq.rotvec, 1.0), (seq.translation, 0.1), (seq.expression, 5.0), (seq.joints, 2.0)]

    def sequential(self, start: int, use_photo: bool, save) -> None:
        seq = self.seq
        for t in range(start, self.T):
            with torch.no_grad():
                for p in (seq.rotvec, seq.translation, seq.expression, seq.joints):
                    p[t] = p[t - 1] if t < 2 else p[t - 1] + 0.5 * (p[t - 1] - p[t - 2])
                seq.project_bounds()
                previous = seq.vertices(torch.tensor([t - 1]), self.head)[0]
            self.optimise([t], self.per_frame_params(), self.config.frame_iterations, "fine" if use_photo else None,
                          previous=previous)
            save(self.state(t + 1))
            self.progress("sequential", t, self.T - 1)

    def first_frame(self, pose, shape, n1: int, use_photo: bool) -> None:
        self.progress("first frame", 0, 3)
        self.optimise([0], pose, n1, None)
        self.progress("first frame", 1, 3)
        self.optimise([0], shape, n1, None)
        self.progress("first frame", 2, 3)
        if use_photo:
            self.appearance([0])
            self.optimise([0], shape, n1 // 2, "coarse")
            self.optimise([0], shape, n1 // 2, "fine")
        self.progress("first frame", 3, 3)

    @torch.no_grad()
    def result(self, use_photo: bool) -> TrackingResult:
        idx = torch.arange(self.T)
        verts = self.full_vertices(list(range(self.T)))
        residuals: dict[str, list[float]] = {}
        for t in range(self.T):
            self.refresh(t, verts[t])
            for name, value in self.frame_energy(t, verts[t][self.subset], "fine" if use_photo else None).items():
                residuals.setdefault(name, []).append(float(value))
        joints = self.seq.joint_rotations(idx)
        ident = torch.zeros(self.model.num_identity, dtype=self.model.dtype)
        ident[: self.seq.ni] = self.seq.identity
        albedo = torch.full((self.model.num_vertices, 3), 0.5, dtype=torch.float64)
        if self.albedo is not None:
            albedo[:] = self.albedo.double().median(dim=0).values
            albedo[self.subset] = self.albedo.double()
        return TrackingResult(
            identity=ident.double().numpy(), expression=self.seq.expression.double().numpy(),
            joint_rotations=(joints.double().numpy() if joints is not None else np.zeros((self.T, 0, 3))),
            world_from_head=self.seq.world_from_head(idx).double().numpy(),
            vertices=verts.double().numpy(),
            focal_scale=float(torch.exp(self.seq.log_focal)) if self.config.monocular else 1.0,
            albedo=albedo.numpy(), sh_coeffs=(self.sh.double().numpy() if self.sh is not None else np.zeros((9, 3))),
            residuals={k: np.asarray(v) for k, v in residuals.items()})


def track_sequence(model, frames: list[list[ViewObservation]], config: TrackingConfig = TrackingConfig(),
                   meshes: np.ndarray | None = None, mesh_confidence: np.ndarray | None = None,
                   progress: Callable[[str, int, int], None] | None = None, resume: dict | None = None,
                   checkpoint: Callable[[dict], None] | None = None) -> TrackingResult:
    """Fit `model` to frames[t][view] (reconstruct.tracking_terms.make_view). meshes: registered
    vertices [T, V, 3] in the model's topology (world metres), with optional confidence [T, V].
    checkpoint(state) is called after the first frame and after each sequential frame with plain
    arrays; passing such a state as `resume` continues from the frame after it."""
    if not frames or not all(frames):
        raise ValueError("track: every frame needs at least one view")
    if config.monocular and any(len(views) != 1 for views in frames):
        raise ValueError(f"track: monocular tracking takes one view per frame, got {[len(v) for v in frames][:5]}...")
    mesh_t = conf_t = None
    if meshes is not None:
        meshes = np.asarray(meshes)
        if meshes.shape != (len(frames), model.num_vertices, 3):
            raise ValueError(f"track: registered meshes: expected shape {(len(frames), model.num_vertices, 3)} "
                             f"(the head model's topology), got {meshes.shape}")
        mesh_t = torch.as_tensor(meshes, dtype=model.dtype)
        if mesh_confidence is not None:
            conf_t = torch.as_tensor(np.asarray(mesh_confidence), dtype=model.dtype).reshape(len(frames), -1)
    tracker = _Tracker(model, frames, config, mesh_t, conf_t, progress or (lambda *_: None))
    return tracker.run(resume, checkpoint)
