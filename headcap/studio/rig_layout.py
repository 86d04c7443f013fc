"""Camera layouts of the synthetic studio.

World frame: metres, y up, the head's rotation centre at the origin, the face looking along +z
(the head frame of reconstruct.head_model). Cameras use OpenCV axes (calib.camera).

- `studio_rig`: a NeRSemble-like front hemisphere: rows of cameras on an arc about 1 m from the
  head, spanning about 150 degrees of azimuth, every camera with its own small variations of
  focal length, principal point, pose and OpenCV lens distortion (k1, k2, p1, p2).
- `monocular_path`: one hand-held camera moving on a smooth path in front of the face; its pose
  changes every frame (the ground truth stores cam_from_world per frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from headcap.calib.camera import Camera, Rig, look_at

__all__ = ["RigLayoutConfig", "MonocularPathConfig", "studio_rig", "monocular_path", "camera_ids", "row_layout"]

_Y_UP = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class RigLayoutConfig:
    num_cameras: int = 16
    """Number of cameras on the arc."""
    width: int = 256
    height: int = 256
    distance: float = 1.0
    """Mean distance camera -> head centre (m)."""
    field_of_view_m: float = 0.40
    """Width of the scene the image spans at `distance` (sets fx = width * distance / this)."""
    azimuth_span_deg: float = 150.0
    """Azimuth range of each row, centred on the face."""
    row_elevations_deg: tuple[float, ...] = (-14.0, 4.0, 22.0)
    """Elevation of each row for a three-row rig (fewer rows use a subset)."""
    pose_jitter_deg: float = 2.0
    """Uniform jitter of each camera's azimuth/elevation (half-range, degrees)."""
    distance_jitter: float = 0.05
    """Relative jitter of each camera's distance."""
    focal_jitter: float = 0.03
    principal_jitter: float = 0.015
    """Principal point offset from the image centre, as a fraction of the image size."""
    k1_max: float = 0.12
    k2_max: float = 0.20
    tangential_max: float = 8e-4

    def __post_init__(self):
        for name in ("num_cameras", "width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"RigLayoutConfig: field '{name}' must be a positive integer, got {value!r}")
        if self.num_cameras > 100:
            raise ValueError(f"RigLayoutConfig: field 'num_cameras' must be <= 100, got {self.num_cameras}")
        for name in ("distance", "field_of_view_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RigLayoutConfig: field '{name}' must be positive, got {getattr(self, name)!r}")
        if not 0 < self.azimuth_span_deg <= 300:
            raise ValueError(f"RigLayoutConfig: field 'azimuth_span_deg' must be in (0, 300], got {self.azimuth_span_deg}")


@dataclass(frozen=True)
class MonocularPathConfig:
    width: int = 256
    height: int = 256
    distance: float = 0.65
    """Mean distance camera -> head centre (m): an arm's length, as a selfie or a handheld phone."""
    field_of_view_m: float = 0.42
    azimuth_amplitude_deg: float = 35.0
    elevation_amplitude_deg: float = 10.0
    distance_amplitude: float = 0.06
    period_s: float = 4.0
    """Period of the side-to-side sweep."""
    fps: float = 30.0


def camera_ids(count: int) -> list[str]:
    return [f"cam{i:02d}" for i in range(count)]


def row_layout(num_cameras: int) -> list[int]:
    """Cameras per row, bottom row first: one row up to 5 cameras, two up to 10, then three
    (16 -> [5, 6, 5], NeRSemble's arrangement); the middle rows get the remainder."""
    rows = 1 if num_cameras <= 5 else 2 if num_cameras <= 10 else 3
    counts = [num_cameras // rows] * rows
    order = sorted(range(rows), key=lambda r: (abs(r - (rows - 1) / 2), r))
    for r in order[: num_cameras - sum(counts)]:
        counts[r] += 1
    return counts


def _row_elevations(rows: int, config: RigLayoutConfig) -> list[float]:
    table = list(config.row_elevations_deg)
    if rows == len(table):
        return table
    if rows == 1:
        return [table[len(table) // 2]]
    return list(np.linspace(table[0], table[-1], rows))


def _position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Point at `distance` from the origin; azimuth 0 is straight in front of the face (+z),
    positive azimuth towards +x (the subject's left), positive elevation up (+y)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def _intrinsics(width: int, height: int, distance: float, field_of_view_m: float,
                rng: np.random.Generator, focal_jitter: float, principal_jitter: float) -> np.ndarray:
    fx = width * distance / field_of_view_m * (1.0 + rng.uniform(-focal_jitter, focal_jitter))
    fy = fx * (1.0 + rng.uniform(-0.002, 0.002))
    cx = (width - 1) / 2 + rng.uniform(-principal_jitter, principal_jitter) * width
    cy = (height - 1) / 2 + rng.uniform(-principal_jitter, principal_jitter) * height
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _distortion(rng: np.random.Generator, k1_max: float, k2_max: float, tangential_max: float) -> np.ndarray:
    return np.array([rng.uniform(-k1_max, k1_max), rng.uniform(-k2_max, k2_max),
                     rng.uniform(-tangential_max, tangential_max), rng.uniform(-tangential_max, tangential_max), 0.0])


def _rolled(cam_from_world: np.ndarray, roll_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    roll = np.eye(4)
    roll[:2, :2] = [[c, -s], [s, c]]
    return roll @ cam_from_world


def studio_rig(config: RigLayoutConfig, rng: np.random.Generator) -> Rig:
    """A NeRSemble-like rig (see module docstring). Cameras are numbered row by row, bottom row
    first, each row from the subject's right (viewer's left) to the subject's left."""
    counts = row_layout(config.num_cameras)
    elevations = _row_elevations(len(counts), config)
    ids = iter(camera_ids(config.num_cameras))
    cameras = []
    half = config.azimuth_span_deg / 2
    for row, (count, elevation) in enumerate(zip(counts, elevations)):
        step = config.azimuth_span_deg / max(count, 1)
        # rows are staggered by half a step so that no two cameras share an azimuth
        azimuths = [-half + step * (i + 0.5) for i in range(count)] if count > 1 else [0.0]
        if row % 2 == 1 and count > 1:
            azimuths = [a + (0.25 if row % 4 == 1 else -0.25) * step for a in azimuths]
        for azimuth in azimuths:
            jitter = config.pose_jitter_deg
            az = azimuth + rng.uniform(-jitter, jitter)
            el = elevation + rng.uniform(-jitter, jitter)
            dist = config.distance * (1.0 + rng.uniform(-config.distance_jitter, config.distance_jitter))
            target = rng.uniform(-0.01, 0.01, size=3)
            cam_from_world = _rolled(look_at(_position(az, el, dist), target, up=_Y_UP), rng.uniform(-1.0, 1.0))
            K = _intrinsics(config.width, config.height, config.distance, config.field_of_view_m, rng,
                            config.focal_jitter, config.principal_jitter)
            dist_coeffs = _distortion(rng, config.k1_max, config.k2_max, config.tangential_max)
            cameras.append(Camera(next(ids), config.width, config.height, K, "opencv", dist_coeffs, cam_from_world))
    return Rig.from_list(cameras, where="studio rig")


def monocular_path(num_frames: int, config: MonocularPathConfig,
                   rng: np.random.Generator) -> tuple[Camera, np.ndarray]:
    """One camera on a smooth path: (camera with the frame-0 pose, cam_from_world [T, 4, 4]).

    The path sweeps side to side (sinusoid in azimuth), bobs in elevation and distance, with
    seeded phases, so consecutive frames differ by a small smooth motion as in a handheld video.
    """
    if num_frames <= 0:
        raise ValueError(f"monocular_path: num_frames must be positive, got {num_frames}")
    t = np.arange(num_frames) / config.fps
    w = 2 * math.pi / config.period_s
    phase = rng.uniform(0, 2 * math.pi, size=4)
    azimuth = config.azimuth_amplitude_deg * np.sin(w * t + phase[0])
    elevation = 4.0 + config.elevation_amplitude_deg * np.sin(0.7 * w * t + phase[1])
    distance = config.distance + config.distance_amplitude * np.sin(0.45 * w * t + phase[2])
    roll = 2.0 * np.sin(0.9 * w * t + phase[3])
    poses = np.stack([
        _rolled(look_at(_position(a, e, d), np.zeros(3), up=_Y_UP), r)
        for a, e, d, r in zip(azimuth, elevation, distance, roll)
    ])
    K = _intrinsics(config.width, config.height, config.distance, config.field_of_view_m, rng, 0.02, 0.01)
    dist_coeffs = _distortion(rng, 0.08, 0.1, 5e-4)
    camera = Camera("cam00", config.width, config.height, K, "opencv", dist_coeffs, poses[0])
    return camera, poses
