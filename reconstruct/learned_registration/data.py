"""Random training scenes from the synthetic studio, rendered in memory (no files).

Every draw comes from the generator passed in. A scene: a head of the model with a random
identity (the studio's N(0, 0.5^2) clipped), an expression frame of the studio's speech/blink/
smile curves plus a few random extra blendshapes, a gaze, a head pose wider than the studio's
(yaw +-25, pitch +-15, roll +-8 degrees, +-2 cm), random albedo (the studio's procedural skin,
hair, eyes) and lighting strengths, a random rig (6-10 cameras on the studio's arc at 0.85-1.2 m,
azimuth span 100-170 degrees, the whole arc turned by up to +-25 degrees, its own focal lengths,
principal points and lens distortion), an image size of 128-192 px and Gaussian noise 0-0.02.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from headcap.calib.camera import Rig
from headcap.studio import motion as motion_mod
from headcap.studio.appearance import AppearanceConfig, procedural_appearance
from headcap.studio.render import backdrop, frame_normals, render_view, to_uint8
from headcap.studio.rig_layout import RigLayoutConfig, studio_rig
from headcap.studio.writer import add_noise

__all__ = ["SceneConfig", "sample_scene", "rotate_rig_about_y"]


@dataclass(frozen=True)
class SceneConfig:
    cameras: tuple[int, int] = (6, 10)
    resolution: tuple[int, ...] = (128, 160, 192)
    distance: tuple[float, float] = (0.85, 1.2)
    azimuth_span: tuple[float, float] = (100.0, 170.0)
    arc_turn_deg: float = 25.0
    elevation_shift_deg: float = 6.0
    yaw_deg: float = 25.0
    pitch_deg: float = 15.0
    roll_deg: float = 8.0
    translation_m: float = 0.02
    noise: tuple[float, float] = (0.0, 0.02)
    extra_expressions: int = 3


def rotate_rig_about_y(rig: Rig, angle_deg: float) -> Rig:
    """Every camera turned about the world y axis through the origin."""
    a = math.radians(angle_deg)
    ry = np.eye(4)
    ry[0, 0], ry[0, 2], ry[2, 0], ry[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    return Rig.from_list([c.replace(cam_from_world=c.cam_from_world @ np.linalg.inv(ry)) for c in rig])


def sample_scene(model, rng: np.random.Generator, config: SceneConfig = SceneConfig(), centre_head=None,
                 rig: Rig | None = None) -> dict:
    """A random scene rendered by every camera. Returns images (uint8 [H, W, 3] per camera),
    masks (bool), cameras (list), vertices [V, 3] float32 world, identity, expression,
    joint_rotations, world_from_head [4, 4]. `rig`: render with these cameras instead of a random rig."""
    from headcap.reconstruct.learned_registration.model import rotation_centre

    mc = motion_mod.MotionConfig()
    identity = motion_mod.sample_identity(model.num_identity, rng, mc.identity_scale, mc.identity_clip)
    frames = 48
    k = int(rng.integers(frames))
    curves = motion_mod.expression_curves(frames, rng, mc)
    expression, _ = motion_mod.map_expressions(curves, model.expression_names)
    expression = expression[k].copy()
    if model.num_expression and config.extra_expressions:
        n = int(rng.integers(0, config.extra_expressions + 1))
        idx = rng.choice(model.num_expression, size=n, replace=False)
        expression[idx] = np.maximum(expression[idx], rng.uniform(0.0, 0.6, size=n)).astype(np.float32)
    joints = motion_mod.gaze_rotations(frames, model.joint_names, rng, mc)[k]
    centre = rotation_centre(model) if centre_head is None else np.asarray(centre_head, float)
    yaw, pitch, roll = (math.radians(rng.uniform(-a, a)) for a in (config.yaw_deg, config.pitch_deg, config.roll_deg))
    R = motion_mod.euler_to_matrix(np.array([yaw]), np.array([pitch]), np.array([roll]))[0]
    wfh = np.eye(4)
    wfh[:3, :3] = R
    wfh[:3, 3] = rng.uniform(-config.translation_m, config.translation_m, size=3) - R @ centre
    with torch.no_grad():
        kw = {"world_from_head": torch.from_numpy(wfh).to(model.dtype)[None]}
        if model.num_identity:
            kw["identity"] = torch.from_numpy(identity)[None]
        if model.num_expression:
            kw["expression"] = torch.from_numpy(expression)[None]
        if model.num_joints:
            kw["joint_rotations"] = torch.from_numpy(joints)[None]
        verts = model.forward(**kw).vertices[0].float().contiguous()
        neutral = model.forward(identity=torch.from_numpy(identity)[None]).vertices[0] if model.num_identity \
            else model.forward().vertices[0]
    app_cfg = AppearanceConfig(key_light_strength=float(rng.uniform(0.5, 0.95)), ambient=float(rng.uniform(0.3, 0.6)))
    appearance = procedural_appearance(model, neutral, rng, app_cfg)
    if rig is None:
        res = int(rng.choice(config.resolution))
        dist = float(rng.uniform(*config.distance))
        shift = rng.uniform(-config.elevation_shift_deg, config.elevation_shift_deg)
        layout = RigLayoutConfig(num_cameras=int(rng.integers(config.cameras[0], config.cameras[1] + 1)),
                                 width=res, height=res, distance=dist, field_of_view_m=0.40 * dist / 1.0 * rng.uniform(0.9, 1.15),
                                 azimuth_span_deg=float(rng.uniform(*config.azimuth_span)),
                                 row_elevations_deg=(-14.0 + shift, 4.0 + shift, 22.0 + shift))
        rig = rotate_rig_about_y(studio_rig(layout, rng), rng.uniform(-config.arc_turn_deg, config.arc_turn_deg))
    sigma = float(rng.uniform(*config.noise))
    normals = frame_normals(verts, appearance.render_faces)
    images, masks, cameras = [], [], []
    for cam in rig:
        view = render_view(verts, normals, cam, appearance, backdrop(cam.height, cam.width, rng))
        images.append(to_uint8(add_noise(view["rgb"], sigma, rng)))
        masks.append(view["mask"])
        cameras.append(cam)
    return {"images": images, "masks": masks, "cameras": cameras, "vertices": verts.numpy(),
            "identity": identity, "expression": expression, "joint_rotations": joints, "world_from_head": wfh}
