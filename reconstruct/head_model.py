"""One class for every linear head model (ICT-FaceKit, FLAME, the embedded MakeHuman head).

Head frame (every loader converts to it): metres, +x towards the subject's LEFT (the viewer's
right when facing the subject), +y up, +z forward out of the face; right-handed. The origin is
the model's own (ICT and FLAME keep theirs, the default head puts it between the eyeball
centres). `world_from_head` maps this frame into the world.

Vertices of a head model:
    rest = template + sum_i identity[i] * identity_basis[i] + sum_e expression[e] * expression_basis[e]
    joints = joint_regressor @ rest            (FLAME style)
          or rest_joints + sum_i identity[i] * joint_identity_basis[i]
    posed = lbs(rest, joint_rotations, joints, parents, lbs_weights, pose_correctives)
    out = world_from_head * posed

Loaders (FLAME, ICT-FaceKit, the default head, spec strings) are reconstruct.head_loaders; this
module does not import them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headcap.reconstruct.lbs import lbs

__all__ = ["HeadModel", "HeadModelOutput"]

_NPZ_FORMAT = "headcap.head_model/1"
_FLOAT_FIELDS = (
    "template", "uvs", "identity_basis", "expression_basis", "rest_joints", "joint_regressor",
    "joint_identity_basis", "lbs_weights", "pose_correctives",
)
_INDEX_FIELDS = ("faces", "face_uvs", "parents", "landmark_ids")


@dataclass
class HeadModelOutput:
    """vertices [B, V, 3], landmarks [B, L, 3], joints [B, J, 3] (None without joints); metres."""

    vertices: Tensor
    landmarks: Tensor
    joints: Tensor | None


@dataclass
class HeadModel:
    """A linear head model in the head frame (module docstring), in metres.

    Shapes: V vertices, F triangles, T UV coordinates, Ni identity and Ne expression modes,
    J joints, L landmarks.
    """

    name: str
    template: Tensor  # [V, 3]
    faces: Tensor  # [F, 3] long, counter-clockwise seen from outside
    identity_basis: Tensor  # [Ni, V, 3]
    expression_basis: Tensor  # [Ne, V, 3]
    expression_names: list[str]
    uvs: Tensor | None = None  # [T, 2], origin bottom-left (OBJ convention)
    face_uvs: Tensor | None = None  # [F, 3] long, indices into uvs
    joint_names: list[str] = field(default_factory=list)
    parents: Tensor | None = None  # [J] long, parents[j] < j, -1 for the root
    rest_joints: Tensor | None = None  # [J, 3] joints of the template
    joint_regressor: Tensor | None = None  # [J, V]; wins over rest_joints when both are set
    joint_identity_basis: Tensor | None = None  # [Ni, J, 3] joint motion per identity mode
    lbs_weights: Tensor | None = None  # [V, J], rows sum to one
    pose_correctives: Tensor | None = None  # [9 * (J - 1), V, 3]
    landmark_ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [L]
    landmark_convention: str = "ibug68"  # order of landmark_ids; "" when there are none
    region_masks: dict[str, Tensor] = field(default_factory=dict)  # name -> [V] bool
    licence: str = ""

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ properties
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def dtype(self) -> torch.dtype:
        return self.template.dtype

    @property
    def device(self) -> torch.device:
        return self.template.device

    def expression_index(self, name: str) -> int:
        """Index of a named expression; ValueError listing the names when absent."""
        try:
            return self.expression_names.index(name)
        except ValueError:
            raise ValueError(
                f"{self.name}: no expression named {name!r}; have {self.expression_names}"
            ) from None

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        identity: Tensor | None = None,
        expression: Tensor | None = None,
        joint_rotations: Tensor | None = None,
        world_from_head: Tensor | None = None,
    ) -> HeadModelOutput:
        """Evaluate the model.

        identity: [B, k] with k <= Ni (missing trailing modes are zero); expression: [B, k],
        k <= Ne; joint_rotations: [B, J, 3] axis-angle (radians) in each joint's parent frame;
        world_from_head: [B, 4, 4] or [4, 4]. Any argument may be None (zeros / identity); B
        comes from the arguments given (1 when none is). Differentiable in every argument.
        """
        batch = self._batch_size(identity, expression, joint_rotations, world_from_head)
        verts = self.template.expand(batch, -1, -1)
        if identity is not None:
            ident = self._coefficients(identity, self.num_identity, batch, "identity")
            verts = verts + torch.einsum("bk,kvc->bvc", ident, self.identity_basis[: ident.shape[1]])
        if expression is not None:
            expr = self._coefficients(expression, self.num_expression, batch, "expression")
            verts = verts + torch.einsum("bk,kvc->bvc", expr, self.expression_basis[: expr.shape[1]])

        joints = None
        if self.num_joints > 0:
            joints = self._rest_joints(verts, identity, batch)
            if joint_rotations is not None:
                expected = (batch, self.num_joints, 3)
                if tuple(joint_rotations.shape) != expected:
                    raise ValueError(
                        f"joint_rotations: expected shape {expected} for joints {self.joint_names}, "
                        f"got {tuple(joint_rotations.shape)}"
                    )
                verts, joints = lbs(
                    verts, joint_rotations.to(self.dtype), joints, self.parents,
                    self.lbs_weights, self.pose_correctives,
                )

        if world_from_head is not None:
            transform = world_from_head.to(self.dtype)
            if transform.shape[-2:] != (4, 4) or transform.dim() not in (2, 3):
                raise ValueError(f"world_from_head: expected [B, 4, 4] or [4, 4], got {tuple(transform.shape)}")
            transform = transform.expand(batch, 4, 4)
            rot, trans = transform[:, None, :3, :3], transform[:, None, :3, 3]
            verts = (rot @ verts[..., None])[..., 0] + trans
            if joints is not None:
                joints = (rot @ joints[..., None])[..., 0] + trans
        if verts.data_ptr() == self.template.data_ptr():
            verts = verts.clone()  # never hand out a view of the template
        landmarks = verts[:, self.landmark_ids]
        return HeadModelOutput(vertices=verts, landmarks=landmarks, joints=joints)

    __call__ = forward

    def _rest_joints(self, verts: Tensor, identity: Tensor | None, batch: int) -> Tensor:
        if self.joint_regressor is not None:
            return torch.einsum("jv,bvc->bjc", self.joint_regressor, verts)
        joints = self.rest_joints.expand(batch, -1, -1)
        if identity is not None and self.joint_identity_basis is not None:
            ident = self._coefficients(identity, self.num_identity, batch, "identity")
            joints = joints + torch.einsum("bk,kjc->bjc", ident, self.joint_identity_basis[: ident.shape[1]])
        return joints

    def _coefficients(self, coeffs: Tensor, available: int, batch: int, name: str) -> Tensor:
        if coeffs.dim() != 2 or coeffs.shape[0] != batch or coeffs.shape[1] > available:
            raise ValueError(
                f"{name}: expected shape [B={batch}, k<={available}] for model {self.name!r}, "
                f"got {tuple(coeffs.shape)}"
            )
        return coeffs.to(self.dtype)

    @staticmethod
    def _batch_size(identity, expression, joint_rotations, world_from_head) -> int:
        sizes = {}
        for name, value, batched_dim in (
            ("identity", identity, 2), ("expression", expression, 2),
            ("joint_rotations", joint_rotations, 3), ("world_from_head", world_from_head, 3),
        ):
            if value is not None and value.dim() == batched_dim:
                sizes[name] = int(value.shape[0])
        if len(set(sizes.values())) > 1:
            raise ValueError(f"forward: arguments disagree on the batch size: {sizes}")
        return next(iter(sizes.values()), 1)

    # ------------------------------------------------------------------ conversion
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "HeadModel":
        """A copy with float tensors cast to `dtype` and every tensor moved to `device`."""
        changes: dict = {}
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value.to(device=device, dtype=dtype)
        for name in _INDEX_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value.to(device=device)
        changes["region_masks"] = {k: v.to(device=device) for k, v in self.region_masks.items()}
        return replace(self, **changes)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write plain arrays (no pickles) atomically; `load_npz` reads them back."""
        arrays: dict[str, np.ndarray] = {"format": np.array(_NPZ_FORMAT)}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "region_masks":
                for key, mask in value.items():
                    arrays[f"region_mask/{key}"] = mask.detach().cpu().numpy()
            elif isinstance(value, Tensor):
                arrays[f.name] = value.detach().cpu().numpy()
            elif isinstance(value, list):
                arrays[f.name] = np.array(value, dtype=np.str_).reshape(len(value))
            else:
                arrays[f.name] = np.array(value)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load_npz(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> "HeadModel":
        """Read a file written by `save_npz` (allow_pickle=False)."""
        from headcap.core.fileio import read_npz

        path = Path(path)
        data = read_npz(path)
        if "format" not in data or str(data["format"]) != _NPZ_FORMAT:
            raise ValueError(f"{path}: field 'format' is not {_NPZ_FORMAT!r}; not a headcap head model")
        kwargs: dict = {"region_masks": {}}
        for key, value in data.items():
            if key == "format":
                continue
            if key.startswith("region_mask/"):
                kwargs["region_masks"][key.split("/", 1)[1]] = torch.from_numpy(value.astype(bool))
            elif key in _FLOAT_FIELDS:
                kwargs[key] = torch.from_numpy(np.ascontiguousarray(value)).to(dtype)
            elif key in _INDEX_FIELDS:
                kwargs[key] = torch.from_numpy(value.astype(np.int64))
            elif key in ("expression_names", "joint_names"):
                kwargs[key] = [str(s) for s in value.tolist()]
            elif key in ("name", "licence", "landmark_convention"):
                kwargs[key] = str(value)
            else:
                raise ValueError(f"{path}: unknown field {key!r}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{path}: missing fields ({exc})") from exc

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        def fail(field_name: str, message: str) -> None:
            raise ValueError(f"HeadModel {self.name!r}: field {field_name!r} {message}")

        if self.template.dim() != 2 or self.template.shape[1] != 3:
            fail("template", f"must be [V, 3], got {tuple(self.template.shape)}")
        if not self.template.is_floating_point():
            fail("template", f"must be floating point, got {self.template.dtype}")
        num_v = self.num_vertices
        for name in ("faces", "face_uvs", "parents", "landmark_ids"):
            value = getattr(self, name)
            if value is not None and value.dtype != torch.long:
                fail(name, f"must be torch.long, got {value.dtype}")
        if self.faces.dim() != 2 or self.faces.shape[1] != 3:
            fail("faces", f"must be [F, 3], got {tuple(self.faces.shape)}")
        if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= num_v):
            fail("faces", f"indexes outside [0, {num_v})")
        for name in ("identity_basis", "expression_basis"):
            value = getattr(self, name)
            if value.dim() != 3 or tuple(value.shape[1:]) != (num_v, 3):
                fail(name, f"must be [N, {num_v}, 3], got {tuple(value.shape)}")
        if len(self.expression_names) != self.num_expression:
            fail("expression_names", f"has {len(self.expression_names)} names for {self.num_expression} modes")
        if len(set(self.expression_names)) != len(self.expression_names):
            fail("expression_names", "has duplicates")
        if (self.uvs is None) != (self.face_uvs is None):
            fail("uvs", "and face_uvs must be given together")
        if self.uvs is not None:
            if self.uvs.dim() != 2 or self.uvs.shape[1] != 2:
                fail("uvs", f"must be [T, 2], got {tuple(self.uvs.shape)}")
            if tuple(self.face_uvs.shape) != tuple(self.faces.shape):
                fail("face_uvs", f"must match faces {tuple(self.faces.shape)}, got {tuple(self.face_uvs.shape)}")
            if self.face_uvs.numel() and (int(self.face_uvs.min()) < 0 or int(self.face_uvs.max()) >= self.uvs.shape[0]):
                fail("face_uvs", f"indexes outside [0, {self.uvs.shape[0]})")
        if self.landmark_ids.dim() != 1:
            fail("landmark_ids", f"must be [L], got {tuple(self.landmark_ids.shape)}")
        if self.landmark_ids.numel() and (int(self.landmark_ids.min()) < 0 or int(self.landmark_ids.max()) >= num_v):
            fail("landmark_ids", f"indexes outside [0, {num_v})")
        for key, mask in self.region_masks.items():
            if mask.dtype != torch.bool or tuple(mask.shape) != (num_v,):
                fail("region_masks", f"entry {key!r} must be a bool [{num_v}] tensor, got {mask.dtype} {tuple(mask.shape)}")
        self._validate_joints(fail)

    def _validate_joints(self, fail) -> None:
        num_j, num_v = self.num_joints, self.num_vertices
        if num_j == 0:
            for name in ("parents", "rest_joints", "joint_regressor", "joint_identity_basis", "lbs_weights", "pose_correctives"):
                if getattr(self, name) is not None:
                    fail(name, "is set but joint_names is empty")
            return
        if self.parents is None or tuple(self.parents.shape) != (num_j,):
            fail("parents", f"must be [{num_j}] for joints {self.joint_names}")
        for j, p in enumerate(self.parents.tolist()):
            if not (p == -1 or 0 <= p < j):
                fail("parents", f"entry {j} = {p}: a parent must come before its child (or be -1)")
        if self.joint_regressor is None and self.rest_joints is None:
            fail("rest_joints", "or joint_regressor is required when the model has joints")
        if self.joint_regressor is not None and tuple(self.joint_regressor.shape) != (num_j, num_v):
            fail("joint_regressor", f"must be [{num_j}, {num_v}], got {tuple(self.joint_regressor.shape)}")
        if self.rest_joints is not None and tuple(self.rest_joints.shape) != (num_j, 3):
            fail("rest_joints", f"must be [{num_j}, 3], got {tuple(self.rest_joints.shape)}")
        if self.joint_identity_basis is not None and tuple(self.joint_identity_basis.shape) != (self.num_identity, num_j, 3):
            fail("joint_identity_basis", f"must be [{self.num_identity}, {num_j}, 3], got {tuple(self.joint_identity_basis.shape)}")
        if self.lbs_weights is None or tuple(self.lbs_weights.shape) != (num_v, num_j):
            shape = None if self.lbs_weights is None else tuple(self.lbs_weights.shape)
            fail("lbs_weights", f"must be [{num_v}, {num_j}], got {shape}")
        row_sums = self.lbs_weights.sum(1)
        if float((row_sums - 1).abs().max()) > 1e-3:
            fail("lbs_weights", f"rows must sum to one (worst row sums to {float(row_sums[(row_sums - 1).abs().argmax()]):.4f})")
        if self.pose_correctives is not None and tuple(self.pose_correctives.shape) != (9 * (num_j - 1), num_v, 3):
            fail("pose_correctives", f"must be [{9 * (num_j - 1)}, {num_v}, 3], got {tuple(self.pose_correctives.shape)}")
