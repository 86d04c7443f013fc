"""`Camera` and `Rig`: the calibrated cameras every stage uses (see calib/projection.py for
the conventions: OpenCV axes, metres, pixel centres at integer coordinates)."""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from headcap.calib import projection
from headcap.calib.conventions import invert_rigid  # noqa: F401  (re-exported: calib.camera.invert_rigid)
from headcap.calib.projection import DISTORTION_MODELS


#: image sides beyond this are not a camera (and their pixel grids would not fit in memory)
MAX_IMAGE_SIDE = 1 << 16
MAX_ID_LENGTH = 256
#: control, format, surrogate and line/paragraph separator characters: ids are printed and written to text files
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


class CameraFieldError(ValueError):
    """A camera field failed its check; `field` names it ("id", "width", "height", "K",
    "distortion_model", "distortion", "cam_from_world", or the name given to `check_rigid`), so
    file readers can point at the field of their own format without parsing the message."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def camera_error_field(exc: BaseException) -> str:
    """The Camera field an error from `Camera(...)` is about ("<camera>" when it names none)."""
    return getattr(exc, "field", None) or "<camera>"


def _as_matrix(value, shape, name: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CameraFieldError(name, f"{where}: field '{name}' is not numeric: {value!r}") from exc
    if arr.shape != shape:
        raise CameraFieldError(name, f"{where}: field '{name}' must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CameraFieldError(name, f"{where}: field '{name}' holds NaN or inf: {arr.tolist()}")
    return arr


def check_rigid(matrix: np.ndarray, name: str, where: str, tol: float = 1e-6) -> None:
    """Raise if a 4x4 is not a proper rigid transform (orthonormal rotation, det +1, last row 0 0 0 1)."""
    rot = matrix[:3, :3]
    err = np.abs(rot @ rot.T - np.eye(3)).max()
    if err > tol:
        raise CameraFieldError(name, f"{where}: field '{name}' rotation is not orthonormal "
                                     f"(max |R R^T - I| = {err:.3g}): {np.round(rot, 6).tolist()}")
    det = np.linalg.det(rot)
    if det < 0:
        raise CameraFieldError(name, f"{where}: field '{name}' rotation has determinant {det:.6f} "
                                     f"(a reflection, not a rotation): {np.round(rot, 6).tolist()}")
    if np.abs(matrix[3] - np.array([0, 0, 0, 1.0])).max() > tol:
        raise CameraFieldError(name, f"{where}: field '{name}' last row must be [0, 0, 0, 1], got {matrix[3].tolist()}")


@dataclass(frozen=True)
class Camera:
    """One calibrated camera.

    K: [3, 3] pixels; distortion: [n] coefficients of `distortion_model`; cam_from_world: [4, 4].
    """

    id: str
    width: int
    height: int
    K: np.ndarray
    distortion_model: str = "none"
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cam_from_world: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        where = f"camera {self.id!r}"
        if not isinstance(self.id, str) or not self.id:
            raise CameraFieldError("id", f"camera: field 'id' must be a non-empty string, got {self.id!r}")
        if len(self.id) > MAX_ID_LENGTH or any(unicodedata.category(ch) in _UNPRINTABLE for ch in self.id):
            raise CameraFieldError("id", f"camera: field 'id' must be printable text of at most {MAX_ID_LENGTH} "
                                         f"characters (no newlines or control characters), got {self.id[:200]!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < v <= MAX_IMAGE_SIDE:
                raise CameraFieldError(name, f"{where}: field '{name}' must be an integer from 1 to {MAX_IMAGE_SIDE}, "
                                             f"got {v!r}")
            object.__setattr__(self, name, int(v))
        K = _as_matrix(self.K, (3, 3), "K", where)
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraFieldError("K", f"{where}: field 'K' focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        if abs(K[1, 0]) > 0 or abs(K[2, 0]) > 0 or abs(K[2, 1]) > 0 or K[2, 2] != 1:
            raise CameraFieldError("K", f"{where}: field 'K' must be upper triangular with K[2,2]=1, got {K.tolist()}")
        object.__setattr__(self, "K", K)
        if self.distortion_model not in DISTORTION_MODELS:
            raise CameraFieldError("distortion_model", f"{where}: field 'distortion_model' is {self.distortion_model!r}; "
                                                       f"expected one of {sorted(DISTORTION_MODELS)}")
        n = DISTORTION_MODELS[self.distortion_model]
        dist = np.asarray(self.distortion if self.distortion is not None else [], dtype=np.float64).reshape(-1)
        if dist.shape != (n,):
            raise CameraFieldError("distortion", f"{where}: field 'distortion' must hold {n} coefficients for model "
                                                 f"{self.distortion_model!r}, got {dist.shape[0]}")
        if not np.all(np.isfinite(dist)):
            raise CameraFieldError("distortion", f"{where}: field 'distortion' holds NaN or inf: {dist.tolist()}")
        object.__setattr__(self, "distortion", dist)
        cfw = _as_matrix(self.cam_from_world, (4, 4), "cam_from_world", where)
        check_rigid(cfw, "cam_from_world", where)
        object.__setattr__(self, "cam_from_world", cfw)

    # --- derived quantities -------------------------------------------------------------
    @property
    def world_from_cam(self) -> np.ndarray:
        return invert_rigid(self.cam_from_world)

    @property
    def centre(self) -> np.ndarray:
        """Camera centre in world coordinates [3]."""
        return self.world_from_cam[:3, 3]

    @property
    def fov_degrees(self) -> tuple[float, float]:
        return (2 * math.degrees(math.atan(self.width / (2 * self.K[0, 0]))),
                2 * math.degrees(math.atan(self.height / (2 * self.K[1, 1]))))

    def replace(self, **changes) -> "Camera":
        return replace(self, **changes)

    def tensors(self, dtype=torch.float64, device=None) -> dict[str, torch.Tensor]:
        return {
            "K": torch.as_tensor(self.K, dtype=dtype, device=device),
            "cam_from_world": torch.as_tensor(self.cam_from_world, dtype=dtype, device=device),
            "distortion": torch.as_tensor(self.distortion, dtype=dtype, device=device),
        }

    # --- projection ---------------------------------------------------------------------
    def project(self, points_world, dtype=torch.float64):
        """World points [..., N, 3] (array or tensor) -> (pixels [..., N, 2], depth [..., N])."""
        pts = torch.as_tensor(points_world, dtype=dtype)
        t = self.tensors(dtype, pts.device)
        return projection.project_points(pts, t["K"], t["cam_from_world"], self.distortion_model, t["distortion"])

    def unproject(self, pixels, depth, dtype=torch.float64):
        pix = torch.as_tensor(pixels, dtype=dtype)
        t = self.tensors(dtype, pix.device)
        return projection.unproject(pix, torch.as_tensor(depth, dtype=dtype), t["K"], t["cam_from_world"],
                                    self.distortion_model, t["distortion"])

    def rays(self, pixels=None, dtype=torch.float64):
        """World rays through `pixels` [N, 2] (default: every pixel centre, row-major)."""
        pix = projection.pixel_grid(self.width, self.height, dtype) if pixels is None else torch.as_tensor(pixels, dtype=dtype)
        t = self.tensors(dtype, pix.device)
        return projection.pixel_rays(pix, t["K"], t["cam_from_world"], self.distortion_model, t["distortion"])

    def undistorted(self) -> "Camera":
        """The ideal pinhole camera with the same K (what `undistort_image` renders into)."""
        return replace(self, distortion_model="none", distortion=np.zeros(0))

    def undistort_maps(self, K_new: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps (float32 [H, W]) from a pinhole image under K_new to this distorted image."""
        K_new = self.K if K_new is None else np.asarray(K_new, dtype=np.float64)
        pix = projection.pixel_grid(self.width, self.height)
        xy = projection.pixels_to_normalized(pix, torch.as_tensor(K_new))
        xy_d = projection.distort_normalized(xy, self.distortion_model, torch.as_tensor(self.distortion))
        src = projection.normalized_to_pixels(xy_d, torch.as_tensor(self.K)).numpy().astype(np.float32)
        return src[:, 0].reshape(self.height, self.width), src[:, 1].reshape(self.height, self.width)

    def undistort_image(self, image: np.ndarray, K_new: np.ndarray | None = None,
                        interpolation: int | None = None) -> np.ndarray:
        import cv2

        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"camera {self.id!r}: image is {image.shape[1]}x{image.shape[0]}, "
                             f"camera is {self.width}x{self.height}")
        map_x, map_y = self.undistort_maps(K_new)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR if interpolation is None else interpolation,
                         borderMode=cv2.BORDER_CONSTANT)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (self.id == other.id and self.width == other.width and self.height == other.height
                and self.distortion_model == other.distortion_model
                and np.array_equal(self.K, other.K) and np.array_equal(self.distortion, other.distortion)
                and np.array_equal(self.cam_from_world, other.cam_from_world))

    def allclose(self, other: "Camera", atol: float = 1e-9) -> bool:
        return (self.id == other.id and self.width == other.width and self.height == other.height
                and self.distortion_model == other.distortion_model
                and np.allclose(self.K, other.K, atol=atol, rtol=0)
                and np.allclose(self.distortion, other.distortion, atol=atol, rtol=0)
                and np.allclose(self.cam_from_world, other.cam_from_world, atol=atol, rtol=0))

    __hash__ = None


def look_at(centre, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """cam_from_world for an OpenCV camera at `centre` looking at `target`; `up` is the world
    direction that should appear up in the image (default -y, i.e. world y points down like OpenCV;
    pass (0, 1, 0) for a y-up world)."""
    centre = np.asarray(centre, float)
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    down = -np.asarray(up, float)
    right = np.cross(down, forward)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError(f"look_at: up {up} is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    world_from_cam = np.eye(4)
    world_from_cam[:3, 0], world_from_cam[:3, 1], world_from_cam[:3, 2] = right, down, forward
    world_from_cam[:3, 3] = centre
    return invert_rigid(world_from_cam)


@dataclass
class Rig:
    """Cameras by id, in a stable order."""

    cameras: dict[str, Camera]

    def __post_init__(self):
        for key, cam in self.cameras.items():
            if key != cam.id:
                raise ValueError(f"rig: camera stored under id {key!r} says its id is {cam.id!r}")

    @classmethod
    def from_list(cls, cameras: list[Camera], where: str = "rig") -> "Rig":
        out: dict[str, Camera] = {}
        for cam in cameras:
            if cam.id in out:
                raise ValueError(f"{where}: duplicate camera id {cam.id!r}")
            out[cam.id] = cam
        return cls(out)

    @property
    def ids(self) -> list[str]:
        return list(self.cameras)

    def __getitem__(self, cam_id: str) -> Camera:
        try:
            return self.cameras[cam_id]
        except KeyError:
            raise KeyError(f"rig has no camera {cam_id!r}; it has {self.ids}") from None

    def __iter__(self):
        return iter(self.cameras.values())

    def __len__(self) -> int:
        return len(self.cameras)

    def allclose(self, other: "Rig", atol: float = 1e-9) -> bool:
        return self.ids == other.ids and all(a.allclose(b, atol) for a, b in zip(self, other))

    def transformed(self, world_from_new_world: np.ndarray) -> "Rig":
        """The same rig expressed in a new world frame (returns a new rig)."""
        return Rig({c.id: c.replace(cam_from_world=c.cam_from_world @ world_from_new_world) for c in self})
