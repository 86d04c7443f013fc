"""What the avatar trainer and evaluator read from a session: the cameras (rig.json), the masked
images (undistorted to the pinhole cameras the rasterizer uses) and the per-frame head-model
parameters: SESSION/tracking/params.npz when tracking has run, else a synthetic session's
ground_truth/params.npz (same fields: identity [Ni], expression [T, Ne], expression_names [Ne],
joint_rotations [T, J, 3], joint_names [J] (optional), world_from_head [T, 4, 4])."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["HeadParams", "SessionImages", "read_head_params", "head_params_path", "model_spec_for",
           "load_images", "frame_vertices", "parse_frames"]


@dataclass
class HeadParams:
    """Per-frame head-model parameters, already reordered to a model's expression/joint names."""

    identity: np.ndarray  # [Ni]
    expression: np.ndarray  # [T, Ne_model]
    joint_rotations: np.ndarray | None  # [T, J_model, 3]
    world_from_head: np.ndarray  # [T, 4, 4]
    source: Path

    @property
    def frames(self) -> int:
        return int(self.world_from_head.shape[0])


HEAD_PARAMS = ("auto", "tracking", "ground_truth")


def head_params_path(session, source: str = "auto") -> Path:
    """The head-model parameters a session offers. source "auto": SESSION/tracking/params.npz if
    present, else a synthetic session's ground truth; "tracking" / "ground_truth": only that one.
    ValueError naming the session when what is asked for is missing."""
    if source not in HEAD_PARAMS:
        raise ValueError(f"head_params: expected one of {HEAD_PARAMS}, got {source!r}")
    tracked = Path(session.root) / "tracking" / "params.npz"
    if source != "ground_truth" and tracked.is_file():
        return tracked
    gt = session.extra.get("ground_truth") if isinstance(session.extra, dict) else None
    if gt and source != "tracking":
        path = session.path(f"{gt}/params.npz", "extra.ground_truth")
        if path.is_file():
            return path
    wanted = {"auto": "neither tracking/params.npz (run `headcap track`) nor a synthetic ground_truth/params.npz",
              "tracking": "no tracking/params.npz (run `headcap track`)",
              "ground_truth": "no synthetic ground_truth/params.npz"}[source]
    raise ValueError(f"{session.manifest_path}: no head-model parameters ({source}): {wanted}")


def model_spec_for(session, params_path: Path | None = None, override: str | None = None) -> str:
    """Head model spec: `override`, else the params file's `head_model_spec` (or `head_spec`, as
    the tracking stage writes it), else the session's
    extra.head_model_spec, else "default"."""
    if override:
        return override
    if params_path is not None:
        from headcap.core.fileio import read_npz

        data = read_npz(params_path)
        for key in ("head_model_spec", "head_spec"):  # ground truth's name, the tracking stage's name
            if key in data:
                return str(np.asarray(data[key]).reshape(-1)[0])
    extra = session.extra if isinstance(session.extra, dict) else {}
    return str(extra.get("head_model_spec") or "default")


def read_head_params(path: Path, model) -> HeadParams:
    """Read params.npz and map its expressions/joints onto `model` by name (ValueError naming the
    file and field for anything missing, misshapen or unknown to the model)."""
    from headcap.core.fileio import FileFormatError, read_npz

    path = Path(path)
    data = read_npz(path)
    for key in ("identity", "expression", "world_from_head"):
        if key not in data:
            raise FileFormatError(path, key, "missing")
    wfh = np.asarray(data["world_from_head"], dtype=np.float64)
    if wfh.ndim != 3 or wfh.shape[1:] != (4, 4) or not np.isfinite(wfh).all():
        raise FileFormatError(path, "world_from_head", f"expected finite [T, 4, 4], got {list(wfh.shape)}")
    t = wfh.shape[0]
    expr = np.asarray(data["expression"], dtype=np.float64)
    if expr.ndim != 2 or expr.shape[0] != t or not np.isfinite(expr).all():
        raise FileFormatError(path, "expression", f"expected finite [T={t}, Ne], got {list(expr.shape)}")
    names = [str(n) for n in data["expression_names"]] if "expression_names" in data else \
        list(model.expression_names[: expr.shape[1]])
    if len(names) != expr.shape[1]:
        raise FileFormatError(path, "expression_names", f"{len(names)} names for {expr.shape[1]} expression columns")
    unknown = [n for n in names if n not in model.expression_names]
    if unknown:
        raise FileFormatError(path, "expression_names", f"{unknown[:5]} not in head model {model.name!r}")
    expression = np.zeros((t, model.num_expression))
    for i, name in enumerate(names):
        expression[:, model.expression_names.index(name)] = expr[:, i]
    rotations = None
    if "joint_rotations" in data and model.num_joints:
        rot = np.asarray(data["joint_rotations"], dtype=np.float64)
        if rot.ndim != 3 or rot.shape[0] != t or rot.shape[2] != 3 or not np.isfinite(rot).all():
            raise FileFormatError(path, "joint_rotations", f"expected finite [T={t}, J, 3], got {list(rot.shape)}")
        jnames = [str(n) for n in data["joint_names"]] if "joint_names" in data else list(model.joint_names[: rot.shape[1]])
        unknown = [n for n in jnames if n not in model.joint_names]
        if unknown or len(jnames) != rot.shape[1]:
            raise FileFormatError(path, "joint_names", f"{jnames} do not match head model joints {model.joint_names}")
        rotations = np.zeros((t, model.num_joints, 3))
        for i, name in enumerate(jnames):
            rotations[:, model.joint_names.index(name)] = rot[:, i]
    ident = np.asarray(data["identity"], dtype=np.float64).reshape(-1)[: model.num_identity]
    if not np.isfinite(ident).all():
        raise FileFormatError(path, "identity", "holds non-finite values")
    return HeadParams(ident, expression, rotations, wfh, path)


def frame_vertices(model, identity: Tensor, params: HeadParams, frames: list[int]) -> Tensor:
    """World-space vertices [len(frames), V, 3] float32 for `frames` (identity given separately
    so that cross-reenactment can keep the avatar's own)."""
    out = []
    with torch.no_grad():
        for t in frames:
            rot = None if params.joint_rotations is None else torch.from_numpy(params.joint_rotations[t:t + 1]).float()
            v = model.forward(identity=identity.float().reshape(1, -1),
                              expression=torch.from_numpy(params.expression[t:t + 1]).float(),
                              joint_rotations=rot, world_from_head=torch.from_numpy(params.world_from_head[t]).float())
            out.append(v.vertices[0].float())
    return torch.stack(out)


@dataclass
class SessionImages:
    """Undistorted masked images as uint8 (memory: a 16-camera, 30-frame, 256 px session is 94 MB)."""

    cameras: dict  # cam id -> pinhole Camera
    frames: list[int]
    images: dict  # (frame, cam) -> uint8 tensor [H, W, 3] (background black)
    masks: dict  # (frame, cam) -> uint8 tensor [H, W]

    def view(self, frame: int, cam: str) -> tuple[Tensor, Tensor]:
        """(image [H, W, 3] float in [0, 1], mask [H, W] float)."""
        return self.images[frame, cam].float() / 255.0, self.masks[frame, cam].float() / 255.0


def load_images(session, rig, frames: list[int], cameras: list[str]) -> SessionImages:
    """Read, undistort and mask the images of `frames` x `cameras` (missing masks: all ones)."""
    import cv2

    from headcap.capture.video import read_image

    images, masks = {}, {}
    pinholes = {cam: rig[cam].undistorted() for cam in cameras}
    for t in frames:
        for cam in cameras:
            image = read_image(session.image_path(t, cam))
            mask_path = session.mask_path(t, cam)
            mask = read_image(mask_path, cv2.IMREAD_GRAYSCALE) if mask_path is not None else \
                np.full(image.shape[:2], 255, np.uint8)
            if image.shape[:2] != (rig[cam].height, rig[cam].width):
                raise ValueError(f"{session.image_path(t, cam)}: image is {image.shape[1]}x{image.shape[0]}, "
                                 f"camera {cam} in the rig is {rig[cam].width}x{rig[cam].height}")
            img = rig[cam].undistort_image(image)
            msk = rig[cam].undistort_image(mask)
            if msk.ndim == 3:
                msk = msk[..., 0]
            img = (img.astype(np.uint16) * msk[..., None].astype(np.uint16) + 127) // 255
            images[t, cam] = torch.from_numpy(np.ascontiguousarray(img.astype(np.uint8)))
            masks[t, cam] = torch.from_numpy(np.ascontiguousarray(msk))
    return SessionImages(pinholes, list(frames), images, masks)


def parse_frames(text: str | None, count: int) -> list[int]:
    """"A:B" (B exclusive), "A:" or "N" -> frame list within 0..count-1; None -> all."""
    if not text:
        return list(range(count))
    try:
        if ":" in text:
            a, _, b = text.partition(":")
            start = int(a) if a else 0
            stop = int(b) if b else count
        else:
            start = int(text)
            stop = start + 1
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected A:B, A: or N") from None
    if not (0 <= start < stop <= count):
        raise ValueError(f"--frames {text!r}: must select frames within 0..{count - 1}")
    return list(range(start, stop))
