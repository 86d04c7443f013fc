"""Bake an albedo texture in the head model's UV layout from calibrated frames.

For every texel: its surface point (UV-space rasterization of the mesh, barycentric
interpolation of the posed vertices of each frame used), every camera that sees that point
(projected with the camera's lens distortion, visible when its depth matches the camera's
z-buffer within `depth_tolerance`), weighted by cos(view angle)^2; texels no camera saw are
filled from their neighbours (OpenCV Telea inpainting) so UV seams do not bleed black. The
colour is what the cameras recorded (shading included): an "albedo" only as far as the studio's
light is even.
"""
from __future__ import annotations

import numpy as np
import torch

from headcap.avatar.export.gltf import vertex_layout

__all__ = ["bake_texture"]


def _texel_surface(model, size: int):
    """(texel index [N] into size*size, glTF vertex ids [N, 3], barycentrics [N, 3])."""
    from headcap.reconstruct.rasterize_mesh import rasterize

    layout = vertex_layout(model)
    screen = torch.from_numpy(np.concatenate([layout.uvs * size - 0.5, np.ones((len(layout.uvs), 1))], 1))
    faces = torch.from_numpy(layout.indices)
    frags = rasterize(screen, faces, size, size)
    tid = frags.triangle_id.reshape(-1)
    texels = (tid >= 0).nonzero().squeeze(1)
    corners = layout.vertex_map[layout.indices[tid[texels].numpy()]]
    bary = frags.bary.reshape(-1, 3)[texels].numpy()
    return texels.numpy(), corners, bary


def bake_texture(model, frames: list[tuple[np.ndarray, list, list[np.ndarray]]], size: int = 512,
                 depth_tolerance: float = 3e-3) -> tuple[np.ndarray, float]:
    """Texture [size, size, 3] uint8 (glTF orientation, row 0 = v 0) and the fraction of the
    mesh's texels some camera saw.

    frames: (world vertices [V, 3] of the model at that frame, cameras (calib Camera), images
    [H, W, 3] uint8 RGB as recorded, distorted) per frame used.
    """
    import cv2

    from headcap.reconstruct.rasterize_mesh import project_vertices, rasterize
    from headcap.reconstruct.shading import vertex_normals

    if model.uvs is None:
        raise ValueError(f"bake_texture: head model {model.name!r} has no UVs")
    texels, corners, bary = _texel_surface(model, size)
    total = np.zeros((len(texels), 3))
    weight = np.zeros(len(texels))
    faces = model.faces.to(torch.int64)
    for vertices, cameras, images in frames:
        verts = torch.as_tensor(vertices, dtype=torch.float64)
        points = np.einsum("nk,nkc->nc", bary, verts.numpy()[corners])
        normals = vertex_normals(verts, faces).numpy()
        texel_normals = np.einsum("nk,nkc->nc", bary, normals[corners])
        texel_normals /= np.maximum(np.linalg.norm(texel_normals, axis=1, keepdims=True), 1e-12)
        for camera, image in zip(cameras, images):
            frags = rasterize(project_vertices(verts, camera), faces, int(camera.height), int(camera.width))
            pix, depth = camera.project(points)
            pix, depth = pix.numpy(), depth.numpy()
            col, row = np.round(pix[:, 0]).astype(np.int64), np.round(pix[:, 1]).astype(np.int64)
            inside = (depth > 0) & (col >= 0) & (col < camera.width) & (row >= 0) & (row < camera.height)
            zbuf = np.full(len(points), np.inf)
            zbuf[inside] = frags.depth.numpy()[row[inside], col[inside]]
            visible = inside & (np.abs(depth - zbuf) < depth_tolerance)
            centre = np.linalg.inv(camera.cam_from_world)[:3, 3]
            view = centre - points
            view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
            cos = np.einsum("nc,nc->n", view, texel_normals)
            w = np.where(visible & (cos > 0.2), cos ** 2, 0.0)
            idx = np.nonzero(w)[0]
            total[idx] += w[idx, None] * image[row[idx], col[idx]].astype(np.float64)
            weight[idx] += w[idx]
    seen = weight > 0
    texture = np.zeros((size * size, 3))
    texture[texels[seen]] = total[seen] / weight[seen, None]
    image = np.clip(np.round(texture), 0, 255).astype(np.uint8).reshape(size, size, 3)
    hole = np.ones(size * size, dtype=np.uint8)
    hole[texels[seen]] = 0
    filled = cv2.inpaint(image, hole.reshape(size, size), 3, cv2.INPAINT_TELEA)
    return filled, float(seen.mean()) if len(seen) else 0.0
