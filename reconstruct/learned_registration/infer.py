"""A calibrated session's frames to template meshes with the learned registration.

Per frame: the head is placed from the masks (triangulated centroids) when the session has
them, else where the cameras' optical axes meet; the network predicts identity, expression,
joint rotations and pose from the images; after all frames, the identity is averaged over the
frames (one person per session, as the classic route shares one) and the meshes re-evaluated.
Confidence per vertex: the fraction of cameras that see it from the front (normal towards the
camera, projection inside the image); occlusion is not tested.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from headcap.reconstruct.learned_registration.model import (load_weights, locate_head, predict_vertices,
                                                            prepare_views, rotation_centre, world_from_head)

__all__ = ["LearnedRegistrar", "FrameResult", "read_view_images"]


@dataclass
class FrameResult:
    vertices: np.ndarray          # [V, 3] float64 world metres
    confidence: np.ndarray        # [V]
    identity: np.ndarray          # [Ni]
    expression: np.ndarray        # [Ne]
    joint_rotations: np.ndarray   # [J, 3]
    world_from_head: np.ndarray   # [4, 4]
    stats: dict = field(default_factory=dict)


def read_view_images(session, t: int, cameras: list[str]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """RGB uint8 images of frame index t (position in session.frames) and its masks (None when
    any camera lacks one)."""
    import cv2

    images, masks = [], []
    for cam in cameras:
        path = session.image_path(t, cam)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image (frames[{t}].images.{cam})")
        images.append(np.ascontiguousarray(bgr[..., ::-1]))
        mpath = session.mask_path(t, cam)
        m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE) if mpath is not None and mpath.is_file() else None
        masks.append(None if m is None else m > 127)
    return images, (masks if all(m is not None for m in masks) else None)


class LearnedRegistrar:
    def __init__(self, head_model, weights=None, head_spec: str = "default", threads: int = 2):
        net, trained_head, info = load_weights(weights)
        c = net.config
        if (c.num_identity, c.num_expression, c.num_joints) != (head_model.num_identity, head_model.num_expression,
                                                                 head_model.num_joints):
            raise ValueError(f"{weights or 'shipped weights'}: trained for head {trained_head!r} "
                             f"({c.num_identity} identity, {c.num_expression} expression, {c.num_joints} joints), "
                             f"not for {head_spec!r} ({head_model.num_identity}, {head_model.num_expression}, "
                             f"{head_model.num_joints}); train weights for it with `headcap train-registration --head`")
        self.net, self.info, self.model = net, info, head_model
        self.trained_head = trained_head
        self.centre_head = torch.from_numpy(rotation_centre(head_model))
        self.faces = head_model.faces.cpu().numpy()
        self.threads = threads

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], cameras, masks=None) -> FrameResult:
        from headcap.core.threads import torch_threads

        tic = time.perf_counter()
        with torch_threads(self.threads):
            centre = locate_head(cameras, masks)
            views = prepare_views(images, cameras, self.net.config, centre)
            verts, params = predict_vertices(self.net, self.model, [views], self.centre_head)
        v = verts[0].double().numpy()
        return FrameResult(v, self.confidence(v, cameras), params["identity"][0].double().numpy(),
                           params["expression"][0].double().numpy(), params["joint_rotations"][0].double().numpy(),
                           params["world_from_head"][0].numpy(), {"seconds": time.perf_counter() - tic,
                                                                  "views": len(cameras)})

    @torch.no_grad()
    def with_identity(self, result: FrameResult, identity: np.ndarray, cameras) -> FrameResult:
        """The frame re-evaluated with another identity (pose, expression, joints kept)."""
        kw = {"world_from_head": torch.from_numpy(result.world_from_head)[None].to(self.model.dtype)}
        if self.model.num_identity:
            kw["identity"] = torch.from_numpy(np.asarray(identity))[None].to(self.model.dtype)
        if self.model.num_expression:
            kw["expression"] = torch.from_numpy(result.expression)[None].to(self.model.dtype)
        if self.model.num_joints:
            kw["joint_rotations"] = torch.from_numpy(result.joint_rotations)[None].to(self.model.dtype)
        v = self.model.forward(**kw).vertices[0].double().numpy()
        return FrameResult(v, self.confidence(v, cameras), np.asarray(identity), result.expression,
                           result.joint_rotations, result.world_from_head, dict(result.stats))

    def confidence(self, vertices: np.ndarray, cameras) -> np.ndarray:
        from headcap.reconstruct.registration_nonrigid import vertex_normals_np

        normals = vertex_normals_np(vertices, self.faces)
        seen = np.zeros(len(vertices))
        for cam in cameras:
            pix, depth = cam.project(vertices)
            pix, depth = pix.numpy(), depth.numpy()
            inside = (depth > 0) & (pix[:, 0] >= 0) & (pix[:, 1] >= 0) & (pix[:, 0] <= cam.width - 1) & \
                (pix[:, 1] <= cam.height - 1)
            to_cam = np.asarray(cam.centre) - vertices
            facing = (normals * to_cam).sum(1) > 0
            seen += inside & facing
        return seen / max(len(cameras), 1)
