"""How the synthetic head looks: a procedural, seeded skin albedo and studio SH lighting.

The albedo is per vertex (skin tone drawn from a palette, region colours for lips, brows,
eyes, teeth, mouth interior, low-frequency blotches from 3D value noise on the neutral surface)
times a per-pixel detail pattern: 3D value noise evaluated at the interpolated NEUTRAL position
of every pixel, so the texture sticks to the skin as it moves ("solid texture"). Colours are
linear reflectances in [0, 1]. The Lee Perry-Smith scan keeps its own photographic texture
(headcap.studio.scan).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from headcap.reconstruct.head_model import HeadModel
from headcap.reconstruct.shading import sh_basis_irradiance, sh_irradiance

__all__ = [
    "Appearance", "AppearanceConfig", "procedural_appearance", "textured_appearance", "studio_lighting",
    "value_noise", "render_faces_of", "SKIN_TONES", "HIDDEN_REGIONS",
]

#: sRGB-ish reflectances of a light-to-dark palette; a seeded tone is drawn between two neighbours.
SKIN_TONES = np.array([
    [0.87, 0.70, 0.60], [0.78, 0.59, 0.47], [0.70, 0.52, 0.38], [0.55, 0.38, 0.27], [0.36, 0.24, 0.17],
])
_HAIR = np.array([[0.06, 0.045, 0.035], [0.16, 0.10, 0.06], [0.35, 0.24, 0.14], [0.55, 0.43, 0.28]])
_IRIS = np.array([[0.25, 0.14, 0.06], [0.18, 0.30, 0.42], [0.22, 0.30, 0.18], [0.12, 0.08, 0.05]])
#: ICT-FaceKit's transparent overlay shells (tear film, eye shadowing): not drawn opaque.
HIDDEN_REGIONS = ("lacrimal_fluid", "eye_blend", "eye_occlusion")
_NOISE_GRID = 32


@dataclass(frozen=True)
class AppearanceConfig:
    detail_cell_m: float = 0.0025
    """Cell size of the finest per-pixel detail noise (pores/freckles scale)."""
    detail_amplitude: float = 0.10
    blotch_amplitude: float = 0.10
    key_light_strength: float = 0.75
    ambient: float = 0.45


@dataclass
class Appearance:
    """Everything the renderer needs besides geometry and cameras.

    render_faces: [F', 3] triangles drawn (overlay shells removed); vertex_colors: [V, 3] albedo
    or None when `texture` [Ht, Wt, 3] (+ uvs [T, 2], face_uvs [F', 3], v up) is used;
    canonical: [V, 3] neutral positions for the detail noise (None: no detail); noise_table:
    [G, G, G] float32; sh_coeffs: [9, 3] radiance SH (world frame).
    """

    render_faces: Tensor
    sh_coeffs: Tensor
    vertex_colors: Tensor | None = None
    texture: Tensor | None = None
    uvs: Tensor | None = None
    face_uvs: Tensor | None = None
    canonical: Tensor | None = None
    noise_table: Tensor | None = None
    detail_cell_m: float = 0.0025
    detail_amplitude: float = 0.0
    description: str = ""


def value_noise(points: Tensor, table: Tensor, cell: float) -> Tensor:
    """Smooth 3D value noise in [0, 1]: trilinear (smoothstep) interpolation of a periodic
    random lattice `table` [G, G, G] with lattice spacing `cell` (metres). points [N, 3] -> [N]."""
    g = table.shape[0]
    p = points / cell
    base = torch.floor(p)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)
    i = base.long() % g
    j = (i + 1) % g
    out = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        ix = j[:, 0] if dx else i[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            iy = j[:, 1] if dy else i[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                iz = j[:, 2] if dz else i[:, 2]
                out = out + wx * wy * wz * table[ix, iy, iz].to(points.dtype)
    return out


def detail_pattern(canonical_pixels: Tensor, appearance: Appearance) -> Tensor:
    """Multiplicative albedo detail [N] (around 1) at neutral-surface points [N, 3]."""
    table = appearance.noise_table
    cell = appearance.detail_cell_m
    fine = value_noise(canonical_pixels, table, cell)
    coarse = value_noise(canonical_pixels + 7.31 * cell, table, 2.7 * cell)
    return 1.0 + appearance.detail_amplitude * (0.6 * (fine - 0.5) + 0.8 * (coarse - 0.5))


def render_faces_of(model: HeadModel) -> Tensor:
    """The model's triangles minus those lying entirely in a transparent overlay region."""
    hidden = torch.zeros(model.num_vertices, dtype=torch.bool)
    for name in HIDDEN_REGIONS:
        if name in model.region_masks:
            hidden |= model.region_masks[name].cpu()
    keep = ~hidden[model.faces.cpu()].all(dim=1)
    return model.faces.cpu()[keep]


def studio_lighting(rng: np.random.Generator, config: AppearanceConfig = AppearanceConfig()) -> Tensor:
    """Radiance SH [9, 3] float64 of a soft studio: uniform ambient, a key light from the front,
    above and to one side, and a weaker fill from the other side, slightly tinted.

    A distant light of direction d projects onto SH as L_lm = w * Y_lm(d); the strengths are
    normalised so that a white surface facing the key light reflects about 1.
    """
    def direction(azimuth_deg, elevation_deg):
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        return torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)], dtype=torch.float64)

    side = 1.0 if rng.uniform() < 0.5 else -1.0
    key = direction(side * rng.uniform(25, 50), rng.uniform(15, 40))
    fill = direction(-side * rng.uniform(40, 70), rng.uniform(-5, 15))
    tint = torch.tensor(1.0 + rng.uniform(-0.04, 0.04, size=3), dtype=torch.float64)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = config.ambient * 2.0 * math.sqrt(math.pi)
    sh += config.key_light_strength * sh_basis_irradiance(key)[:, None] * tint
    sh += 0.3 * config.key_light_strength * sh_basis_irradiance(fill)[:, None]
    peak = float(sh_irradiance(key[None], sh).max()) / math.pi
    return sh / peak


def _point_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule for points [N, 2] and a closed polygon [M, 2] -> bool [N]."""
    inside = np.zeros(len(points), dtype=bool)
    x, y = points[:, 0], points[:, 1]
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (a[1] > y) != (b[1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
        inside ^= crosses & (x < x_at)
    return inside


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def _region(model: HeadModel, name: str) -> np.ndarray | None:
    mask = model.region_masks.get(name)
    return None if mask is None else mask.cpu().numpy()


def procedural_appearance(model: HeadModel, neutral: Tensor, rng: np.random.Generator,
                          config: AppearanceConfig = AppearanceConfig()) -> Appearance:
    """Seeded per-vertex albedo for `model` whose neutral vertices (identity applied, no
    expression) are `neutral` [V, 3] in the head frame. Regions come from the model's
    region_masks (ICT-FaceKit names) and, for ibug68 landmarks, lips and brows from landmarks."""
    pos = neutral.detach().cpu().double().numpy()
    num_v = pos.shape[0]
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    lo = int(min(math.floor(t), len(SKIN_TONES) - 2))
    skin = SKIN_TONES[lo] * (1 - (t - lo)) + SKIN_TONES[lo + 1] * (t - lo)
    hair = _HAIR[rng.integers(len(_HAIR))]
    iris = _IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.8, 1.2)
    table = torch.from_numpy(rng.random((_NOISE_GRID,) * 3).astype(np.float32))

    pos_t = torch.from_numpy(pos)
    blotch = (0.6 * (value_noise(pos_t, table, 0.03) - 0.5) + 0.4 * (value_noise(pos_t + 0.11, table, 0.008) - 0.5)).numpy()
    colors = np.tile(skin, (num_v, 1)) * (1.0 + 2.0 * config.blotch_amplitude * blotch)[:, None]
    # redder where blood shows through: a seeded hue shift on the low-frequency blotches
    colors[:, 0] *= 1.0 + 0.05 * blotch

    lm = model.landmark_ids.cpu().numpy()
    face = _region(model, "face")
    face = np.ones(num_v, bool) if face is None else face
    if model.landmark_convention == "ibug68" and len(lm) == 68:
        pts = pos[lm]
        front = pos[:, 2] > pts[48:60, 2].min() - 0.015
        lips = face & front & _point_in_polygon(pos[:, :2], pts[48:60, :2])
        lip_colour = skin * np.array([0.92, 0.68, 0.68]) * rng.uniform(0.85, 1.0)
        colors[lips] = lip_colour * (1.0 + config.blotch_amplitude * blotch[lips, None])
        brow_front = pos[:, 2] > pts[17:27, 2].min() - 0.02
        for line in (pts[17:22], pts[22:27]):
            d = _distance_to_polyline(pos[:, :2], line[:, :2])
            w = 0.85 * np.clip(1.3 - d / 0.004, 0, 1) * (face & brow_front)
            colors = colors * (1 - w[:, None]) + hair * w[:, None]
        for a, b in ((1, 31), (15, 35)):
            centre = 0.5 * (pts[a] + pts[b])
            w = np.exp(-np.sum((pos - centre) ** 2, axis=1) / (2 * 0.02 ** 2)) * face
            colors *= 1.0 + w[:, None] * np.array([0.06, -0.04, -0.04])

    for name, colour in (("mouth_socket", [0.30, 0.10, 0.10]), ("gums_tongue", [0.50, 0.24, 0.24]),
                         ("tongue", [0.55, 0.26, 0.26]), ("teeth", [0.88, 0.85, 0.76]),
                         ("eyelashes", hair * 0.6)):
        m = _region(model, name)
        if m is not None:
            colors[m] = colour
    for name in ("eye_socket_left", "eye_socket_right"):
        m = _region(model, name)
        if m is not None:
            colors[m] = skin * np.array([0.75, 0.6, 0.6])
    for name in ("eyeball_left", "eyeball_right"):
        m = _region(model, name)
        if m is None or not m.any():
            continue
        centre = pos[m].mean(axis=0)
        rel = pos[m] - centre
        cos_angle = rel[:, 2] / np.maximum(np.linalg.norm(rel, axis=1), 1e-12)
        eye = np.tile([0.85, 0.82, 0.80], (int(m.sum()), 1))
        eye[cos_angle > math.cos(math.radians(30))] = iris
        eye[cos_angle > math.cos(math.radians(12))] = [0.02, 0.02, 0.02]
        colors[m] = eye
    colors = np.clip(colors, 0.0, 1.0)
    return Appearance(
        render_faces=render_faces_of(model),
        sh_coeffs=studio_lighting(rng, config),
        vertex_colors=torch.from_numpy(colors.astype(np.float32)),
        canonical=neutral.detach().cpu().float(),
        noise_table=table,
        detail_cell_m=config.detail_cell_m,
        detail_amplitude=config.detail_amplitude,
        description=f"procedural skin tone {np.round(skin, 3).tolist()}, seeded blotches and pore-scale detail",
    )


def textured_appearance(model: HeadModel, texture: Tensor, rng: np.random.Generator,
                        config: AppearanceConfig = AppearanceConfig(), description: str = "") -> Appearance:
    """A model with its own UV texture [Ht, Wt, 3] (e.g. a photographic scan)."""
    if model.uvs is None or model.face_uvs is None:
        raise ValueError(f"textured_appearance: head model {model.name!r} has no UVs")
    return Appearance(
        render_faces=model.faces.cpu(),
        sh_coeffs=studio_lighting(rng, config),
        texture=texture,
        uvs=model.uvs.cpu(),
        face_uvs=model.face_uvs.cpu(),
        description=description,
    )
