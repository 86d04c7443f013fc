"""Linear blend skinning as pure functions (the smplx `lbs` split, without its module state).

Conventions: a rotation is an axis-angle vector (radians, right-handed); `parents[j] < j` for
every non-root joint and `parents[root] == -1`, so one pass over the joints in index order
builds the kinematic chain. Pose correctives follow SMPL/FLAME: the pose feature is
`(R_j - I)` flattened row-major for every joint but the first, in joint order.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["axis_angle_to_matrix", "pose_feature", "joint_transforms", "lbs"]

# Below this squared angle the series expansions are exact to float64 rounding; switching
# keeps the gradient finite at the zero rotation (sqrt has an infinite slope at 0).
_SMALL_ANGLE_SQ = 1e-8


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues' formula, differentiable everywhere including the zero rotation.

    rotvec: [..., 3] axis-angle (radians) -> [..., 3, 3] rotation matrices.
    """
    theta_sq = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = safe_sq.sqrt()
    sin_over = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    one_minus_cos_over = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / safe_sq)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(skew)
    s = sin_over[..., None]
    c = one_minus_cos_over[..., None]
    return eye + s * skew + c * (skew @ skew)


def pose_feature(rotations: Tensor) -> Tensor:
    """SMPL/FLAME pose-corrective feature.

    rotations: [B, J, 3, 3] -> [B, 9 * (J - 1)]: (R_j - I) row-major for joints 1..J-1.
    """
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).reshape(rotations.shape[0], -1)


def joint_transforms(rotations: Tensor, joints: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """Forward kinematics.

    rotations: [B, J, 3, 3] local rotations; joints: [B, J, 3] rest positions; parents: [J]
    (long, parents[j] < j, -1 for roots). Returns posed joint positions [B, J, 3] and the
    skinning transforms [B, J, 4, 4] that map a rest-pose point to its posed position when the
    point is rigidly attached to joint j.
    """
    batch, num_joints = joints.shape[:2]
    parent_list = [int(p) for p in parents.tolist()]
    world_rot: list[Tensor] = []
    world_pos: list[Tensor] = []
    for j, p in enumerate(parent_list):
        if p < 0:
            world_rot.append(rotations[:, j])
            world_pos.append(joints[:, j])
        else:
            world_rot.append(world_rot[p] @ rotations[:, j])
            offset = joints[:, j] - joints[:, p]
            world_pos.append(world_pos[p] + (world_rot[p] @ offset[..., None])[..., 0])
    rot = torch.stack(world_rot, dim=1)
    posed = torch.stack(world_pos, dim=1)
    # x_posed = R_world (x - J_rest) + J_posed, written as one affine map per joint.
    trans = posed - (rot @ joints[..., None])[..., 0]
    top = torch.cat([rot, trans[..., None]], dim=-1)
    bottom = torch.zeros(batch, num_joints, 1, 4, dtype=joints.dtype, device=joints.device)
    bottom[..., 0, 3] = 1.0
    return posed, torch.cat([top, bottom], dim=-2)


def lbs(
    vertices: Tensor,
    joint_rotations: Tensor,
    joints: Tensor,
    parents: Tensor,
    weights: Tensor,
    pose_correctives: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pose shaped rest-pose vertices with linear blend skinning.

    vertices: [B, V, 3] shaped vertices in the rest pose; joint_rotations: [B, J, 3]
    axis-angle; joints: [B, J, 3] rest joint positions (already shaped); parents: [J];
    weights: [V, J] (rows sum to one); pose_correctives: [9 * (J - 1), V, 3] or None.
    Returns posed vertices [B, V, 3] and posed joints [B, J, 3].
    """
    rotations = axis_angle_to_matrix(joint_rotations)
    if pose_correctives is not None and pose_correctives.shape[0] > 0:
        vertices = vertices + torch.einsum("bp,pvc->bvc", pose_feature(rotations), pose_correctives)
    posed_joints, transforms = joint_transforms(rotations, joints, parents)
    blended = torch.einsum("vj,bjrc->bvrc", weights, transforms[:, :, :3, :])
    posed = (blended[..., :3] @ vertices[..., None])[..., 0] + blended[..., 3]
    return posed, posed_joints
