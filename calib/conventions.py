"""Camera-convention conversions, all in one place.

headcap's own convention: OpenCV camera axes (x right, y down, z forward), transforms stored
as `cam_from_world` (world -> camera). Other tools differ:

| convention | camera axes | matrix usually stored |
|---|---|---|
| OpenCV / COLMAP / NeRSemble `world_2_cam` | x right, y down, z forward | cam_from_world |
| OpenGL / Blender / nerfstudio / instant-ngp | x right, y up, z backward | world_from_cam ("c2w") |

Every function returns a new array and never changes its input.
"""
from __future__ import annotations

import numpy as np

#: camera-frame change between OpenCV (x right, y down, z fwd) and OpenGL (x right, y up, z back);
#: its own inverse.
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])

#: world-frame changes. Blender worlds are z-up; headcap worlds are whatever the rig says
#: (the synthetic studio uses y-up); these rotate between the two without reflection.
ZUP_FROM_YUP = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
YUP_FROM_ZUP = ZUP_FROM_YUP.T.copy()


def _check44(m, name: str) -> np.ndarray:
    arr = np.array(m, dtype=np.float64, copy=True)
    if arr.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected [..., 4, 4], got shape {arr.shape}")
    return arr


def invert_rigid(target_from_source) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] (exact: transpose, not a general inverse)."""
    m = _check44(target_from_source, "target_from_source")
    out = np.zeros_like(m)
    rot_t = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def opencv_cam_from_world_to_opengl_world_from_cam(cam_from_world) -> np.ndarray:
    """headcap cam_from_world (OpenCV) -> OpenGL/nerfstudio/Blender camera-to-world."""
    return invert_rigid(GL_FROM_CV @ _check44(cam_from_world, "cam_from_world"))


def opengl_world_from_cam_to_opencv_cam_from_world(world_from_glcam) -> np.ndarray:
    """OpenGL/nerfstudio/Blender camera-to-world -> headcap cam_from_world (OpenCV)."""
    return GL_FROM_CV @ invert_rigid(_check44(world_from_glcam, "world_from_cam"))


def opencv_cam_from_world_to_opengl_cam_from_world(cam_from_world) -> np.ndarray:
    """Same world, OpenGL camera axes (a view matrix)."""
    return GL_FROM_CV @ _check44(cam_from_world, "cam_from_world")


def change_world(cam_from_world, new_world_from_old_world) -> np.ndarray:
    """Express cameras in a new world frame: cam_from_new = cam_from_old @ old_from_new."""
    return _check44(cam_from_world, "cam_from_world") @ invert_rigid(new_world_from_old_world)


def opengl_projection(K, width: int, height: int, near: float = 0.01, far: float = 100.0) -> np.ndarray:
    """OpenGL clip-from-camera (4x4) matching an OpenCV K with integer pixel centres.

    An OpenCV pixel x maps to GL window coordinate x + 0.5 (GL pixel centres sit at .5), and GL's
    window y runs bottom-up, hence the flips.
    """
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, K[0, 1]
    proj = np.zeros((4, 4))
    proj[0, 0] = 2 * fx / width
    proj[0, 1] = -2 * s / width
    proj[0, 2] = 1 - 2 * cx / width
    proj[1, 1] = 2 * fy / height
    proj[1, 2] = 2 * cy / height - 1
    proj[2, 2] = -(far + near) / (far - near)
    proj[2, 3] = -2 * far * near / (far - near)
    proj[3, 2] = -1.0
    return proj
