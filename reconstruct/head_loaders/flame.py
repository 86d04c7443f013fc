"""FLAME 2020 / 2023 (MPI-IS; the user's own licensed file, never shipped) -> HeadModel.

Reads `generic_model.pkl` / `flame2023.pkl` through `safe_pickle` (no code runs, chumpy is not
needed), or an `.npz` with the same keys holding plain arrays (J_regressor dense).
Keys used: v_template [V,3], f [F,3], shapedirs [V,3,Ns+Ne], posedirs [V,3,9(J-1)],
J_regressor [J,V] (scipy sparse in the pkl), weights [V,J], kintree_table [2,J].
FLAME is in metres with +x the subject's left, +y up, +z forward: already the head frame.
The first `num_shape` shapedirs (300 in FLAME 2020/2023) are identity, the rest expression
(PCA modes, named `exp000`...). Joints are `global, neck, jaw, eye_left, eye_right` (the eye
names follow the sign of the joint's x, so a file with swapped eyes is still named right).
FLAME's landmark embedding is barycentric and lives in separate files: landmark_ids is empty.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from headcap.core.fileio import FileFormatError, read_npz
from headcap.reconstruct.head_loaders.safe_pickle import load_model_pickle
from headcap.reconstruct.head_model import HeadModel

__all__ = ["load_flame", "FLAME_NUM_SHAPE"]

FLAME_NUM_SHAPE = 300
LICENCE = (
    "FLAME (Max Planck Institute for Intelligent Systems), loaded from the user's own licensed "
    "file; see https://flame.is.tue.mpg.de for its licence. Not redistributed by headcap."
)
_REQUIRED = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
_JOINT_NAMES = ["global", "neck", "jaw", "eye_1", "eye_2"]


def load_flame(path: str | os.PathLike, dtype: torch.dtype = torch.float32, num_shape: int = FLAME_NUM_SHAPE) -> HeadModel:
    """Load a FLAME model file (.pkl via the restricted unpickler, or .npz of plain arrays)."""
    path = Path(path)
    if path.suffix == ".pkl":
        data = load_model_pickle(path)
    elif path.suffix == ".npz":
        try:
            data = read_npz(path)
        except FileFormatError as exc:
            raise ValueError(f"{exc}; a sparse or object J_regressor must be saved dense") from None
    else:
        raise ValueError(f"{path}: expected a FLAME .pkl or .npz file")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: missing FLAME fields {missing}")
    return _build(data, path, dtype, num_shape)


def _array(data: dict, key: str, path: Path, ndim: int, dtype=np.float64) -> np.ndarray:
    try:
        value = np.asarray(data[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: field {key!r} is not numeric ({exc})") from exc
    if value.ndim != ndim:
        raise ValueError(f"{path}: field {key!r} must have {ndim} dimensions, got shape {value.shape}")
    return value


def _build(data: dict, path: Path, dtype: torch.dtype, num_shape: int) -> HeadModel:
    template = _array(data, "v_template", path, 2)
    num_v = template.shape[0]
    faces = _array(data, "f", path, 2, np.int64)
    shapedirs = _array(data, "shapedirs", path, 3)
    posedirs = _array(data, "posedirs", path, 3)
    regressor = _array(data, "J_regressor", path, 2)
    weights = _array(data, "weights", path, 2)
    kintree = _array(data, "kintree_table", path, 2, np.int64)
    num_j = kintree.shape[1]
    checks = {
        "v_template": (template.shape, (num_v, 3)),
        "shapedirs": (shapedirs.shape[:2], (num_v, 3)),
        "posedirs": (posedirs.shape, (num_v, 3, 9 * (num_j - 1))),
        "J_regressor": (regressor.shape, (num_j, num_v)),
        "weights": (weights.shape, (num_v, num_j)),
        "kintree_table": (kintree.shape, (2, num_j)),
    }
    for key, (got, expected) in checks.items():
        if tuple(got) != tuple(expected):
            raise ValueError(f"{path}: field {key!r} has shape {tuple(got)}, expected {tuple(expected)}")
    if not 0 < num_shape <= shapedirs.shape[2]:
        raise ValueError(f"{path}: num_shape={num_shape} but shapedirs has {shapedirs.shape[2]} modes")

    # kintree_table row 0 holds parents; the root's entry is -1 or its uint32 wrap-around.
    parents = kintree[0].copy()
    parents[(parents < 0) | (parents >= num_j)] = -1
    order = kintree[1]
    if not np.array_equal(order, np.arange(num_j)):
        raise ValueError(f"{path}: kintree_table row 1 must be 0..{num_j - 1}, got {order.tolist()}")
    joint_names = list(_JOINT_NAMES) if num_j == len(_JOINT_NAMES) else [f"joint{j}" for j in range(num_j)]
    rest_joints = regressor @ template
    if num_j == len(_JOINT_NAMES):
        left_first = rest_joints[3, 0] >= rest_joints[4, 0]
        joint_names[3:5] = ["eye_left", "eye_right"] if left_first else ["eye_right", "eye_left"]

    eye_columns = [j for j, n in enumerate(joint_names) if n.startswith("eye_")]
    masks = {}
    if eye_columns:
        masks["eyes"] = torch.from_numpy(np.isin(weights.argmax(1), eye_columns))

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(dtype)

    num_expr = shapedirs.shape[2] - num_shape
    return HeadModel(
        name=f"flame:{path.stem}",
        template=tensor(template),
        faces=torch.from_numpy(faces),
        identity_basis=tensor(shapedirs[:, :, :num_shape].transpose(2, 0, 1)),
        expression_basis=tensor(shapedirs[:, :, num_shape:].transpose(2, 0, 1)),
        expression_names=[f"exp{k:03d}" for k in range(num_expr)],
        joint_names=joint_names,
        parents=torch.from_numpy(parents),
        joint_regressor=tensor(regressor),
        lbs_weights=tensor(weights),
        pose_correctives=tensor(posedirs.transpose(2, 0, 1)),
        landmark_convention="",
        region_masks=masks,
        licence=LICENCE,
    )
