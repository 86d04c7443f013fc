"""Registration, step 2: fit a head model to per-frame point clouds.

One identity for the whole sequence; per frame an expression, the jaw and eye joints and a rigid
correction of the head pose. The energy is minimised by Levenberg-Marquardt on iteratively
reweighted residuals (Jacobians by torch forward-mode autograd, expression weights boxed to
[0, 1] by an active set), with correspondences recomputed between rounds (every cloud point -> its nearest model vertex, kept when the normals
agree and the distance is under a gate that shrinks from round to round):

    E = mean_k  GM_sigma( (n_v . (v - p_k))^2 + tangent * |v - p_k|^2 )      data, in mm
      + landmark * mean_l  Huber(|lm_l - L_l|)                                  triangulated iBUG-68
      + identity_prior * |identity|^2 + expression_prior * |expression|^2
      + bounds * |expression outside [0, 1]|^2 + joint_prior * |joints|^2

GM is the Geman-McClure kernel (outliers cost at most sigma^2); residuals are in millimetres so
that the weights below are scale-free numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from headcap.reconstruct.head_model import HeadModel
from headcap.reconstruct.registration_rigid import PointCloud
from headcap.reconstruct.lbs import axis_angle_to_matrix, lbs

__all__ = ["FitConfig", "FitResult", "fit_head_model", "fit_vertex_mask", "fit_faces", "INTERIOR_REGIONS",
           "OVERLAY_REGIONS", "match_faces", "absorbed_points",
           "fitted_joints", "closest_on_triangles", "closest_on_mesh", "vertex_rings"]

#: regions no camera sees from outside (or only through the lips): left out of the data term
INTERIOR_REGIONS = ("teeth", "teeth_upper", "teeth_lower", "tongue", "gums_tongue", "mouth_socket",
                    "eye_socket_left", "eye_socket_right", "lacrimal_fluid", "eye_blend", "eye_occlusion",
                    "eyelashes")


def fit_vertex_mask(model: HeadModel) -> np.ndarray:
    """[V] bool: vertices on the outer surface (in a triangle, in no interior region)."""
    mask = np.zeros(model.num_vertices, bool)
    mask[model.faces.cpu().numpy().ravel()] = True
    for name in INTERIOR_REGIONS:
        if name in model.region_masks:
            mask &= ~model.region_masks[name].cpu().numpy().astype(bool)
    return mask


def fit_faces(model: HeadModel) -> np.ndarray:
    """[F', 3] the model's triangles with all corners on the outer surface."""
    faces = model.faces.cpu().numpy()
    return faces[fit_vertex_mask(model)[faces].all(1)]


#: transparent overlay shells (tear film, eye blend and occlusion): no camera sees them
OVERLAY_REGIONS = ("lacrimal_fluid", "eye_blend", "eye_occlusion")


def match_faces(model: HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """The triangles a camera can see: ([F'', 3] all but the overlay shells, [F''] bool: on the
    outer surface, fit_faces). Cloud points closest to the others (teeth and tongue through an
    open mouth, eyelashes, eye sockets) are absorbed there rather than pulling lips and eyelids."""
    faces = model.faces.cpu().numpy()
    hidden = np.zeros(model.num_vertices, bool)
    for name in OVERLAY_REGIONS:
        if name in model.region_masks:
            hidden |= model.region_masks[name].cpu().numpy().astype(bool)
    faces = faces[~hidden[faces].all(1)]
    return faces, fit_vertex_mask(model)[faces].all(1)


def absorbed_points(points: np.ndarray, vertices: np.ndarray, model: HeadModel) -> np.ndarray:
    """[N] bool: cloud points whose nearest visible vertex of the fitted mesh `vertices` [V, 3] is
    not on the outer surface (teeth, tongue, mouth and eye sockets, eyelashes)."""
    faces, _ = match_faces(model)
    visible = np.unique(faces)
    _, idx = cKDTree(vertices[visible]).query(points)
    return ~fit_vertex_mask(model)[visible[idx]]


def fitted_joints(model: HeadModel) -> list[int]:
    """Joints whose rotation the fit estimates: the eyes, and the jaw unless a `jawOpen`
    expression opens it (both would explain the same surface with different correspondence).
    Head motion is the pose, not a joint."""
    jaw_shape = "jawOpen" in model.expression_names
    return [j for j, name in enumerate(model.joint_names)
            if "eye" in name.lower() or ("jaw" in name.lower() and not jaw_shape)]


@dataclass(frozen=True)
class FitConfig:
    rounds: int = 5
    """Correspondence updates."""
    steps: int = 2
    """Levenberg-Marquardt iterations per round."""
    points: int = 4000
    """Cloud points per frame in the data term (a seeded subsample)."""
    gate_start: float = 0.03
    """Largest point-to-vertex distance (m) of a correspondence in the first round."""
    gate_end: float = 0.003
    """... and in the last round."""
    sigma_start: float = 10.0
    """Geman-McClure scale (mm) in the first round."""
    sigma_end: float = 1.0
    """... and in the last round."""
    normal_cos: float = 0.5
    """Least cosine between a cloud normal and its vertex normal."""
    interior: str = "fit"
    """Cloud points closest to a visible interior part (teeth, tongue, eyelashes, sockets):
    'absorb' (left out), 'fit' (data for those parts too), 'ignore' (matched to the outer surface
    only, as if the interior were not there)."""
    eyeballs: bool = False
    """Cloud points closest to an eyeball are data for it (False: absorbed, like the interior:
    stereo on the eyes is poor, and eyeball points pulled eyelids and eye shapes astray)."""
    tangent: float = 0.01
    """Weight of the point-to-point part beside point-to-plane."""
    landmark: float = 0.02
    """Weight of the triangulated-landmark term (MediaPipe's points sit up to ~1 cm off a model's)."""
    identity_prior: float = 1e-5
    """Weight of |identity|^2 (the data term is a mean over points, in mm^2)."""
    expression_prior: float = 3e-3
    """Weight of |expression|^2 (1e-5 let multi-view stereo noise switch on eye and lip shapes)."""
    bounds: float = 100.0
    joint_prior: float = 1e-3
    """Weight of |joint rotations|^2 (radians)."""

    def __post_init__(self):
        if self.interior not in ("absorb", "fit", "ignore"):
            raise ValueError(f"FitConfig: field 'interior' must be 'absorb', 'fit' or 'ignore', got {self.interior!r}")


@dataclass
class FitResult:
    identity: np.ndarray          # [Ni]
    expression: np.ndarray        # [T, Ne]
    joint_rotations: np.ndarray   # [T, J, 3]
    world_from_head: np.ndarray   # [T, 4, 4]
    vertices: np.ndarray          # [T, V, 3] world metres
    rms_mm: np.ndarray            # [T] point-to-plane RMS of the last round's correspondences
    matched: np.ndarray           # [T] fraction of the cloud points matched in the last round


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [N, 3] of the point of triangle (a, b, c) closest to p (all
    [N, 3]); Ericson, Real-Time Collision Detection 5.1.5, vectorised."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    denom = va + vb + vc
    with np.errstate(divide="ignore", invalid="ignore"):
        v = vb / denom
        w = vc / denom
        out = np.stack([1 - v - w, v, w], 1)
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    regions = [
        ((d1 <= 0) & (d2 <= 0), lambda: np.stack([np.ones_like(d1), 0 * d1, 0 * d1], 1)),
        ((d3 >= 0) & (d4 <= d3), lambda: np.stack([0 * d1, np.ones_like(d1), 0 * d1], 1)),
        ((d6 >= 0) & (d5 <= d6), lambda: np.stack([0 * d1, 0 * d1, np.ones_like(d1)], 1)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), lambda: np.stack([1 - t_ab, t_ab, 0 * d1], 1)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), lambda: np.stack([1 - t_ac, 0 * d1, t_ac], 1)),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), lambda: np.stack([0 * d1, 1 - t_bc, t_bc], 1)),
    ]
    done = np.zeros(len(p), bool)
    for mask, value in regions:
        take = mask & ~done
        if take.any():
            out[take] = value()[take]
        done |= mask
    return np.nan_to_num(out, nan=1.0 / 3.0)


def vertex_rings(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """[V, K] indices of the triangles around each vertex, padded with -1."""
    f = np.asarray(faces, np.int64)
    vert = f.ravel()
    tri = np.repeat(np.arange(len(f)), 3)
    order = np.argsort(vert, kind="stable")
    vert, tri = vert[order], tri[order]
    counts = np.bincount(vert, minlength=num_vertices)
    rings = np.full((num_vertices, max(int(counts.max()), 1)), -1, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rings[vert, np.arange(len(vert)) - starts[vert]] = tri
    return rings


def closest_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, rings: np.ndarray,
                    tree: cKDTree, tree_ids: np.ndarray, gate: float, reach: float = 0.0):
    """Each point's closest point among the triangles around its nearest vertex (searched
    within gate + reach, reach ~ the mesh's longest edge).
    Returns (ok [N] bool, face [N], bary [N, 3], distance [N])."""
    # the nearest vertex can lie farther than the closest surface point: search wider, gate after
    dist, near = tree.query(points, distance_upper_bound=gate + reach)
    ok = np.isfinite(dist)
    n = len(points)
    face = np.zeros(n, np.int64)
    bary = np.zeros((n, 3))
    best = np.full(n, np.inf)
    if not ok.any():
        return ok, face, bary, best
    ring = rings[tree_ids[np.where(ok, near, 0)]]
    for k in range(ring.shape[1]):
        cand = ring[:, k]
        has = ok & (cand >= 0)
        if not has.any():
            continue
        tri = vertices[faces[cand[has]]]
        bc = closest_on_triangles(points[has], tri[:, 0], tri[:, 1], tri[:, 2])
        d = np.linalg.norm(np.einsum("nk,nkc->nc", bc, tri) - points[has], axis=1)
        better = d < best[has]
        idx = np.flatnonzero(has)[better]
        best[idx], face[idx], bary[idx] = d[better], cand[has][better], bc[better]
    ok &= np.isfinite(best) & (best < gate)
    return ok, face, bary, best


class _Evaluator:
    """The model's vertices for a subset of vertex ids (what the data and landmark terms touch),
    so a round costs what it matches rather than the whole mesh."""

    def __init__(self, m: HeadModel, ids: torch.Tensor):
        self.m = m
        self.ids = ids
        self.template = m.template[ids]
        self.identity_basis = m.identity_basis[:, ids]
        self.expression_basis = m.expression_basis[:, ids]
        if m.num_joints:
            self.weights = m.lbs_weights[ids]
            self.correctives = None if m.pose_correctives is None else m.pose_correctives[:, ids]
            if m.joint_regressor is not None:  # joints are linear in the shaped vertices
                reg = m.joint_regressor
                self.j_template = reg @ m.template
                self.j_identity = torch.einsum("jv,kvc->kjc", reg, m.identity_basis)
                self.j_expression = torch.einsum("jv,kvc->kjc", reg, m.expression_basis)
            else:
                self.j_template = m.rest_joints
                self.j_identity = m.joint_identity_basis
                self.j_expression = None

    def __call__(self, ident: torch.Tensor, expr: torch.Tensor, jrot: torch.Tensor) -> torch.Tensor:
        T = expr.shape[0]
        v = self.template.expand(T, -1, -1)
        if self.m.num_identity:
            v = v + torch.einsum("k,kvc->vc", ident[0], self.identity_basis)[None]
        if self.m.num_expression:
            v = v + torch.einsum("tk,kvc->tvc", expr, self.expression_basis)
        if not self.m.num_joints:
            return v
        joints = self.j_template.expand(T, -1, -1)
        if self.j_identity is not None and self.m.num_identity:
            joints = joints + torch.einsum("k,kjc->jc", ident[0], self.j_identity)[None]
        if self.j_expression is not None and self.m.num_expression:
            joints = joints + torch.einsum("tk,kjc->tjc", expr, self.j_expression)
        return lbs(v, jrot, joints, self.m.parents, self.weights, self.correctives)[0]


def _scales(m: HeadModel, surface: np.ndarray, joints_idx: list[int]):
    """mm of surface motion per unit of identity, expression, fitted joint and head rotation."""
    surf = torch.from_numpy(surface)

    def rms(basis):
        if basis.shape[0] == 0:
            return torch.ones(0, dtype=basis.dtype)
        return (basis[:, surf] ** 2).sum(-1).mean(-1).sqrt().clamp(min=1e-6) * 1e3

    tpl = m.template[surf]
    s_rot = float((tpl - tpl.mean(0)).norm(dim=-1).pow(2).mean().sqrt()) * 1e3
    s_j = []
    for j in joints_idx:
        heavy = m.lbs_weights[:, j] > 0.5
        joint = (m.rest_joints[j] if m.joint_regressor is None else m.joint_regressor[j] @ m.template)
        reach = (m.template[heavy] - joint).norm(dim=-1).pow(2).mean().sqrt() * 1e3 if heavy.any() else torch.tensor(50.0)
        s_j.append(float(reach))
    return (rms(m.identity_basis), rms(m.expression_basis), torch.tensor(s_j, dtype=m.dtype).clamp(min=1.0),
            max(s_rot, 1.0))


def _jacobian(fn, z: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Forward-mode Jacobian [N, P] of fn: R^P -> R^N, in chunks of `chunk` directions."""
    from torch.func import jvp, vmap

    cols = []
    eye = torch.eye(len(z), dtype=z.dtype)
    for start in range(0, len(z), chunk):
        tangents = eye[start:start + chunk]
        cols.append(vmap(lambda v: jvp(fn, (z,), (v,))[1])(tangents))
    return torch.cat(cols, 0).T


def _rodrigues(w: torch.Tensor) -> torch.Tensor:
    """[T, 3] axis-angle -> [T, 3, 3]."""
    return axis_angle_to_matrix(w)


def fit_head_model(model: HeadModel, clouds: list[PointCloud], world_from_head: np.ndarray,
                   landmarks: list[np.ndarray | None] | None = None, identity: np.ndarray | None = None,
                   expression: np.ndarray | None = None, joint_rotations: np.ndarray | None = None,
                   config: FitConfig = FitConfig(), seed: int = 0) -> FitResult:
    """Fit `model` to T clouds. world_from_head [T, 4, 4] is the rigid start; landmarks (per
    frame [68, 3] world, NaN where missing, or None) pull the model's iBUG-68 vertices.
    `identity` given: held fixed; otherwise estimated (shared by the T frames). expression
    [T, Ne] / joint_rotations [T, J, 3] given: the start (e.g. the previous frame's).
    torch runs on one thread inside (many small ops: see headcap.core.threads.serial_torch_ops)."""
    from headcap.core.threads import serial_torch_ops

    with serial_torch_ops():
        return _fit(model, clouds, world_from_head, landmarks, identity, expression, joint_rotations, config, seed)


def _fit(model, clouds, world_from_head, landmarks, identity, expression, joint_rotations, config, seed) -> FitResult:
    T = len(clouds)
    dtype = torch.float64
    m = model.to(dtype=dtype)
    rng = np.random.default_rng(seed)
    subs = [c.subsample(config.points, rng) for c in clouds]
    surface_mask = fit_vertex_mask(model)
    surface = np.flatnonzero(surface_mask)
    if config.interior == "ignore":
        faces_np = fit_faces(model)
        outer_face = np.ones(len(faces_np), bool)
    else:
        faces_np, outer_face = match_faces(model)
    match_ids = np.unique(faces_np)
    eyeball = np.zeros(model.num_vertices, bool)
    for name in ("eyeball_left", "eyeball_right"):
        if name in model.region_masks:
            eyeball |= model.region_masks[name].cpu().numpy().astype(bool)
    eyeball_face = eyeball[faces_np].any(1)
    rings = vertex_rings(faces_np, model.num_vertices)
    tpl = model.template.double().numpy()
    reach = float(np.linalg.norm(tpl[faces_np[:, 0]] - tpl[faces_np[:, 1]], axis=1).max()) if len(faces_np) else 0.0
    w0 = torch.as_tensor(np.asarray(world_from_head, np.float64))
    joints_idx = fitted_joints(model)
    full = _Evaluator(m, torch.arange(m.num_vertices))
    # the solver works on parameters scaled so that a unit step moves the surface by about 1 mm
    s_id, s_ex, s_j, s_rot = _scales(m, surface, joints_idx)
    ident0 = torch.zeros(1, m.num_identity, dtype=dtype) if identity is None else torch.as_tensor(identity, dtype=dtype)[None]
    ident_z = (ident0 * s_id).clone().requires_grad_(identity is None)
    expr0 = torch.zeros(T, m.num_expression, dtype=dtype) if expression is None else torch.as_tensor(expression, dtype=dtype)
    expr_z = (expr0 * s_ex).clone().requires_grad_(True)
    jrot_full = torch.zeros(T, m.num_joints, 3, dtype=dtype)
    if joint_rotations is not None:
        jrot_full = torch.as_tensor(joint_rotations, dtype=dtype).clone()
    jrot_z = (jrot_full[:, joints_idx] * s_j[:, None]).clone().requires_grad_(True)
    omega_z = torch.zeros(T, 3, dtype=dtype, requires_grad=True)
    tau_mm = torch.zeros(T, 3, dtype=dtype, requires_grad=True)
    lm_ids = m.landmark_ids
    with torch.no_grad():
        start = full(ident0, expr0, jrot_full)
        centres = torch.einsum("tij,tvj->tvi", w0[:, :3, :3], start[:, surface]).mean(1) + w0[:, :3, 3]

    lm_targets = None
    if landmarks is not None and len(lm_ids) and any(lm is not None for lm in landmarks):
        lm = np.full((T, len(lm_ids), 3), np.nan)
        for t, frame_lm in enumerate(landmarks):
            if frame_lm is not None and frame_lm.shape == lm.shape[1:]:
                lm[t] = frame_lm
        lm_targets = torch.as_tensor(lm)
        lm_ok = torch.isfinite(lm_targets).all(-1)
        lm_targets = torch.nan_to_num(lm_targets)
        if not lm_ok.any():
            lm_targets = None

    free = [p for p in (ident_z, expr_z, jrot_z, omega_z, tau_mm) if p.requires_grad]
    shapes = [p.shape for p in free]
    counts = [p.numel() for p in free]
    z = torch.cat([p.detach().reshape(-1) for p in free])

    def load(zvec):
        nonlocal ident_z, expr_z, jrot_z, omega_z, tau_mm
        parts = torch.split(zvec, counts)
        it = iter(parts)
        values = [next(it).reshape(shape) for shape in shapes]
        names = [n for n, p in (("ident", ident_z), ("expr", expr_z), ("jrot", jrot_z), ("omega", omega_z),
                                ("tau", tau_mm)) if p.requires_grad]
        got = dict(zip(names, values))
        return (got.get("ident", ident_z.detach()), got.get("expr", expr_z.detach()), got.get("jrot", jrot_z.detach()),
                got.get("omega", omega_z.detach()), got.get("tau", tau_mm.detach()))

    def evaluate(zvec, ev):
        i_z, e_z, j_z, o_z, t_mm = load(zvec)
        idt, ex, jr, om = i_z / s_id, e_z / s_ex, j_z / s_j[:, None], o_z / s_rot
        jr_full = jrot_full.clone() if not joints_idx else torch.cat(
            [jr[:, [joints_idx.index(j)]] if j in joints_idx else jrot_full[:, [j]] for j in range(m.num_joints)], 1)
        head = ev(idt, ex, jr_full)
        x = torch.einsum("tij,tvj->tvi", w0[:, :3, :3], head) + w0[:, None, :3, 3]
        rot = _rodrigues(om)
        verts = torch.einsum("tij,tvj->tvi", rot, x - centres[:, None]) + centres[:, None] + t_mm[:, None] * 1e-3
        return verts, idt, ex, jr, om, t_mm

    def residuals(zvec, pairs, lm_local, sigma, weights):
        """Weighted residual vector; weights=None: the robust energy's own (returns r, r2 terms)."""
        verts, idt, ex, jr, _, _ = evaluate(zvec, ev)
        out, data_r2 = [], []
        for t, (f, b, p, n, w) in enumerate(pairs):
            x = torch.einsum("nk,nkc->nc", b, verts[t][f])
            d = (x - p) * 1e3
            comp = torch.cat([(d * n).sum(-1, keepdim=True), config.tangent ** 0.5 * d], 1)
            data_r2.append((comp ** 2).sum(-1))
            scale = w / w.sum().clamp(min=1e-9) / T
            wt = scale if weights is None else scale * weights[t]
            out.append((comp * wt.sqrt()[:, None]).reshape(-1))
        if lm_targets is not None and config.landmark > 0:
            diff = (verts[:, lm_local] - lm_targets) * 1e3
            lw = lm_ok.to(dtype) * config.landmark * 0.5 / lm_ok.sum().clamp(min=1)
            if weights is not None:
                lw = lw * weights[-1]
            out.append((diff * lw.sqrt()[..., None]).reshape(-1))
        out.append(config.identity_prior ** 0.5 * idt.reshape(-1))
        out.append((config.expression_prior / T) ** 0.5 * ex.reshape(-1))
        out.append((config.bounds / T) ** 0.5 * torch.cat([torch.where(ex < 0, ex, 0.0).reshape(-1),
                                                          torch.where(ex > 1, ex - 1, 0.0).reshape(-1)]))
        out.append((config.joint_prior / T) ** 0.5 * jr.reshape(-1))
        return torch.cat(out), data_r2

    def irls_weights(zvec, pairs, lm_local, sigma):
        with torch.no_grad():
            _, r2 = residuals(zvec, pairs, lm_local, sigma, None)
            weights = [sigma ** 4 / (sigma ** 2 + q) ** 2 for q in r2]
            if lm_targets is not None:
                verts = evaluate(zvec, ev)[0]
                dist = ((verts[:, lm_local] - lm_targets) * 1e3).norm(dim=-1)
                weights.append(torch.where(dist < 5.0, torch.ones_like(dist), 5.0 / dist.clamp(min=1e-9)))
        return weights

    def robust_energy(zvec, pairs, lm_local, sigma):
        with torch.no_grad():
            ones = [torch.ones(len(pr[0]), dtype=dtype) for pr in pairs] + [torch.ones(T, len(lm_ids), dtype=dtype)]
            r, r2 = residuals(zvec, pairs, lm_local, sigma, ones)
            total = (r ** 2).sum()
            for t, (f, b, p, n, w) in enumerate(pairs):  # replace the data part's squares by Geman-McClure
                scale = w / w.sum().clamp(min=1e-9) / T
                total = total - (scale * r2[t]).sum() + (scale * sigma ** 2 * r2[t] / (sigma ** 2 + r2[t])).sum()
            return float(total)

    rms = np.zeros(T)
    matched = np.zeros(T)
    pairs = []
    eye = torch.eye(len(z), dtype=dtype)
    lower = torch.full_like(z, -torch.inf)
    upper = torch.full_like(z, torch.inf)
    offset = ident_z.numel() if ident_z.requires_grad else 0
    lower[offset:offset + expr_z.numel()] = 0.0
    upper[offset:offset + expr_z.numel()] = s_ex.repeat(T)
    z = torch.minimum(torch.maximum(z, lower), upper)
    for rnd in range(config.rounds):
        frac = rnd / max(config.rounds - 1, 1)
        gate = config.gate_start * (config.gate_end / config.gate_start) ** frac
        sigma = config.sigma_start * (config.sigma_end / config.sigma_start) ** frac
        with torch.no_grad():
            verts = evaluate(z, full)[0].numpy()
        raw = []
        for t in range(T):
            v = verts[t]
            tri = v[faces_np]
            fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
            ok, face, bary, _ = closest_on_mesh(subs[t].points, v, faces_np, rings, cKDTree(v[match_ids]), match_ids,
                                                gate, reach)
            ok &= np.einsum("ij,ij->i", fn[face], subs[t].normals) > config.normal_cos
            if config.interior == "absorb":
                ok &= outer_face[face]
            if not config.eyeballs:
                ok &= ~eyeball_face[face]
            matched[t] = ok.mean()
            raw.append((faces_np[face[ok]], bary[ok], subs[t].points[ok], fn[face[ok]], subs[t].confidence[ok]))
        used = np.unique(np.concatenate([r[0].ravel() for r in raw] + [lm_ids.numpy()]))
        ev = _Evaluator(m, torch.from_numpy(used))
        remap = np.full(m.num_vertices, -1, np.int64)
        remap[used] = np.arange(len(used))
        pairs = [(torch.from_numpy(remap[f]), torch.from_numpy(b), torch.from_numpy(p), torch.from_numpy(n),
                  torch.from_numpy(w)) for f, b, p, n, w in raw]
        lm_local = torch.from_numpy(remap[lm_ids.numpy()]) if len(lm_ids) else None
        damping = 1e-3
        for _ in range(config.steps):  # Levenberg-Marquardt on the IRLS-weighted residuals
            weights = irls_weights(z, pairs, lm_local, sigma)

            def fn(zvec):
                return residuals(zvec, pairs, lm_local, sigma, weights)[0]

            with torch.no_grad():
                r0 = fn(z)
            jac = _jacobian(fn, z)
            hess, grad = jac.T @ jac, jac.T @ r0
            before = robust_energy(z, pairs, lm_local, sigma)
            # box constraints on the expression weights: a weight at a bound that the gradient
            # pushes outwards is held (active set), every step is projected back into the box
            held = ((z <= lower + 1e-12) & (grad > 0)) | ((z >= upper - 1e-12) & (grad < 0))
            h = torch.where(held[:, None] | held[None, :], 0.0, hess) + torch.diag(held.to(dtype))
            g = torch.where(held, 0.0, grad)
            for _ in range(6):
                step = torch.linalg.solve(h + damping * torch.diag(h.diagonal()) + 1e-9 * eye, -g)
                candidate = torch.minimum(torch.maximum(z + step, lower), upper)
                step = candidate - z
                after = robust_energy(candidate, pairs, lm_local, sigma)
                if after <= before:
                    z = candidate
                    damping = max(damping / 3, 1e-7)
                    break
                damping *= 4
            else:
                break
            if float(step.abs().max()) < 1e-6:
                break
    with torch.no_grad():
        verts_sub = evaluate(z, ev)[0]
        verts, ident, expr, jr, omega, tau_mm = evaluate(z, full)
        for t, (f, b, p, n, w) in enumerate(pairs):
            r = ((torch.einsum("nk,nkc->nc", b, verts_sub[t][f]) - p) * n).sum(-1) * 1e3
            good = r.abs() < 3 * config.sigma_end
            rms[t] = float(torch.sqrt((r[good] ** 2).mean())) if good.any() else float("nan")
        jr_full = jrot_full.clone()
        jr_full[:, joints_idx] = jr
        rot = _rodrigues(omega)
        delta = torch.eye(4, dtype=dtype).repeat(T, 1, 1)
        delta[:, :3, :3] = rot
        delta[:, :3, 3] = centres - torch.einsum("tij,tj->ti", rot, centres) + tau_mm * 1e-3
    return FitResult(identity=ident.reshape(-1).numpy(), expression=expr.numpy(),
                     joint_rotations=jr_full.numpy(), world_from_head=(delta @ w0).numpy(),
                     vertices=verts.numpy(), rms_mm=rms, matched=matched)
