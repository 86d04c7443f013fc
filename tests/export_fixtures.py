"""Shared inputs of the export tests: a random tracked sequence and the head model's vertices for it."""
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from headcap.avatar.export.sequence import HeadSequence


def random_sequence(model, frames: int, seed: int = 0) -> HeadSequence:
    rng = np.random.default_rng(seed)
    pose = np.tile(np.eye(4), (frames, 1, 1))
    pose[:, :3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=(frames, 3))).as_matrix()
    pose[:, :3, 3] = rng.normal(scale=0.1, size=(frames, 3))
    return HeadSequence(
        identity=rng.normal(size=min(20, model.num_identity)),
        expression=rng.uniform(0, 1, (frames, model.num_expression)), expression_names=list(model.expression_names),
        joint_rotations=rng.normal(scale=0.15, size=(frames, model.num_joints, 3)), joint_names=list(model.joint_names),
        world_from_head=pose, timestamps=np.arange(frames) / 25.0)


def model_vertices(model, seq: HeadSequence, frame: int | None, expression=None) -> np.ndarray:
    m64 = model.to(dtype=torch.float64)
    ident = torch.tensor(seq.identity[None])
    if frame is None:
        return m64(identity=ident, expression=expression).vertices[0].numpy()
    return m64(identity=ident, expression=torch.tensor(seq.expression[frame:frame + 1]),
               joint_rotations=torch.tensor(seq.joint_rotations[frame:frame + 1]),
               world_from_head=torch.tensor(seq.world_from_head[frame])).vertices[0].numpy()
