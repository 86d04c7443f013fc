"""Render one view of the synthetic head: z-buffer rasterization (C++ kernel of
reconstruct.rasterize_mesh), perspective-correct attribute interpolation, albedo (per-vertex
colours x solid detail noise, or a UV texture), Lambertian SH shading, a studio backdrop.

Lens distortion is applied per vertex (`project_vertices`); the head's triangles are a few
pixels wide, so straight edges between distorted vertices are exact to well under a pixel.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from headcap.reconstruct.rasterize_mesh import project_vertices, rasterize
from headcap.reconstruct.shading import sample_texture, shade_sh, vertex_normals

from headcap.studio.appearance import Appearance, detail_pattern

__all__ = ["render_view", "backdrop", "frame_normals", "to_uint8"]


def backdrop(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A studio backdrop [H, W, 3] float32: a soft vertical grey gradient with a seeded tint."""
    top = rng.uniform(0.30, 0.45) * (1.0 + rng.uniform(-0.05, 0.05, size=3))
    bottom = top * rng.uniform(0.75, 0.9)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.float32)


def frame_normals(vertices_world: Tensor, faces: Tensor) -> Tensor:
    """Unit vertex normals [V, 3] (world frame), shared by every camera of a frame."""
    return vertex_normals(vertices_world, faces)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def render_view(vertices_world: Tensor, normals_world: Tensor, camera, appearance: Appearance,
                background: np.ndarray, backend: str = "auto") -> dict:
    """vertices_world, normals_world: [V, 3]; background: [H, W, 3] float32; backend: of
    `reconstruct.rasterize_mesh.rasterize` ("auto": the C++ kernel on CPU).

    Returns dict: rgb float32 [H, W, 3] in [0, 1], mask bool [H, W] (pixel centres covered by
    the head), depth float64 [H, W] (camera z, inf off the head), triangle_id [H, W] (index into
    appearance.render_faces, -1 off the head).
    """
    faces = appearance.render_faces
    height, width = int(camera.height), int(camera.width)
    verts_screen = project_vertices(vertices_world.double(), camera)
    frags = rasterize(verts_screen, faces, height, width, backend)
    tid = frags.triangle_id.reshape(-1)
    pix = (tid >= 0).nonzero().squeeze(1)
    corners = faces[tid[pix]]  # [N, 3]
    bary = frags.bary.reshape(-1, 3)[pix].float()[:, :, None]  # [N, 3, 1]

    def lerp(attribute: Tensor, index: Tensor = corners) -> Tensor:
        # only the covered pixels: shading the whole frame would triple the cost
        return (attribute.float()[index] * bary).sum(dim=1)

    normals = lerp(normals_world)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    if appearance.texture is not None:
        albedo = sample_texture(appearance.texture, lerp(appearance.uvs, appearance.face_uvs[tid[pix]]))
    else:
        albedo = lerp(appearance.vertex_colors)
    if appearance.canonical is not None:
        albedo = albedo * detail_pattern(lerp(appearance.canonical), appearance)[:, None]
    shaded = shade_sh(albedo, normals, appearance.sh_coeffs.float()).clamp(0.0, 1.0)
    rgb = np.array(background, dtype=np.float32, copy=True).reshape(-1, 3)
    rgb[pix.numpy()] = shaded.numpy()
    return {"rgb": rgb.reshape(height, width, 3), "mask": (tid >= 0).reshape(height, width).numpy(),
            "depth": frags.depth.numpy(), "triangle_id": frags.triangle_id.numpy()}
