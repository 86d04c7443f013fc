"""`GaussianAvatar`: 3D Gaussians bound to the triangles of a head model (GaussianAvatars style).

Every Gaussian i belongs to one triangle f = binding[i] of the head model and stores its
position, rotation and scale in that triangle's local frame:

    triangle frame   c_f = (v0 + v1 + v2) / 3                      (origin: centroid)
                     x = (v1 - v0) / |v1 - v0|, z = unit normal of (v1 - v0) x (v2 - v0),
                     y = z x x, R_f = [x y z]                       (orientation: edge + normal)
                     k_f = (|v1 - v0| + |v2 - v1| + |v0 - v2|) / 3  (size: mean edge length)
    world Gaussian   mean  = c_f + k_f R_f p_i
                     rot   = R_f q_i                                (quaternion product)
                     scale = k_f exp(s_i)

with p_i = local_means, q_i = local_quats (w, x, y, z), s_i = local_log_scales. The vertices v come
from HeadModel.forward(identity, expression, joint_rotations, world_from_head), so the Gaussians
follow identity, expression, joints (jaw, eyes, neck) and the head pose exactly: a rigid motion
of the mesh moves and turns every Gaussian rigidly, a uniform scaling scales them. Colour is
3DGS SH (sh [N, K, 3], colour = SH + 0.5), opacity = sigmoid(opacity_logits).

Mouth interior and eyes: the triangles bound are the model's drawn surface (the model minus its
transparent overlay shells), which for the default head and ICT-FaceKit includes the teeth,
tongue/gums and eyeballs, so those get Gaussians of their own that move with the jaw and eye
joints. A model without such geometry gets no special treatment (its mouth is the lip surface).

On disk (`save_avatar` / `load_avatar`, readable without headcap: numpy + json + any 3DGS ply
reader) an avatar folder holds:

    gaussians.ply   the canonical Gaussians (identity applied, neutral expression, rest pose,
                    head frame, metres) in the reference 3DGS layout
    binding.npz     face_index [N] int64 (row of `faces`), local_means [N, 3], local_quats [N, 4]
                    (w, x, y, z), local_log_scales [N, 3], faces [F, 3] int64 (the model's
                    triangles), canonical_vertices [V, 3] (the mesh the ply was posed with),
                    identity [Ni]
    avatar.json     format, head model spec and name, counts, sh_degree, the formulas above
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headcap.avatar.export.splats import SH_C0

__all__ = ["GaussianAvatar", "PosedGaussians", "triangle_frames", "matrix_to_quat", "quat_multiply",
           "quat_to_matrix", "bound_faces", "save_avatar", "load_avatar", "AVATAR_FORMAT",
           "PARAM_NAMES"]

AVATAR_FORMAT = "headcap.gaussian_avatar/1"
PARAM_NAMES = ("local_means", "local_quats", "local_log_scales", "opacity_logits", "sh")
#: transparent overlay shells of ICT-FaceKit-like models: never bound (the studio does not draw them)
OVERLAY_REGIONS = ("lacrimal_fluid", "eye_blend", "eye_occlusion", "eyelashes")


def bound_faces(model) -> Tensor:
    """Indices into model.faces of the triangles Gaussians may bind to: all but the overlay
    shells (OVERLAY_REGIONS) and degenerate triangles."""
    faces = model.faces.cpu()
    hidden = torch.zeros(model.num_vertices, dtype=torch.bool)
    for name in OVERLAY_REGIONS:
        if name in model.region_masks:
            hidden |= model.region_masks[name].cpu()
    keep = ~hidden[faces].all(dim=1)
    v = model.template.detach().cpu().double()[faces]
    area = torch.linalg.norm(torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=1), dim=1)
    keep &= area > 1e-14
    return keep.nonzero()[:, 0]


def triangle_frames(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(centroids [..., F, 3], rotations [..., F, 3, 3] (columns x, y, z), sizes [..., F]) of the
    triangles `faces` [F, 3] of `vertices` [..., V, 3] (module docstring)."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    centroid = (v0 + v1 + v2) / 3.0
    e0, e1, e2 = v1 - v0, v2 - v1, v0 - v2
    x = e0 / torch.linalg.norm(e0, dim=-1, keepdim=True).clamp_min(1e-12)
    n = torch.cross(e0, v2 - v0, dim=-1)
    z = n / torch.linalg.norm(n, dim=-1, keepdim=True).clamp_min(1e-12)
    y = torch.cross(z, x, dim=-1)
    rot = torch.stack([x, y, z], dim=-1)
    size = (torch.linalg.norm(e0, dim=-1) + torch.linalg.norm(e1, dim=-1) + torch.linalg.norm(e2, dim=-1)) / 3.0
    return centroid, rot, size.clamp_min(1e-9)


def quat_to_matrix(q: Tensor) -> Tensor:
    """(w, x, y, z) quaternions [..., 4] (any norm) -> rotation matrices [..., 3, 3]."""
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit (w, x, y, z) quaternions, differentiable (of the four
    equivalent formulas the one with the largest, best conditioned denominator is taken)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    root = torch.sqrt(sq.clamp_min(1e-12))  # 2|w|, 2|x|, 2|y|, 2|z| of the four candidates
    cand = torch.stack([
        torch.stack([root[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, root[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, root[..., 2] ** 2, m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, root[..., 3] ** 2], -1),
    ], -2) / (2.0 * root[..., None])
    best = sq.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    return q / torch.linalg.norm(q, dim=-1, keepdim=True)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (w, x, y, z) quaternions: rotation a after rotation b."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


@dataclass
class PosedGaussians:
    """World-space Gaussians ready for `rasterize_gaussians` (linear scales, opacities in [0, 1])."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor


@dataclass
class GaussianAvatar:
    """Gaussians bound to a head model's triangles (module docstring). Tensors are float32 CPU;
    the per-Gaussian parameters (PARAM_NAMES) are what training optimises."""

    model: object  # HeadModel
    model_spec: str
    identity: Tensor  # [Ni]
    face_index: Tensor  # [N] long, rows of model.faces
    local_means: Tensor  # [N, 3]
    local_quats: Tensor  # [N, 4]
    local_log_scales: Tensor  # [N, 3]
    opacity_logits: Tensor  # [N]
    sh: Tensor  # [N, K, 3]

    def __post_init__(self) -> None:
        n = int(self.face_index.shape[0])
        shapes = {"local_means": (n, 3), "local_quats": (n, 4), "local_log_scales": (n, 3), "opacity_logits": (n,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"GaussianAvatar: field {name!r} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[1] not in (1, 4, 9, 16) or self.sh.shape[2] != 3:
            raise ValueError(f"GaussianAvatar: field 'sh' must be [N={n}, K in 1/4/9/16, 3], got {list(self.sh.shape)}")
        if n and (int(self.face_index.min()) < 0 or int(self.face_index.max()) >= self.model.faces.shape[0]):
            raise ValueError(f"GaussianAvatar: field 'face_index' must lie in 0..{self.model.faces.shape[0] - 1}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def initialise(cls, model, model_spec: str, identity: Tensor | None = None, sh_degree: int = 1,
                   per_triangle: int = 1, scale: float = 0.5, opacity: float = 0.9,
                   colors: Tensor | None = None, seed: int = 0) -> "GaussianAvatar":
        """`per_triangle` Gaussians on every bindable triangle (bound_faces): the first at the
        centroid, the others at seeded random points inside the triangle; in-plane size `scale`
        times the triangle size, a tenth of that along the normal. colors [N, 3] or grey."""
        if sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"GaussianAvatar: sh_degree must be 0..3, got {sh_degree}")
        faces = bound_faces(model)
        gen = torch.Generator().manual_seed(seed)
        face_index = faces.repeat_interleave(per_triangle)
        n = face_index.shape[0]
        # barycentric points in the local frame of each triangle (rest pose of the template)
        bary = torch.full((n, 3), 1.0 / 3.0)
        if per_triangle > 1:
            r = torch.rand(n, 2, generator=gen)
            flip = r.sum(1) > 1
            r[flip] = 1 - r[flip]
            extra = torch.arange(n) % per_triangle != 0
            bary[extra] = torch.stack([1 - r[:, 0] - r[:, 1], r[:, 0], r[:, 1]], 1)[extra]
        ident = torch.zeros(model.num_identity) if identity is None else identity.float().reshape(-1)
        verts = model.forward(identity=ident[None]).vertices[0].detach().float()
        tri = model.faces[face_index]
        points = torch.einsum("nk,nkc->nc", bary, verts[tri])
        centroid, rot, size = triangle_frames(verts, model.faces[face_index])
        local = torch.einsum("nji,nj->ni", rot, points - centroid) / size[:, None]
        k = (sh_degree + 1) ** 2
        sh = torch.zeros(n, k, 3)
        base = torch.full((n, 3), 0.5) if colors is None else colors.float()
        sh[:, 0] = (base - 0.5) / SH_C0
        log_scales = torch.tensor([math.log(scale), math.log(scale), math.log(scale * 0.1)]).expand(n, 3).clone()
        return cls(model=model, model_spec=model_spec, identity=ident, face_index=face_index, local_means=local,
                   local_quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(), local_log_scales=log_scales,
                   opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity))), sh=sh)

    # ------------------------------------------------------------------ evaluation
    @property
    def count(self) -> int:
        return int(self.face_index.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    def params(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def vertices(self, expression: Tensor | None = None, joint_rotations: Tensor | None = None,
                 world_from_head: Tensor | None = None) -> Tensor:
        """Head-model vertices [B, V, 3] with this avatar's identity (None: neutral / rest / head frame)."""
        batch = 1
        for value, dims in ((expression, 2), (joint_rotations, 3), (world_from_head, 3)):
            if value is not None and value.dim() == dims:
                batch = int(value.shape[0])
        ident = self.identity[None].expand(batch, -1)
        return self.model.forward(identity=ident, expression=expression, joint_rotations=joint_rotations,
                                  world_from_head=world_from_head).vertices

    def pose(self, vertices: Tensor, sh_degree: int | None = None) -> PosedGaussians:
        """World-space Gaussians on the mesh `vertices` [V, 3] (differentiable in the parameters
        and in the vertices). sh_degree: use only the first bands (progressive SH)."""
        centroid, rot, size = triangle_frames(vertices, self.model.faces[self.face_index])
        means = centroid + size[:, None] * torch.einsum("nij,nj->ni", rot, self.local_means)
        quats = quat_multiply(matrix_to_quat(rot), self.local_quats)
        scales = size[:, None] * torch.exp(self.local_log_scales)
        k = self.sh.shape[1] if sh_degree is None else min(self.sh.shape[1], (sh_degree + 1) ** 2)
        return PosedGaussians(means, quats, scales, torch.sigmoid(self.opacity_logits), self.sh[:, :k])

    def render(self, vertices: Tensor, camera, background: Tensor | None = None, sh_degree: int | None = None):
        """RasterOutput of the avatar on `vertices` [V, 3] seen by `camera` (pinhole)."""
        from headcap.avatar.gaussians import rasterize_gaussians

        g = self.pose(vertices, sh_degree)
        return rasterize_gaussians(g.means, g.quats, g.scales, g.opacities, sh_coeffs=g.sh, camera=camera,
                                   background=background)

    def canonical_splats(self):
        """The canonical Gaussians (identity, neutral expression, rest pose, head frame) as Splats."""
        from headcap.avatar.export.splats import Splats

        with torch.no_grad():
            verts = self.vertices()[0].float()
            g = self.pose(verts)
        return Splats(g.means.double().numpy(), g.quats.double().numpy(), torch.log(g.scales).double().numpy(),
                      self.opacity_logits.double().numpy(), g.sh.double().numpy())


# ---------------------------------------------------------------------- files
def save_avatar(folder: Path, avatar: GaussianAvatar, extra: dict | None = None) -> None:
    """Write gaussians.ply, binding.npz and avatar.json into `folder` (module docstring)."""
    import io

    from headcap.avatar.export.splats import write_ply
    from headcap.core.fileio import atomic_write_bytes, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(folder / "gaussians.ply", avatar.canonical_splats())
    with torch.no_grad():
        canonical = avatar.vertices()[0].double().numpy()
    buf = io.BytesIO()
    np.savez(buf, face_index=avatar.face_index.numpy().astype(np.int64),
             local_means=avatar.local_means.detach().double().numpy(),
             local_quats=avatar.local_quats.detach().double().numpy(),
             local_log_scales=avatar.local_log_scales.detach().double().numpy(),
             faces=avatar.model.faces.cpu().numpy().astype(np.int64), canonical_vertices=canonical,
             identity=avatar.identity.double().numpy())
    atomic_write_bytes(folder / "binding.npz", buf.getvalue())
    write_json(folder / "avatar.json", {
        "format": AVATAR_FORMAT,
        "head_model": {"spec": avatar.model_spec, "name": avatar.model.name,
                       "vertices": avatar.model.num_vertices, "faces": int(avatar.model.faces.shape[0]),
                       "expression_names": list(avatar.model.expression_names),
                       "joint_names": list(avatar.model.joint_names)},
        "gaussians": avatar.count, "sh_degree": avatar.sh_degree,
        "files": {"gaussians.ply": "canonical Gaussians, reference 3DGS layout, head frame, metres",
                  "binding.npz": "face_index, local_means, local_quats (w,x,y,z), local_log_scales, faces, "
                                 "canonical_vertices, identity"},
        "binding": {"frame": "c = centroid; x = unit(v1 - v0); z = unit((v1 - v0) x (v2 - v0)); y = z x x; "
                             "k = mean edge length",
                    "mean": "c + k [x y z] local_mean", "rotation": "[x y z] * local_quat",
                    "scale": "k * exp(local_log_scale)",
                    "colour_opacity": "sh and opacity logit: the ply's f_dc/f_rest and opacity"},
        **(extra or {}),
    })


def load_avatar(folder: Path, model=None) -> GaussianAvatar:
    """Read an avatar folder written by save_avatar (or a stage folder holding one)."""
    from headcap.avatar.export.splats import read_ply
    from headcap.core.fileio import FileFormatError, read_json, read_npz

    folder = Path(folder)
    if not (folder / "avatar.json").is_file() and (folder / "train" / "avatar.json").is_file():
        folder = folder / "train"
    meta = read_json(folder / "avatar.json")
    if not isinstance(meta, dict) or meta.get("format") != AVATAR_FORMAT:
        raise FileFormatError(folder / "avatar.json", "format", f"expected {AVATAR_FORMAT!r}")
    spec = meta["head_model"]["spec"]
    if model is None:
        from headcap.reconstruct.head_loaders import load_head_model

        model = load_head_model(spec)
    binding = read_npz(folder / "binding.npz")
    splats = read_ply(folder / "gaussians.ply")
    n = splats.count
    face_index = torch.from_numpy(np.asarray(binding["face_index"], dtype=np.int64))
    if face_index.shape != (n,):
        raise FileFormatError(folder / "binding.npz", "face_index", f"expected [{n}] (the ply's count), got {list(face_index.shape)}")
    if tuple(binding["faces"].shape) != tuple(model.faces.shape) or not np.array_equal(binding["faces"], model.faces.numpy()):
        raise FileFormatError(folder / "binding.npz", "faces", f"do not match head model {spec!r}")
    f32 = lambda key: torch.from_numpy(np.asarray(binding[key], dtype=np.float32))  # noqa: E731
    return GaussianAvatar(model=model, model_spec=spec, identity=f32("identity"), face_index=face_index,
                          local_means=f32("local_means"), local_quats=f32("local_quats"),
                          local_log_scales=f32("local_log_scales"),
                          opacity_logits=torch.from_numpy(splats.opacity_logits.astype(np.float32)),
                          sh=torch.from_numpy(splats.sh.astype(np.float32)))
