"""Head-model tracking: identity (shared), expression, joint rotations and head pose per frame
of any HeadModel, fitted to the views of a sequence (reconstruct.tracking_terms: silhouettes,
landmarks when present, a photometric term with estimated albedo and SH lighting, registered
meshes when present), with temporal smoothness.

Solver: Levenberg-Marquardt on iteratively reweighted residuals (Gauss-Newton steps with a
Marquardt damping accepted only when the robust energy falls). Vertex Jacobians are analytic
(the blendshape bases through the skinning's blended rotations, the head pose as a left
perturbation; joint rotations by forward-mode autograd), per-point projection Jacobians come from
autograd (any distortion model), image and distance-transform gradients are sampled bilinearly.

Schedule (coarse to fine):
  first frame: rigid pose on silhouettes (+ landmarks) -> + identity, expression, joints ->
               albedo and lighting estimated -> + photometric on blurred, then sharp images
               (albedo re-estimated between the two);
  sequential:  every further frame warm-started from the previous (constant velocity), identity
               held, a temporal term towards the previous frame;
  global:      every frame at once, identity (and, monocular, the focal length) shared through a
               Schur complement, a vertex-acceleration term.
Monocular (one camera): the same, with the focal length a parameter of the global pass.

The head pose is world_from_head = [R | c + t - R c] with R = exp(rotvec) about the neutral
head's centre c (decorrelates rotation from translation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headcap.reconstruct.lbs import axis_angle_to_matrix
from headcap.reconstruct.tracking_terms import (ViewObservation, estimate_appearance, sample_image, sh_shading,
                                                visible_vertices)

__all__ = ["TrackingConfig", "TrackingResult", "track_sequence", "initial_pose", "model_vertices", "local_vertices", "LinearHead",
           "INTERIOR_REGIONS"]

INTERIOR_REGIONS = ("eyeball_left", "eyeball_right", "eyes", "teeth", "teeth_upper", "teeth_lower", "tongue",
                    "gums_tongue", "mouth_socket", "eye_socket_left", "eye_socket_right", "lacrimal_fluid",
                    "eye_blend", "eye_occlusion", "eyelashes")


@dataclass(frozen=True)
class TrackingConfig:
    first_frame_iterations: int = 12
    """Gauss-Newton iterations per level (rigid, shape, photometric) on the first frame."""
    frame_iterations: int = 6
    """Gauss-Newton iterations per further frame of the sequential pass."""
    global_iterations: int = 4
    """Gauss-Newton iterations of the global pass over every frame (0: none)."""
    silhouette_weight: float = 1.0
    """Weight of the silhouette term (px^2)."""
    landmark_weight: float | None = None
    """Weight of the landmark term (px^2; used when landmarks are given). None: 1.0 for a rig,
    0.5 monocular (one view: a detector's offsets from the model's landmark vertices are not
    averaged over views, so the silhouette and photometric terms get more say)."""
    photometric_weight: float = 0.5
    """Weight of the photometric term (percent of full scale)."""
    mesh_weight: float = 1e8
    """Weight of the registered-mesh term (m^2, confidence-weighted mean; used when meshes are
    given): 0.1 mm RMS costs what 1 px RMS of silhouette does. At 1e6 a 512 px silhouette's
    sub-pixel bias, the priors and the temporal term outweighed registrations that are good to
    0.3 mm (the chain on 16 x 512 px: 0.74 mm and 0.58 deg at 1e6, 0.40 mm and 0.12 deg at 1e8)."""
    identity_prior: float = 0.5
    """Weight of the identity coefficients' squared norm."""
    expression_prior: float = 0.05
    """Weight of the expression coefficients' squared norm."""
    joint_prior: float = 5.0
    """Weight of the fitted joints' squared rotation (radians)."""
    temporal_weight: float | None = None
    """Weight of the squared vertex acceleration (m^2) over time. None: 1e4 for a rig, 3e4
    monocular (one view's landmark noise goes straight into the fit)."""
    identity_modes: int = 50
    """Identity modes fitted (at most the model's)."""
    damping: float = 1e-3
    """Levenberg-Marquardt's initial damping (relative to the normal matrix's diagonal)."""
    monocular: bool = False
    """One camera: the focal length is estimated too."""

    def __post_init__(self):
        for name, rig, mono in (("landmark_weight", 1.0, 0.5), ("temporal_weight", 1e4, 3e4)):
            if getattr(self, name) is None:  # frozen: the mode's default filled in once
                object.__setattr__(self, name, mono if self.monocular is True else rig)
        for name in ("first_frame_iterations", "frame_iterations", "global_iterations", "identity_modes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"track: field '{name}' must be an integer >= 0, got {value!r}")
        for name in ("silhouette_weight", "landmark_weight", "photometric_weight", "mesh_weight", "identity_prior",
                     "expression_prior", "joint_prior", "temporal_weight", "damping"):
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


def local_vertices(head: LinearHead, identity: Tensor | None, expression: Tensor | None,
                   joint_rotations: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The head-frame vertices [B, V', 3] of HeadModel.forward (before world_from_head), and the
    skinning's blended linear part [B, V', 3, 3] (None without joints): d vertex / d shaped vertex,
    what the blendshape bases are multiplied by in the tracker's Jacobians."""
    from headcap.reconstruct.lbs import joint_transforms, pose_feature

    batch = 1
    for value in (identity, expression, joint_rotations):
        if value is not None:
            batch = value.shape[0]
    V = head.template.shape[0]
    verts = head.template.reshape(1, -1).expand(batch, -1)
    if identity is not None:
        verts = verts + identity @ head.identity_basis[: identity.shape[1]]
    if expression is not None:
        verts = verts + expression @ head.expression_basis[: expression.shape[1]]
    verts = verts.reshape(batch, V, 3)
    if head.joint_template is None or joint_rotations is None:
        return verts, None
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
    return (blended[..., :3] * verts[:, :, None, :]).sum(-1) + blended[..., 3], blended[..., :3]


def model_vertices(head: LinearHead, identity: Tensor | None, expression: Tensor | None, joint_rotations: Tensor | None,
                   world_from_head: Tensor) -> Tensor:
    """HeadModel.forward's vertices [B, V', 3] (of the LinearHead's vertices), evaluated with flat
    matrix products instead of one small product per vertex (several times faster forward and
    backward on the CPU; compared with HeadModel.forward in the tests)."""
    verts, _ = local_vertices(head, identity, expression, joint_rotations)
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

    @torch.no_grad()
    def set_from(self, init: dict[str, np.ndarray]) -> None:
        """Every frame's parameters from another fit of the same model (the registration's):
        identity [Ni], expression [T, Ne], world_from_head [T, 4, 4], joint_rotations [T, J, 3]."""
        dtype = self.identity.dtype
        if self.ni:
            self.identity.copy_(torch.as_tensor(np.asarray(init["identity"])[: self.ni], dtype=dtype))
        if self.model.num_expression:
            self.expression.copy_(torch.as_tensor(init["expression"], dtype=dtype))
        if self.fit_joints and "joint_rotations" in init:
            self.joints.copy_(torch.as_tensor(np.asarray(init["joint_rotations"])[:, self.fit_joints], dtype=dtype))
        centre = self.centre.double().numpy()
        for t, pose in enumerate(np.asarray(init["world_from_head"], np.float64)):
            self.rotvec[t] = torch.as_tensor(_rotvec_from_matrix(pose[:3, :3]), dtype=dtype)
            self.translation[t] = torch.as_tensor(pose[:3, 3] - centre + pose[:3, :3] @ centre, dtype=dtype)
        self.project_bounds()

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


def _skew(v: Tensor) -> Tensor:
    """[N, 3] -> [N, 3, 3] cross-product matrices."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)


def _rowwise(a: Tensor, b: Tensor) -> Tensor:
    """a [N, R, K] @ b [N, K, P] per row N (as broadcast products: faster than a batched matmul
    of many tiny matrices on the CPU)."""
    out = a[:, :, 0, None] * b[:, None, 0]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k, None] * b[:, None, k]
    return out


def _gradient_image(image: Tensor) -> Tensor:
    """[1, C, H, W] -> [1, 2C, H, W]: central differences along x (first C) and y (last C)."""
    pad = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2])
    gy = 0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])
    return torch.cat([gx, gy], 1)


@dataclass
class _Layout:
    """Which parameters a Gauss-Newton system solves for, and their columns."""

    shape: bool       # expression (and fitted joints)
    identity: bool
    focal: bool
    ne: int
    nj: int           # fitted joint parameters (3 per joint)
    ni: int

    @property
    def frame_size(self) -> int:
        return 6 + (self.ne + self.nj if self.shape else 0)

    @property
    def shared_size(self) -> int:
        return (self.ni if self.identity else 0) + (1 if self.focal else 0)

    @property
    def size(self) -> int:
        return self.frame_size + self.shared_size


class _System:
    """Normal equations A x = -g of weighted residual rows (float64), and the robust energy."""

    def __init__(self, size: int):
        self.A = torch.zeros(size, size, dtype=torch.float64)
        self.g = torch.zeros(size, dtype=torch.float64)

    def add(self, rows: Tensor, jac: Tensor) -> None:
        """rows [n], jac [n, P]: the quadratic model sum(rows^2) near the current parameters."""
        if len(rows):
            jac = jac.double()
            self.A += jac.T @ jac
            self.g += jac.T @ rows.double()


class _Tracker:
    """Levenberg-Marquardt over the head model's parameters. The optimiser evaluates the model on
    a subset of the surface vertices (about `max_vertices`, plus the landmarks); visibility,
    normals and the results use the full mesh."""

    def __init__(self, model, frames: list[list[ViewObservation]], config: TrackingConfig,
                 meshes: Tensor | None, mesh_confidence: Tensor | None, progress: Callable[[str, int, int], None],
                 max_vertices: int = 3000, init: dict[str, np.ndarray] | None = None):
        from headcap.reconstruct.shading import vertex_normals

        if init is not None and "identity" in init:  # every identity mode the starting fit uses
            used = np.flatnonzero(np.abs(np.asarray(init["identity"])) > 0)
            if len(used) and used[-1] + 1 > config.identity_modes:
                config = replace(config, identity_modes=int(min(model.num_identity, used[-1] + 1)))

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
        self.meshes = meshes[:, self.subset].double() if meshes is not None else None
        self.mesh_confidence = mesh_confidence[:, self.subset].double() if mesh_confidence is not None else None
        self.landmark_weights = torch.ones(len(model.landmark_ids), dtype=torch.float64)
        if len(model.landmark_ids) == 68:
            self.landmark_weights[:17] = 0.3  # the jaw line is a silhouette, not a point on the skin
        pose0 = initial_pose(model, frames[0], self.centre) if init is None else init["world_from_head"][0]
        self.seq = _Sequence(model, self.T, self.centre, config, pose0)
        self.initialised = init is not None
        if init is not None:
            self.seq.set_from(init)
        for p in self.seq.parameters():  # Gauss-Newton: Jacobians are formed explicitly, no autograd
            p.requires_grad_(False)
        V = len(self.subset)
        head = self.head
        self.expr_basis = head.expression_basis.double().reshape(-1, V, 3).permute(1, 2, 0).contiguous()
        self.ident_basis = head.identity_basis[: self.seq.ni].double().reshape(-1, V, 3).permute(1, 2, 0).contiguous()
        # fitted joints that move none of the optimised vertices (eyeballs are interior) stay at zero
        self.joint_free = False
        if self.seq.fit_joints and head.lbs_weights is not None:
            moved = set(self.seq.fit_joints)
            for j, p in enumerate(model.parents.tolist()):
                if p in moved:
                    moved.add(j)
            rows = (head.lbs_weights[:, sorted(moved)].abs().sum(1) > 1e-9).nonzero().squeeze(1)
            self.joint_free = len(rows) > 0
            if self.joint_free:  # the vertices the fitted joints move, in float64 for finite differences
                self.joint_rows = rows
                self.joint_head = LinearHead(**{k: (v.double() if isinstance(v, Tensor) and v.is_floating_point() else v)
                                                for k, v in vars(LinearHead.of(model, self.subset[rows])).items()})
        self.albedo = None
        self.sh = None
        self.cache: dict[int, tuple[list[Tensor], Tensor]] = {}
        self.matches: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self.gradients: dict[int, dict[str, Tensor]] = {}

    # -------------------------------------------------------------- helpers
    def layout(self, shape: bool, identity: bool, focal: bool) -> _Layout:
        nj = 3 * len(self.seq.fit_joints) if self.joint_free else 0
        return _Layout(shape, identity and self.seq.ni > 0, focal and self.config.monocular,
                       self.model.num_expression, nj, self.seq.ni)

    def focal(self) -> Tensor | None:
        return torch.exp(self.seq.log_focal) if self.config.monocular else None

    def full_vertices(self, idx: list[int]) -> Tensor:
        return self.seq.vertices(torch.tensor(idx), self.full_head)

    @torch.no_grad()
    def subset_vertices(self, t: int) -> Tensor:
        return self.seq.vertices(torch.tensor([t]), self.head)[0].double()

    def view_gradients(self, view: ViewObservation) -> dict[str, Tensor]:
        key = id(view)
        if key not in self.gradients:
            self.gradients[key] = {"outside": _gradient_image(view.outside_distance),
                                   "fine": _gradient_image(view.image), "coarse": _gradient_image(view.image_coarse)}
        return self.gradients[key]

    @torch.no_grad()
    def refresh(self, t: int, verts: Tensor | None = None) -> None:
        """Frame t's visible vertices per view (subset positions) and subset normals, from the full mesh."""
        if verts is None:
            verts = self.full_vertices([t])[0]
        normals = self.normals_of(verts)
        visible = []
        for view in self.frames[t]:
            ids = self.local[visible_vertices(verts, self.render_faces, normals, view, self.focal())]
            visible.append(ids[ids >= 0])
        self.cache[t] = (visible, normals[self.subset])

    @torch.no_grad()
    def linearize(self, t: int, lay: _Layout) -> tuple[Tensor, Tensor]:
        """Frame t's subset vertices X [V', 3] (float64) and d X / d parameters [V', 3, P] in
        the layout's column order (rotation as a left perturbation about the head centre)."""
        seq, head = self.seq, self.head
        idx = torch.tensor([t])
        identity = seq.identity[None] if seq.ni else None
        expression = seq.expression[idx] if self.model.num_expression else None
        joints = seq.joint_rotations(idx)
        local, blend = local_vertices(head, identity, expression, joints)
        local = local[0].double()
        pose = seq.world_from_head(idx)[0].double()
        rot, trans = pose[:3, :3], pose[:3, 3]
        X = local @ rot.T + trans
        V = len(X)
        centre = torch.as_tensor(self.centre, dtype=torch.float64)
        cols = [-_skew((local - centre) @ rot.T), torch.eye(3, dtype=torch.float64).expand(V, 3, 3)]
        lin = rot if blend is None else rot @ blend[0].double()  # [3, 3] or [V', 3, 3]
        if lay.shape:
            if lay.ne:
                cols.append(lin @ self.expr_basis)
            if lay.nj:  # forward differences over the few joint parameters, on the vertices they move
                fit = torch.tensor(seq.fit_joints)
                ident_d = None if identity is None else identity.double()
                expr_d = None if expression is None else expression.double()

                def posed(z):
                    full = torch.zeros(1, self.model.num_joints, 3, dtype=torch.float64).index_copy(1, fit, z.reshape(1, -1, 3))
                    return local_vertices(self.joint_head, ident_d, expr_d, full)[0][0]

                z0 = seq.joints[t].reshape(-1).double()
                x0, step = posed(z0), 1e-6
                jac = torch.zeros(V, 3, lay.nj, dtype=torch.float64)
                for k in range(lay.nj):
                    jac[self.joint_rows, :, k] = (posed(z0 + step * torch.eye(lay.nj, dtype=torch.float64)[k]) - x0) / step
                cols.append(rot @ jac)
        if lay.identity:
            cols.append(lin @ self.ident_basis)
        if lay.focal:
            cols.append(torch.zeros(V, 3, 1, dtype=torch.float64))
        return X, torch.cat(cols, -1)

    def frame_terms(self, t: int, X: Tensor, JX: Tensor | None, photometric: str | None,
                    system: _System | None, focal_col: int | None = None) -> dict[str, float]:
        """Frame t's data terms at subset vertices X [V', 3] (float64): the robust energy per term,
        and, with JX and a system, their reweighted Gauss-Newton rows added to it."""
        cfg = self.config
        views = self.frames[t]
        n = len(views)
        focal = self.focal()
        out = {"silhouette": 0.0, "landmarks": 0.0}
        if photometric:
            out["photometric"] = 0.0
        visible, normals = self.cache[t]
        V = len(X)
        for k, view in enumerate(views):
            grads = self.view_gradients(view)
            if system is not None:
                pix, d_pix = view.camera.project_with_jacobian(X, None if focal is None else focal.double())
                jpix = _rowwise(d_pix, JX)  # [V', 2, P]
                if focal_col is not None:  # d pixel / d log focal (the focal scales K's 2x2 block)
                    jpix[:, :, focal_col] = pix - view.camera.K[:2, 2].double()
            else:
                with torch.no_grad():
                    pix, _ = view.camera.project(X, None if focal is None else focal.double())
            # silhouette: projected vertices inside the mask
            scale = cfg.silhouette_weight / n
            outside = sample_image(view.outside_distance, pix)[:, 0].double() - 1.0
            active = outside > 0
            out["silhouette"] += scale * float((outside.clamp(min=0) ** 2).sum()) / V
            if system is not None and active.any():
                w = math.sqrt(scale / V)
                grad = sample_image(grads["outside"], pix[active]).double()  # [n, 2]
                system.add(w * outside[active], w * _rowwise(grad[:, None], jpix[active])[:, 0])
            # silhouette: every outline pixel near the projected mesh's outline (point to line:
            # the distance along the mask outline's normal to the nearest projected vertex)
            if len(view.outline):
                from scipy.spatial import cKDTree

                # matches are made when linearising and held while a step is tried (the
                # energy a step must lower is then smooth in the parameters, as in ICP)
                if system is not None or (t, k) not in self.matches:
                    nearest = torch.from_numpy(cKDTree(pix.numpy()).query(view.outline.numpy())[1])
                    keep = ((pix[nearest] - view.outline.double()) ** 2).sum(-1) < 900.0
                    self.matches[(t, k)] = (nearest, keep)
                nearest, keep = self.matches[(t, k)]
                diff = pix[nearest] - view.outline.double()
                along = (diff * view.outline_normals.double()).sum(-1)
                out["silhouette"] += scale * float(torch.where(keep, along ** 2, torch.full_like(along, 900.0)).mean())
                if system is not None:
                    w = math.sqrt(scale / len(view.outline))
                    jac = _rowwise(view.outline_normals.double()[keep][:, None], jpix[nearest[keep]])[:, 0]
                    system.add(w * along[keep], w * jac)
            # landmarks (Huber)
            if view.landmarks is not None and len(self.lm_local):
                obs = view.landmarks.double()
                ok = torch.isfinite(obs).all(-1)
                if ok.any():
                    weights = self.landmark_weights[ok] / self.landmark_weights[ok].sum()
                    diff = pix[self.lm_local][ok] - obs[ok]
                    r = diff.norm(dim=-1)
                    delta = 3.0
                    huber = torch.where(r < delta, 0.5 * r ** 2, delta * (r - 0.5 * delta))
                    out["landmarks"] += cfg.landmark_weight / n * float((weights * huber).sum())
                    if system is not None:
                        irls = torch.where(r < delta, torch.ones_like(r), delta / r.clamp(min=1e-12))
                        w = torch.sqrt(cfg.landmark_weight / n * weights * 0.5 * irls)
                        system.add((w[:, None] * diff).reshape(-1),
                                   (w[:, None, None] * jpix[self.lm_local][ok]).reshape(-1, JX.shape[-1]))
            # photometric (Charbonnier, percent of full scale)
            if photometric and self.albedo is not None and len(visible[k]):
                vis = visible[k]
                image = view.image_coarse if photometric == "coarse" else view.image
                observed = sample_image(image, pix[vis]).double()
                predicted = (self.albedo[vis] * sh_shading(normals[vis], self.sh)).double()
                r = (observed - predicted) * 100.0
                eps = 2.0
                root = torch.sqrt(r ** 2 + eps ** 2)
                scale_p = cfg.photometric_weight / n / r.numel()
                out["photometric"] += scale_p * float((root - eps).sum())
                if system is not None:
                    grad = sample_image(grads[photometric], pix[vis]).double().reshape(-1, 2, 3).transpose(1, 2) * 100.0
                    w = torch.sqrt(scale_p * 0.5 / root)  # IRLS weight of the Charbonnier penalty
                    system.add((w * r).reshape(-1), (w[..., None] * _rowwise(grad, jpix[vis])).reshape(-1, JX.shape[-1]))
        if self.meshes is not None:
            conf = self.mesh_confidence[t] if self.mesh_confidence is not None else torch.ones(V, dtype=torch.float64)
            weight = cfg.mesh_weight * conf / conf.sum().clamp(min=1e-9)
            diff = X - self.meshes[t]
            out["mesh"] = float((weight * (diff ** 2).sum(-1)).sum())
            if system is not None:
                w = weight.sqrt()
                system.add((w[:, None] * diff).reshape(-1), (w[:, None, None] * JX).reshape(-1, JX.shape[-1]))
        return out

    def add_priors(self, t: int, lay: _Layout, system: _System | None, identity_share: float) -> float:
        """Squared-norm priors of frame t's free parameters (and the identity's share)."""
        cfg, seq = self.config, self.seq
        energy = 0.0
        col = 6
        blocks = []
        if lay.shape:
            blocks.append((seq.expression[t], cfg.expression_prior, col))
            col += lay.ne
            if lay.nj:
                blocks.append((seq.joints[t].reshape(-1), cfg.joint_prior, col))
                col += lay.nj
        if lay.identity and identity_share > 0:
            blocks.append((seq.identity, cfg.identity_prior * identity_share, col))
        for value, weight, start in blocks:
            value = value.detach().double()
            energy += weight * float((value ** 2).sum())
            if system is not None and len(value):
                ids = torch.arange(start, start + len(value))
                system.A[ids, ids] += weight
                system.g[ids] += weight * value
        return energy

    def temporal_rows(self, X: Tensor, JX: Tensor | None, targets: list[tuple[Tensor, float, float]],
                      system: _System | None) -> float:
        """sum_k weight_k * mean_v |coef_k X - target_k|^2 over (target [V', 3], coef, weight)."""
        energy = 0.0
        V = len(X)
        for target, coef, weight in targets:
            diff = coef * X - target
            energy += weight * float((diff ** 2).sum()) / V
            if system is not None:
                w = math.sqrt(weight / V)
                system.add(w * diff.reshape(-1), (w * coef) * JX.reshape(-1, JX.shape[-1]))
        return energy

    # -------------------------------------------------------------- parameters
    def snapshot(self) -> list[Tensor]:
        return [p.detach().clone() for p in self.seq.parameters()]

    @torch.no_grad()
    def restore(self, saved: list[Tensor]) -> None:
        for p, value in zip(self.seq.parameters(), saved):
            p.copy_(value)

    @torch.no_grad()
    def apply(self, t: int, lay: _Layout, delta: Tensor, shared: bool = True) -> None:
        """Add a step to frame t's parameters (and the shared ones when `shared`)."""
        seq = self.seq
        delta = delta.to(seq.rotvec.dtype)
        rot = axis_angle_to_matrix(delta[None, :3])[0] @ axis_angle_to_matrix(seq.rotvec[t:t + 1])[0]
        seq.rotvec[t] = torch.as_tensor(_rotvec_from_matrix(rot.double().numpy()), dtype=seq.rotvec.dtype)
        seq.translation[t] += delta[3:6]
        col = 6
        if lay.shape:
            seq.expression[t] += delta[col:col + lay.ne]
            col += lay.ne
            if lay.nj:
                seq.joints[t] += delta[col:col + lay.nj].reshape(-1, 3)
                col += lay.nj
        if shared:
            if lay.identity:
                seq.identity += delta[col:col + lay.ni]
                col += lay.ni
            if lay.focal:
                seq.log_focal += delta[col]
        seq.project_bounds()

    # -------------------------------------------------------------- solvers
    def frame_energy_total(self, t: int, lay: _Layout, photometric: str | None, temporal, identity_share: float,
                           system: _System | None = None, X: Tensor | None = None, JX: Tensor | None = None
                           ) -> tuple[float, dict[str, float]]:
        if X is None:
            X = self.subset_vertices(t)
        terms = self.frame_terms(t, X, JX, photometric, system, lay.size - 1 if lay.focal else None)
        energy = sum(terms.values()) + self.add_priors(t, lay, system, identity_share)
        if temporal:
            energy += self.temporal_rows(X, JX, temporal(t), system)
        return energy, terms

    def solve_frame(self, t: int, lay: _Layout, iterations: int, photometric: str | None,
                    temporal=None, refresh_every: int = 3) -> dict[str, float]:
        """Levenberg-Marquardt on frame t alone (with the shared parameters the layout frees)."""
        share = 1.0 / max(self.T, 1)
        mu = self.config.damping
        terms: dict[str, float] = {}
        for it in range(iterations):
            if t not in self.cache or (photometric and it % refresh_every == 0):
                self.refresh(t)
            X, JX = self.linearize(t, lay)
            system = _System(lay.size)
            energy, terms = self.frame_energy_total(t, lay, photometric, temporal, share, system, X, JX)
            self._fix_bounds(system, lay, t)
            accepted = False
            for _ in range(5):
                step = self._solve(system, mu)
                saved = self.snapshot()
                self.apply(t, lay, step)
                trial, trial_terms = self.frame_energy_total(t, lay, photometric, temporal, share)
                if trial < energy:
                    mu = max(mu / 3.0, 1e-7)
                    accepted, terms = True, trial_terms
                    break
                self.restore(saved)
                mu *= 6.0
            if not accepted or energy - trial < 1e-7 * max(energy, 1e-12):
                break
        return terms

    def _fix_bounds(self, system: _System, lay: _Layout, t: int) -> None:
        """Box-bounded expression weights at a bound whose gradient points out of the box are
        held for this step (their rows and columns become the identity's)."""
        if not (self.seq.bounded and lay.shape and lay.ne):
            return
        value = self.seq.expression[t].detach().double()
        g = system.g[6:6 + lay.ne]
        held = ((value <= 1e-9) & (g > 0)) | ((value >= 1.0 - 1e-9) & (g < 0))
        ids = held.nonzero().squeeze(1) + 6
        if len(ids):
            system.A[ids, :] = 0.0
            system.A[:, ids] = 0.0
            system.A[ids, ids] = 1.0
            system.g[ids] = 0.0

    @staticmethod
    def _solve(system: _System, mu: float) -> Tensor:
        A = system.A
        diag = A.diagonal().clamp(min=1e-12)
        damped = A + torch.diag(mu * diag + 1e-12)
        try:
            return -torch.linalg.solve(damped, system.g)
        except RuntimeError:  # singular: fall back to least squares
            return -torch.linalg.lstsq(damped, system.g[:, None]).solution[:, 0]

    def solve_global(self, iterations: int, photometric: str | None) -> None:
        """Levenberg-Marquardt over every frame: frame blocks eliminated (Schur complement) onto
        the shared identity (and focal length), a vertex-acceleration term between frames
        (linearised with the neighbours held, energy checked on the whole sequence)."""
        lay = self.layout(shape=True, identity=True, focal=True)
        F_, S_ = lay.frame_size, lay.shared_size
        mu = self.config.damping
        T = self.T
        acc_w = self.config.temporal_weight * T / max(T - 2, 1) if T >= 3 else 0.0

        def temporal_for(Xs):
            def fn(t):
                out = []
                if acc_w == 0:
                    return out
                for centre, coef in ((t - 1, 1.0), (t, -2.0), (t + 1, 1.0)):
                    if 1 <= centre <= T - 2:
                        others = {centre - 1: 1.0, centre: -2.0, centre + 1: 1.0}
                        rest = sum(c * Xs[s] for s, c in others.items() if s != t)
                        out.append((-rest, coef, acc_w))
                return out
            return fn

        share = 1.0 / T  # each frame's system carries its share of the identity prior

        def acceleration_energy(Xs):
            if not acc_w:
                return 0.0
            accel = torch.stack([Xs[t - 1] - 2 * Xs[t] + Xs[t + 1] for t in range(1, T - 1)])
            return acc_w * float((accel ** 2).sum(-1).mean(-1).sum())

        def total_energy():
            Xs = [self.subset_vertices(t) for t in range(T)]
            return acceleration_energy(Xs) + sum(self.frame_energy_total(t, lay, photometric, None, share, X=Xs[t])[0]
                                                 for t in range(T))

        for it in range(iterations):
            for t in range(T):
                if photometric and (t not in self.cache or it % 2 == 0):
                    self.refresh(t)
            Xs = [self.subset_vertices(t) for t in range(T)]
            temporal = temporal_for(Xs)
            S = torch.zeros(S_, S_, dtype=torch.float64)
            rhs = torch.zeros(S_, dtype=torch.float64)
            blocks = []
            energy = acceleration_energy(Xs)
            for t in range(T):
                X, JX = self.linearize(t, lay)
                system = _System(lay.size)
                energy += self.frame_energy_total(t, lay, photometric, None, share, system, X, JX)[0]
                # the acceleration rows of the terms frame t is in (their energy is counted above)
                self.temporal_rows(X, JX, temporal(t), system)
                self._fix_bounds(system, lay, t)
                blocks.append(system)
            accepted = False
            for _ in range(5):
                factors = []
                S.zero_()
                rhs.zero_()
                for system in blocks:
                    A = system.A
                    Aff = A[:F_, :F_] + torch.diag(mu * A[:F_, :F_].diagonal().clamp(min=1e-12) + 1e-12)
                    Afs, gf = A[:F_, F_:], system.g[:F_]
                    L = torch.linalg.cholesky(Aff)
                    sol = torch.cholesky_solve(torch.cat([Afs, gf[:, None]], 1), L)
                    factors.append(sol)
                    if S_:
                        S += A[F_:, F_:] - Afs.T @ sol[:, :S_]
                        rhs += system.g[F_:] - Afs.T @ sol[:, S_]
                if S_:
                    S_damped = S + torch.diag(mu * S.diagonal().clamp(min=1e-12) + 1e-12)
                    d_shared = -torch.linalg.solve(S_damped, rhs)
                else:
                    d_shared = torch.zeros(0, dtype=torch.float64)
                saved = self.snapshot()
                for t, sol in enumerate(factors):  # columns: the shared block's S_, then the gradient's
                    d_frame = -sol[:, S_] - sol[:, :S_] @ d_shared
                    self.apply(t, lay, torch.cat([d_frame, d_shared]), shared=(t == T - 1))
                trial = total_energy()
                if trial < energy:
                    mu = max(mu / 3.0, 1e-7)
                    accepted = True
                    break
                self.restore(saved)
                mu *= 6.0
            if not accepted:
                break
            self.progress("global", it + 1, iterations)

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
        cfg = self.config
        use_photo = cfg.photometric_weight > 0
        done = self.load_state(resume) if resume else 0
        save = checkpoint or (lambda state: None)
        if done == 0:
            self.first_frame(cfg.first_frame_iterations, use_photo)
            done = 1
            save(self.state(done))
        self.sequential(done, use_photo, save)
        if cfg.global_iterations and self.T > 1:
            if use_photo:
                self.appearance(list(range(0, self.T, max(1, self.T // 8))))
            self.solve_global(cfg.global_iterations, "fine" if use_photo else None)
        return self.result(use_photo)

    def first_frame(self, iterations: int, use_photo: bool) -> None:
        rigid = self.layout(shape=False, identity=False, focal=False)
        shape = self.layout(shape=True, identity=True, focal=False)
        self.progress("first frame", 0, 3)
        self.solve_frame(0, rigid, iterations, None)
        self.progress("first frame", 1, 3)
        self.solve_frame(0, shape, iterations, None)
        self.progress("first frame", 2, 3)
        if use_photo:
            for level in ("coarse", "fine"):
                self.appearance([0])
                self.solve_frame(0, shape, max(1, iterations // 2), level)
        self.progress("first frame", 3, 3)

    def sequential(self, start: int, use_photo: bool, save) -> None:
        seq = self.seq
        lay = self.layout(shape=True, identity=False, focal=False)
        weight = self.config.temporal_weight
        for t in range(start, self.T):
            if not self.initialised:  # else frame t starts from its own registration
                with torch.no_grad():
                    for p in (seq.rotvec, seq.translation, seq.expression, seq.joints):
                        p[t] = p[t - 1] if t < 2 else p[t - 1] + 0.5 * (p[t - 1] - p[t - 2])
                    seq.project_bounds()
            previous = self.subset_vertices(t - 1)
            self.solve_frame(t, lay, self.config.frame_iterations, "fine" if use_photo else None,
                             temporal=lambda _t, prev=previous: [(prev, 1.0, weight)])
            save(self.state(t + 1))
            self.progress("sequential", t, self.T - 1)

    @torch.no_grad()
    def result(self, use_photo: bool) -> TrackingResult:
        idx = torch.arange(self.T)
        verts = self.full_vertices(list(range(self.T)))
        residuals: dict[str, list[float]] = {}
        for t in range(self.T):
            self.refresh(t, verts[t])
            for name, value in self.frame_terms(t, verts[t][self.subset].double(), None,
                                                "fine" if use_photo else None, None).items():
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
                   checkpoint: Callable[[dict], None] | None = None,
                   init: dict[str, np.ndarray] | None = None) -> TrackingResult:
    """Fit `model` to frames[t][view] (reconstruct.tracking_terms.make_view). meshes: registered
    vertices [T, V, 3] in the model's topology (world metres), with optional confidence [T, V].
    init: a fit of the same model to start every frame from (tracking_io.read_registration_params:
    the registration's identity, expressions, joints and poses; every identity mode it uses is
    then fitted, beyond `identity_modes`).
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
    from headcap.core.threads import serial_torch_ops

    # small tensors (~10^3 vertices x ~10^2 parameters): torch's pool would mostly spin-wait
    # (issue #20); the mesh rasterizer keeps its own threads
    with serial_torch_ops():
        if init is not None:
            for key, shape in (("identity", (model.num_identity,)), ("expression", (len(frames), model.num_expression)),
                               ("world_from_head", (len(frames), 4, 4))):
                if np.shape(init.get(key)) != shape:
                    raise ValueError(f"track: init field '{key}': expected shape {shape}, got {np.shape(init.get(key))}")
        tracker = _Tracker(model, frames, config, mesh_t, conf_t, progress or (lambda *_: None), init=init)
        return tracker.run(resume, checkpoint)
