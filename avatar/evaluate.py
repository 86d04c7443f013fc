"""Rendering and scoring a trained `GaussianAvatar`.

* novel view: the held-out cameras at the training frames;
* self-reenactment: the held-out frames (their tracked / ground-truth parameters) in every camera;
* cross-reenactment: another sequence's expression, joints and head pose with the avatar's own
  identity (no ground truth: images only);
* turntable: cameras circling the head about its own up axis.

PSNR and SSIM (avatar.image_metrics) on the masked images, background black, whole frame (as
GaussianAvatars reports them); PSNR inside the mask is reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headcap.avatar.image_metrics import psnr, ssim

__all__ = ["PinholeView", "evaluate_split", "side_by_side", "turntable_cameras", "render_to_folder",
           "write_png_atomic", "to_uint8"]


@dataclass
class PinholeView:
    """The camera fields the rasterizer reads."""

    K: np.ndarray
    cam_from_world: np.ndarray
    width: int
    height: int


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.detach().clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from headcap.core.fileio import atomic_write_bytes

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data.tobytes())


def side_by_side(prediction: Tensor, target: Tensor) -> np.ndarray:
    """[H, 3W, 3] uint8: ground truth | render | error (x4, inferno)."""
    import cv2

    pred, gt = to_uint8(prediction), to_uint8(target)
    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(-1)
    err_map = cv2.applyColorMap(np.clip(err * 4, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    return np.concatenate([gt, pred, err_map], axis=1)


def evaluate_split(avatar, images, vertices: Tensor, frames: list[int], cameras: list[str],
                   keep_images: int = 0) -> dict:
    """Mean PSNR / SSIM (and PSNR inside the mask) of `frames` x `cameras`; the first
    `keep_images` side-by-side tiles are returned under "tiles"."""
    from headcap.core.threads import serial_torch_ops

    ps, ss, pm, tiles = [], [], [], []
    with torch.no_grad(), serial_torch_ops():
        for t in frames:
            for cam in cameras:
                image, mask = images.view(t, cam)
                rgb = avatar.render(vertices[t], images.cameras[cam]).rgb.clamp(0, 1)
                ps.append(psnr(rgb, image))
                pm.append(psnr(rgb, image, mask))
                ss.append(float(ssim(rgb, image)))
                if len(tiles) < keep_images:
                    tiles.append(side_by_side(rgb, image))
    if not ps:
        return {"views": 0}
    return {"views": len(ps), "psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)),
            "psnr_in_mask_db": float(np.mean(pm)), "psnr_db_min": float(np.min(ps)), "tiles": tiles}


def turntable_cameras(vertices: Tensor, world_from_head: np.ndarray, like, count: int = 8) -> list[PinholeView]:
    """`count` cameras on a circle about the head's up axis through the mesh centre, at the
    distance and with the intrinsics of the camera `like`."""
    centre = vertices.double().mean(0).numpy()
    eye_like = -like.cam_from_world[:3, :3].T @ like.cam_from_world[:3, 3]
    radius = float(np.linalg.norm(eye_like - centre))
    rot = world_from_head[:3, :3]
    up = rot[:, 1]
    views = []
    for a in np.linspace(0, 2 * np.pi, count, endpoint=False):
        eye = centre + radius * (rot @ np.array([np.sin(a), 0.0, np.cos(a)]))
        forward = (centre - eye) / np.linalg.norm(centre - eye)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        cfw = np.eye(4)
        cfw[:3, :3] = np.stack([right, down, forward])
        cfw[:3, 3] = -cfw[:3, :3] @ eye
        views.append(PinholeView(np.asarray(like.K, dtype=np.float64), cfw, int(like.width), int(like.height)))
    return views


def render_to_folder(avatar, vertices: Tensor, frames: list[int], cameras: dict, out: Path,
                     progress=None) -> int:
    """Write out/<cam>/<t:06d>.png for every frame index in `frames` (vertices[i] belongs to
    frames[i]) and camera; returns the number of images."""
    out = Path(out)
    from headcap.core.threads import serial_torch_ops

    n = 0
    total = len(frames) * len(cameras)
    with torch.no_grad(), serial_torch_ops():
        for i, t in enumerate(frames):
            for cam, view in cameras.items():
                rgb = avatar.render(vertices[i], view).rgb
                write_png_atomic(out / cam / f"{t:06d}.png", to_uint8(rgb))
                n += 1
                if progress is not None:
                    progress(n, total)
    return n
