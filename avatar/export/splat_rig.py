"""Bind Gaussians fitted at one frame to the head model, so that glTF skinning and morph targets
can carry them through the tracked sequence (export_head_glb(..., splats=...)).

Each Gaussian follows its nearest model vertex v at the fitted frame f: with that vertex's
affine motion at frame f, x_f = A_v (c + sum_e w_e,f d_v,e) + t_v (LBS with v's skin weights,
then world_from_head), the canonical centre is c = A_v^-1 (x_f - t_v) - sum_e w_e,f d_v,e and
the canonical orientation is R(A_v)^T R_gaussian (R(.) the closest rotation). In the file the
splat carries v's JOINTS_0 / WEIGHTS_0 and v's expression deltas as its morph targets, so a
client that applies glTF skinning and morphing to POSITION moves the centre exactly as
HeadModel.forward moves the vertex (plus the rigidly carried offset). Orientation and scale are
not touched by core glTF skinning of points: a renderer must rotate each splat by its blended
joint rotation itself (Spark's SplatSkinning does dual-quaternion skinning of splats).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headcap.avatar.export.sequence import HeadSequence, sequence_for_model
from headcap.avatar.export.splats import Splats

__all__ = ["BoundSplats", "bind_splats", "pose_splats", "vertex_motion"]


@dataclass
class BoundSplats:
    canonical: Splats  # head frame, neutral expression, rest pose
    vertex_ids: np.ndarray  # [N] bound model vertex


def vertex_motion(model, sequence: HeadSequence, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [V, 3, 3], t [V, 3], expression offsets [V, 3]) with posed_v = A_v (rest_v + offset_v) + t_v
    at `frame` (world frame; pose correctives, where a model has them, are left out)."""
    from headcap.reconstruct.lbs import axis_angle_to_matrix, joint_transforms

    m64 = model.to(dtype=torch.float64)
    expression, rotations = sequence_for_model(sequence, model)
    ident = torch.as_tensor(sequence.identity[None, : model.num_identity], dtype=torch.float64)
    joints = m64.forward(identity=ident).joints
    _, transforms = joint_transforms(axis_angle_to_matrix(torch.from_numpy(rotations[frame:frame + 1])), joints,
                                     m64.parents)
    blended = torch.einsum("vj,jrc->vrc", m64.lbs_weights, transforms[0, :, :3, :]).numpy()
    world = sequence.world_from_head[frame]
    a = world[:3, :3] @ blended[:, :, :3]
    t = blended[:, :, 3] @ world[:3, :3].T + world[:3, 3]
    offsets = np.einsum("e,evc->vc", expression[frame], m64.expression_basis.numpy())
    return a, t, offsets


def bind_splats(model, splats: Splats, sequence: HeadSequence, frame: int, max_distance: float = 0.05) -> BoundSplats:
    """Bind Gaussians given in the world frame at `frame` of `sequence` (module docstring).

    Gaussians farther than `max_distance` metres from every vertex are an error (they belong to
    nothing the head model moves: hair, shoulders, background).
    """
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    if model.num_joints == 0:
        raise ValueError(f"bind_splats: head model {model.name!r} has no joints to skin splats with")
    if not 0 <= frame < sequence.num_frames:
        raise ValueError(f"bind_splats: frame {frame} outside 0..{sequence.num_frames - 1}")
    a, t, offsets = vertex_motion(model, sequence, frame)
    from headcap.avatar.export.gltf import head_mesh_arrays

    rest, _ = head_mesh_arrays(model, sequence.identity)
    posed = np.einsum("vrc,vc->vr", a, rest + offsets) + t
    dist, ids = cKDTree(posed).query(splats.means)
    if (dist > max_distance).any():
        worst = int(np.argmax(dist))
        raise ValueError(f"bind_splats: {int((dist > max_distance).sum())} Gaussians lie more than {max_distance} m "
                         f"from the head model (worst: #{worst} at {dist[worst]:.3f} m)")
    canonical_means = np.einsum("nrc,nc->nr", np.linalg.inv(a[ids]), splats.means - t[ids]) - offsets[ids]
    u, _, vt = np.linalg.svd(a[ids])
    closest = u @ vt
    q = splats.quats / np.linalg.norm(splats.quats, axis=1, keepdims=True)
    rot = Rotation.from_matrix(closest).inv() * Rotation.from_quat(q[:, [1, 2, 3, 0]])
    xyzw = rot.as_quat()
    canonical = Splats(canonical_means, xyzw[:, [3, 0, 1, 2]], splats.log_scales.copy(),
                       splats.opacity_logits.copy(), splats.sh.copy())
    return BoundSplats(canonical, ids)


def pose_splats(model, bound: BoundSplats, sequence: HeadSequence, frame: int) -> Splats:
    """The bound Gaussians at `frame` (world frame): centres as the glTF file moves them, each
    orientation turned by the closest rotation of its vertex's motion (what a splat-skinning
    renderer does); scales, opacities and SH unchanged."""
    from scipy.spatial.transform import Rotation

    a, t, offsets = vertex_motion(model, sequence, frame)
    ids = bound.vertex_ids
    means = np.einsum("nrc,nc->nr", a[ids], bound.canonical.means + offsets[ids]) + t[ids]
    u, _, vt = np.linalg.svd(a[ids])
    q = bound.canonical.quats / np.linalg.norm(bound.canonical.quats, axis=1, keepdims=True)
    xyzw = (Rotation.from_matrix(u @ vt) * Rotation.from_quat(q[:, [1, 2, 3, 0]])).as_quat()
    c = bound.canonical
    return Splats(means, xyzw[:, [3, 0, 1, 2]], c.log_scales.copy(), c.opacity_logits.copy(), c.sh.copy())
