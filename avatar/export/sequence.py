"""The tracked-sequence file the exporters read: a plain npz of head-model parameters per frame.

    identity          [Ni]            float  identity coefficients (trailing modes zero if fewer)
    expression        [T, Ne]         float  expression weights, columns named by expression_names
    expression_names  [Ne]            str
    joint_rotations   [T, J, 3]       float  axis-angle (radians) in the parent joint's frame
    joint_names       [J]             str
    world_from_head   [T, 4, 4]       float  rigid; metres
    timestamps        [T]             float  seconds (optional; frame / 25 when absent)

The synthetic studio writes exactly this as `ground_truth/params.npz`; the tracking stage writes
the same keys (plus `head_spec`, the model it fitted) as `tracking/params.npz`. Extra keys are ignored. Every array is read with allow_pickle=False.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["HeadSequence", "read_sequence", "sequence_for_model", "find_sequence", "sequence_head_spec",
           "SEQUENCE_FILES"]


@dataclass
class HeadSequence:
    identity: np.ndarray  # [Ni]
    expression: np.ndarray  # [T, Ne]
    expression_names: list[str]
    joint_rotations: np.ndarray  # [T, J, 3]
    joint_names: list[str]
    world_from_head: np.ndarray  # [T, 4, 4]
    timestamps: np.ndarray  # [T]

    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])

    def __post_init__(self) -> None:
        t = self.expression.shape[0] if self.expression.ndim == 2 else -1
        checks = {
            "expression": (self.expression.ndim == 2 and self.expression.shape[1] == len(self.expression_names),
                           f"[T, {len(self.expression_names)}]"),
            "joint_rotations": (self.joint_rotations.shape == (t, len(self.joint_names), 3),
                                f"[{t}, {len(self.joint_names)}, 3]"),
            "world_from_head": (self.world_from_head.shape == (t, 4, 4), f"[{t}, 4, 4]"),
            "timestamps": (self.timestamps.shape == (t,), f"[{t}]"),
            "identity": (self.identity.ndim == 1, "[Ni]"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise ValueError(f"head sequence: field {name!r} must be {want}, got {getattr(self, name).shape}")
        if t < 1:
            raise ValueError("head sequence: field 'expression' has no frames")
        if len(self.timestamps) > 1 and not (np.diff(self.timestamps) > 0).all():
            raise ValueError("head sequence: field 'timestamps' must increase strictly")
        for name in ("identity", "expression", "joint_rotations", "world_from_head", "timestamps"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"head sequence: field {name!r} holds non-finite values")


def read_sequence(path: str | os.PathLike) -> HeadSequence:
    """Read a sequence npz (module docstring); ValueError naming the file and field at fault."""
    from headcap.core.fileio import read_npz

    path = Path(path)
    data = read_npz(path)
    missing = [k for k in ("expression", "expression_names", "joint_rotations", "joint_names", "world_from_head")
               if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; a head sequence needs expression, expression_names, "
                         "joint_rotations, joint_names, world_from_head (identity, timestamps optional)")
    expression = np.asarray(data["expression"], dtype=np.float64)
    t = expression.shape[0] if expression.ndim == 2 else 0
    try:
        return HeadSequence(
            identity=np.asarray(data.get("identity", np.zeros(0)), dtype=np.float64).reshape(-1),
            expression=expression,
            expression_names=[str(s) for s in np.asarray(data["expression_names"]).reshape(-1).tolist()],
            joint_rotations=np.asarray(data["joint_rotations"], dtype=np.float64),
            joint_names=[str(s) for s in np.asarray(data["joint_names"]).reshape(-1).tolist()],
            world_from_head=np.asarray(data["world_from_head"], dtype=np.float64),
            timestamps=np.asarray(data["timestamps"], dtype=np.float64) if "timestamps" in data
            else np.arange(t) / 25.0,
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def find_sequence(folder: str | os.PathLike) -> Path:
    """The sequence file of a session or run folder: the tracking stage's tracking/params.npz when
    it ran, else the synthetic studio's ground_truth/params.npz."""
    folder = Path(folder)
    for rel in SEQUENCE_FILES:
        if (folder / rel).is_file():
            return folder / rel
    raise ValueError(f"{folder}: no head sequence found (looked for {', '.join(SEQUENCE_FILES)}); "
                     "run `headcap track` first")


#: where a session keeps its head sequence, in order of preference
SEQUENCE_FILES = ("tracking/params.npz", "params.npz", "ground_truth/params.npz")


def sequence_head_spec(path: str | os.PathLike) -> str | None:
    """The head model spec a tracking params.npz records (`head_spec`), if any."""
    from headcap.core.fileio import read_npz

    data = read_npz(Path(path))
    spec = data.get("head_spec")
    return str(np.asarray(spec).reshape(-1)[0]) if spec is not None and np.asarray(spec).size else None


def sequence_for_model(sequence: HeadSequence, model) -> tuple[np.ndarray, np.ndarray]:
    """Expression [T, Ne_model] and joint rotations [T, J_model, 3] reordered to the model's names.

    Model expressions or joints the sequence does not name stay zero; a sequence name the model
    does not have is an error (its motion would be silently lost).
    """
    unknown = [n for n in sequence.expression_names if n not in model.expression_names]
    if unknown:
        raise ValueError(f"head sequence: expression(s) {unknown} are not in head model {model.name!r}")
    unknown = [n for n in sequence.joint_names if n not in model.joint_names]
    if unknown:
        raise ValueError(f"head sequence: joint(s) {unknown} are not in head model {model.name!r}")
    t = sequence.num_frames
    expression = np.zeros((t, model.num_expression))
    for i, name in enumerate(sequence.expression_names):
        expression[:, model.expression_names.index(name)] = sequence.expression[:, i]
    rotations = np.zeros((t, model.num_joints, 3))
    for i, name in enumerate(sequence.joint_names):
        rotations[:, model.joint_names.index(name)] = sequence.joint_rotations[:, i]
    return expression, rotations
