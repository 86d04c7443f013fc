"""How far an estimated rig is from the true one: the one rig-error metric of tests, benchmarks
and the demo report.

A calibration fixes its world frame only up to a rigid motion (a similarity when the scale is
free too), so the estimated rig is first mapped onto the true one (`align_rig`):
- rotation: the chordal L2 mean of the per-camera orientation differences, i.e. the rotation R
  minimising sum_i |R Rwc_est_i - Rwc_true_i|_F^2 (Rwc: world_from_cam rotation). Unlike a fit
  of camera centres alone it is defined for any number of cameras, also one, two or a row of
  collinear ones, where centres leave a rotation free;
- scale (with_scale=True only; else 1) and translation: least squares of the camera centres
  under that rotation, |s R c_est_i + t - c_true_i|^2.

Per camera, after that alignment:
- focal_error_pct: 100 max(|fx_est / fx_true - 1|, |fy_est / fy_true - 1|);
- principal_point_error_px: |(cx, cy)_est - (cx, cy)_true| (Euclidean, pixels);
- centre_error_mm: |s R c_est + t - c_true| in millimetres (the rigs' units are metres);
- rotation_error_deg: angle of the relative rotation, in the atan2 form (exact near zero, where
  acos((trace - 1) / 2) loses half the digits).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from headcap.calib.camera import Rig

METRICS = ("focal_error_pct", "principal_point_error_px", "centre_error_mm", "rotation_error_deg")


@dataclass(frozen=True)
class CameraErrors:
    """One camera's errors (module docstring for the definitions)."""

    camera: str
    focal_error_pct: float
    principal_point_error_px: float
    centre_error_mm: float
    rotation_error_deg: float


@dataclass(frozen=True)
class RigErrors:
    """Errors of every camera the two rigs share, in the true rig's camera order.

    truth_from_estimated: [4, 4] the alignment, x_true = scale R x_est + t (scale folded into the
    upper 3x3); scale: its scale (1 unless with_scale); missing: true cameras the estimate lacks.
    """

    cameras: tuple[CameraErrors, ...]
    truth_from_estimated: np.ndarray
    scale: float
    missing: tuple[str, ...]

    def rows(self) -> list[dict]:
        """One dict per camera: "camera" and the four METRICS (the report's table rows)."""
        return [asdict(c) for c in self.cameras]

    def values(self, metric: str) -> np.ndarray:
        """[N] values of one of METRICS, in camera order."""
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        return np.array([getattr(c, metric) for c in self.cameras])

    def summary(self) -> dict:
        """{"cameras": N, "missing": [...], "scale": s, "max": {metric: value}, "median": {...}}."""
        return {"cameras": len(self.cameras), "missing": list(self.missing), "scale": self.scale,
                "max": {m: float(self.values(m).max()) for m in METRICS},
                "median": {m: float(np.median(self.values(m))) for m in METRICS}}


def _shared_ids(estimated: Rig, truth: Rig) -> list[str]:
    ids = [c for c in truth.ids if c in estimated.cameras]
    if not ids:
        raise ValueError(f"estimated rig: no camera id in common with the true rig (estimated "
                         f"{estimated.ids}, true {truth.ids})")
    return ids


def _alignment(estimated: Rig, truth: Rig, ids: list[str], with_scale: bool) -> tuple[float, np.ndarray, np.ndarray]:
    orientation = sum(truth[c].world_from_cam[:3, :3] @ estimated[c].cam_from_world[:3, :3] for c in ids)
    u, _, vt = np.linalg.svd(orientation)
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    est = np.stack([estimated[c].centre for c in ids]) @ rot.T
    tru = np.stack([truth[c].centre for c in ids])
    scale = 1.0
    if with_scale:
        a, b = est - est.mean(0), tru - tru.mean(0)
        spread = float((a * a).sum())
        if spread > 1e-24:  # one camera (or coincident centres) fixes no scale
            scale = float((a * b).sum()) / spread
    return scale, rot, tru.mean(0) - scale * est.mean(0)


def align_rig(estimated: Rig, truth: Rig, with_scale: bool = False) -> np.ndarray:
    """truth_from_estimated [4, 4]: the similarity (rigid unless with_scale) that maps the
    estimated rig's world onto the true one, fitted on the cameras both have (module docstring)."""
    return _similarity(*_alignment(estimated, truth, _shared_ids(estimated, truth), with_scale))


def _similarity(scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = scale * rot, trans
    return out


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a 3x3 rotation in degrees, atan2 form (exact near zero)."""
    skew = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0],
                     rotation[1, 0] - rotation[0, 1]])
    return math.degrees(math.atan2(0.5 * float(np.linalg.norm(skew)), 0.5 * (float(np.trace(rotation)) - 1.0)))


def compare_rigs(estimated: Rig, truth: Rig, with_scale: bool = False) -> RigErrors:
    """Per-camera errors of `estimated` against `truth` after `align_rig` (module docstring).

    Compares the cameras both rigs have (ValueError when none, or when a shared camera's image
    size differs, which would make the intrinsics incomparable). with_scale: also fit a scale
    (for a calibration without metric scale); the default holds it at 1, so a scale error shows
    up as centre error.
    """
    ids = _shared_ids(estimated, truth)
    for c in ids:
        e, t = estimated[c], truth[c]
        if (e.width, e.height) != (t.width, t.height):
            raise ValueError(f"estimated rig: camera {c!r} images are {e.width}x{e.height}, the true "
                             f"camera's {t.width}x{t.height}")
    scale, rot, trans = _alignment(estimated, truth, ids, with_scale)
    cameras = []
    for c in ids:
        e, t = estimated[c], truth[c]
        focal = np.abs(np.diag(e.K)[:2] / np.diag(t.K)[:2] - 1.0).max()
        centre = scale * rot @ e.centre + trans
        relative = (rot @ e.world_from_cam[:3, :3]).T @ t.world_from_cam[:3, :3]
        cameras.append(CameraErrors(
            camera=c,
            focal_error_pct=100.0 * float(focal),
            principal_point_error_px=float(np.linalg.norm(e.K[:2, 2] - t.K[:2, 2])),
            centre_error_mm=1000.0 * float(np.linalg.norm(centre - t.centre)),
            rotation_error_deg=rotation_angle_deg(relative),
        ))
    missing = tuple(c for c in truth.ids if c not in estimated.cameras)
    return RigErrors(tuple(cameras), _similarity(scale, rot, trans), scale, missing)
