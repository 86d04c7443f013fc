"""Shading helpers for the mesh rasterizer: vertex normals, UV textures, SH (Lambert) lighting.

UV convention: uv in [0, 1] with v pointing UP (as stored in OBJ `vt` and by Blender/Maya), so
texture row 0 (the top row of the image file) is v = 1: row = (1 - v) * Ht - 1/2 and
column = u * Wt - 1/2 in texel-centre coordinates. glTF stores v pointing DOWN (its "t" with
row 0 at t = 0): pass `uv[..., 1] = 1 - t` for glTF UVs.

Lighting: `shade_sh` is Lambertian reflection of distant light whose radiance is given by 9
real spherical-harmonic coefficients per colour channel (bands l <= 2), with the irradiance of
Ramamoorthi & Hanrahan, "An Efficient Representation for Irradiance Environment Maps" (2001):
E(n) = sum_lm A_l L_lm Y_lm(n), A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4, and outgoing radiance
albedo * E / pi. A uniform white environment of radiance 1 (L_00 = 2 sqrt(pi), the rest 0)
therefore returns the albedo. Because the radiance is band-limited to l <= 2, this irradiance is
exact, not an approximation, for that radiance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Real SH without the Condon-Shortley phase, order [Y00, Y1-1, Y10, Y11, Y2-2, Y2-1, Y20, Y21, Y22]
# (as in Ramamoorthi-Hanrahan).
_C0 = 0.5 / math.sqrt(math.pi)
_C1 = math.sqrt(3.0 / (4.0 * math.pi))
_C2 = 0.5 * math.sqrt(15.0 / math.pi)
_C20 = 0.25 * math.sqrt(5.0 / math.pi)
_C22 = 0.25 * math.sqrt(15.0 / math.pi)
SH_BAND_OF_COEFF = (0, 1, 1, 1, 2, 2, 2, 2, 2)
LAMBERT_BAND_FACTORS = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
UNIFORM_WHITE_SH00 = 2.0 * math.sqrt(math.pi)


def sh_basis_irradiance(directions: Tensor) -> Tensor:
    """Real spherical harmonics up to l = 2 of unit directions [..., 3] -> [..., 9], in the
    convention of Ramamoorthi-Hanrahan irradiance maps (orthonormal, no Condon-Shortley phase:
    Y1-1 = +c y, Y11 = +c x). The 3DGS colour basis (avatar.gaussians.sh.sh_basis_3dgs) is this
    times (-1)^m."""
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return torch.stack([
        torch.full_like(x, _C0),
        _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C20 * (3.0 * z * z - 1.0), _C2 * x * z, _C22 * (x * x - y * y),
    ], dim=-1)


def sh_irradiance(normals: Tensor, sh_coeffs: Tensor) -> Tensor:
    """Irradiance E(n) [..., C] at unit normals [..., 3] under radiance SH coefficients [9, C]."""
    if sh_coeffs.ndim != 2 or sh_coeffs.shape[0] != 9:
        raise ValueError(f"sh_coeffs: expected shape [9, C], got {tuple(sh_coeffs.shape)}")
    bands = torch.tensor([LAMBERT_BAND_FACTORS[b] for b in SH_BAND_OF_COEFF], dtype=sh_coeffs.dtype,
                         device=sh_coeffs.device)
    return sh_basis_irradiance(normals) @ (sh_coeffs * bands[:, None])


def shade_sh(albedo: Tensor, normals: Tensor, sh_coeffs: Tensor) -> Tensor:
    """Lambertian shading: albedo [..., 3] * E(normals [..., 3]) / pi with sh_coeffs [9, 3].

    Normals must be unit length (zero normals, e.g. background pixels, give the constant band
    only). Differentiable w.r.t. all three inputs. Returns rgb [..., 3].
    """
    if albedo.shape[-1] != sh_coeffs.shape[-1]:
        raise ValueError(f"sh_coeffs: {sh_coeffs.shape[-1]} channels but albedo has {albedo.shape[-1]}")
    if normals.shape[-1] != 3:
        raise ValueError(f"normals: expected shape [..., 3], got {tuple(normals.shape)}")
    return albedo * sh_irradiance(normals, sh_coeffs.to(normals.dtype)) / math.pi


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [V, 3] from vertices [V, 3] and faces [F, 3].

    The face normal is (v1 - v0) x (v2 - v0) (outward for counter-clockwise faces seen from
    outside, as in OBJ/glTF). Vertices in no face get a zero normal. Differentiable.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices: expected shape [V, 3], got {tuple(vertices.shape)}")
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    tri = vertices[faces]
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    acc = torch.zeros_like(vertices)
    for k in range(3):
        acc = acc.index_add(0, faces[:, k], face_n)
    return acc / acc.norm(dim=-1, keepdim=True).clamp(min=1e-20)


def sample_texture(texture: Tensor, uv: Tensor, mode: str = "bilinear") -> Tensor:
    """Look up texture [Ht, Wt, C] at uv [..., 2] (u right, v UP, in [0, 1]) -> [..., C].

    mode: "bilinear" or "nearest". Outside [0, 1] the border texel is repeated. Differentiable
    w.r.t. the texture and (bilinear) the uv coordinates.
    """
    if texture.ndim != 3:
        raise ValueError(f"texture: expected shape [Ht, Wt, C], got {tuple(texture.shape)}")
    if uv.shape[-1] != 2:
        raise ValueError(f"uv: expected shape [..., 2], got {tuple(uv.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    lead = uv.shape[:-1]
    dtype = torch.promote_types(texture.dtype, uv.dtype)
    # grid_sample's y = -1 is the top row, where v = 1
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1).to(dtype).reshape(1, 1, -1, 2)
    img = texture.to(dtype).permute(2, 0, 1)[None]
    out = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[0, :, 0].transpose(0, 1).reshape(*lead, texture.shape[-1])
