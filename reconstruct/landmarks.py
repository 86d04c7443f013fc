"""Face landmarks on real images: per-view MediaPipe 468-point mesh, and robust multi-view
triangulation with a calibrated rig.

  detect_session(session, models)  -> Landmarks2D  (written as landmarks/landmarks2d.npz)
  triangulate(points, found, rig)  -> Landmarks3D  (written as landmarks/landmarks3d.npz)

Pixels follow headcap's convention (integer coordinates are pixel centres). Triangulation
undistorts the observations with headcap.calib.projection, runs a DLT for every pair of cameras
that saw the face, keeps per point the pair with the most cameras reprojecting within
`inlier_px` (RANSAC over cameras, exhaustive since rigs have few cameras), and refits a DLT over
those inliers. Reprojection errors are measured in the distorted images.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from headcap.reconstruct.face_detect import (IBUG68_FROM_MEDIAPIPE, NOSE_TIP, NUM_MESH, FaceLandmarker,
                                             FaceResult, default_models_dir, find_models)

__all__ = ["LandmarksConfig", "Landmarks2D", "Landmarks3D", "FaceLandmarker", "FaceResult", "detect_image",
           "detect_frame", "detect_session", "triangulate", "write_landmarks2d", "write_landmarks3d", "IBUG68_FROM_MEDIAPIPE",
           "NOSE_TIP", "NUM_MESH", "default_models_dir", "find_models"]


@dataclass(frozen=True)
class LandmarksConfig:
    min_detection: float = 0.5
    """Lowest face-detector score (0..1) that counts as a face."""
    min_presence: float = 0.5
    """Lowest face-presence score (0..1) of the landmark model that counts as a face."""
    inlier_px: float = 4.0
    """Reprojection error (pixels) under which a camera is an inlier of a triangulated point."""
    min_views: int = 2
    """Fewest inlier cameras for a triangulated point (else NaN)."""


@dataclass
class Landmarks2D:
    points: np.ndarray       # [T, C, 468, 2] float32 px, NaN where missing
    confidence: np.ndarray   # [T, C] float32
    found: np.ndarray        # [T, C] bool
    boxes: np.ndarray        # [T, C, 4] float32 x0 y0 x1 y1
    cameras: list[str]
    frames: list[int]
    messages: list[str]      # one per view without a face: "frame F camera C: PATH: no face found ..."


@dataclass
class Landmarks3D:
    points: np.ndarray       # [T, 468, 3] world metres, NaN where not triangulated
    inliers: np.ndarray      # [T, 468] int: cameras within inlier_px
    rms_px: np.ndarray       # [T, 468] reprojection RMS over the inliers (px)


def detect_image(landmarker: FaceLandmarker, path: Path) -> FaceResult:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    result = landmarker(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not result.found:
        result.message = f"{path}: {result.message}"
    return result


@lru_cache(maxsize=4)
def _landmarker(models: str, min_detection: float, min_presence: float) -> FaceLandmarker:
    """One landmarker per process and settings (a worker reuses it across frames)."""
    return FaceLandmarker(models, min_detection, min_presence)


def detect_frame(job: tuple[str, int, str, float, float]) -> tuple:
    """One frame of a session, every camera: (points [C,468,2], confidence [C], found [C],
    boxes [C,4], messages). A module-level function of one picklable job (session manifest,
    frame position, models folder, thresholds) so executors can run frames anywhere."""
    from headcap.capture.session import read_session

    manifest, t, models, min_detection, min_presence = job
    session = read_session(manifest)
    landmarker = _landmarker(models, min_detection, min_presence)
    C = len(session.cameras)
    points = np.full((C, NUM_MESH, 2), np.nan, np.float32)
    conf = np.zeros(C, np.float32)
    found = np.zeros(C, bool)
    boxes = np.full((C, 4), np.nan, np.float32)
    messages = []
    for c, cam in enumerate(session.cameras):
        r = detect_image(landmarker, session.image_path(t, cam))
        conf[c] = r.confidence
        boxes[c] = r.box
        if r.found:
            points[c] = r.points
            found[c] = True
        else:
            messages.append(f"frame {session.frames[t].index} camera {cam}: {r.message}")
    return points, conf, found, boxes, messages


def detect_session(session, models=None, config: LandmarksConfig = LandmarksConfig(),
                   progress: Callable[[int, int, str], None] | None = None,
                   map_frames: Callable | None = None) -> Landmarks2D:
    """Every view of a session. map_frames(detect_frame, jobs) runs the frames (an executor's
    map, e.g. StageContext.map); default: one after another here, reporting progress per frame."""
    folder = str(find_models(models))
    T = session.frame_count
    jobs = [(str(session.manifest_path), t, folder, config.min_detection, config.min_presence) for t in range(T)]
    if map_frames is not None:
        rows = map_frames(detect_frame, jobs)
    else:
        rows = []
        for t, job in enumerate(jobs):
            rows.append(detect_frame(job))
            if progress is not None:
                progress(t + 1, T, f"frame {t}")
    C = len(session.cameras)
    points = np.stack([r[0] for r in rows]) if rows else np.full((0, C, NUM_MESH, 2), np.nan, np.float32)
    conf = np.stack([r[1] for r in rows]) if rows else np.zeros((0, C), np.float32)
    found = np.stack([r[2] for r in rows]) if rows else np.zeros((0, C), bool)
    boxes = np.stack([r[3] for r in rows]) if rows else np.full((0, C, 4), np.nan, np.float32)
    messages = [m for r in rows for m in r[4]]
    return Landmarks2D(points, conf, found, boxes, list(session.cameras), [f.index for f in session.frames], messages)


def _dlt(P: np.ndarray, xy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P [C, 3, 4] normalised cameras, xy [N, C, 2] undistorted normalised points, w [N, C]
    weights (0 drops a camera) -> world points [N, 3]."""
    rows = np.concatenate([xy[..., 0:1] * P[None, :, 2] - P[None, :, 0],
                           xy[..., 1:2] * P[None, :, 2] - P[None, :, 1]], axis=1)  # [N, 2C, 4]
    rows = rows * np.concatenate([w, w], axis=1)[..., None]
    rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    rows = np.nan_to_num(rows)
    _, _, vt = np.linalg.svd(rows)
    X = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, :3] / X[:, 3:4]


def triangulate(points: np.ndarray, found: np.ndarray, rig, cameras: list[str],
                inlier_px: float = 4.0, min_views: int = 2) -> Landmarks3D:
    """points [T, C, N, 2] px (NaN = missing), found [T, C] -> Landmarks3D."""
    from headcap.calib.projection import undistort_pixels

    points = np.asarray(points, np.float64)
    T, C, N, _ = points.shape
    cams = [rig[c] for c in cameras]
    P = np.stack([cam.cam_from_world[:3] for cam in cams])  # normalised projection matrices
    out = np.full((T, N, 3), np.nan)
    inl = np.zeros((T, N), np.int64)
    rms = np.full((T, N), np.nan)
    for t in range(T):
        obs = points[t].copy()
        obs[~found[t]] = np.nan
        valid = np.isfinite(obs).all(-1).T  # [N, C]
        xy = np.full((N, C, 2), np.nan)
        for c, cam in enumerate(cams):
            ok = valid[:, c]
            if ok.any():
                tt = cam.tensors()
                pix = undistort_pixels(torch.as_tensor(obs[c][ok]), tt["K"], cam.distortion_model, tt["distortion"])
                xy[ok, c] = ((pix.numpy() - cam.K[:2, 2]) @ np.linalg.inv(cam.K[:2, :2]).T)

        def errors(X):  # [N, 3] -> [N, C] px in the distorted images (inf when unseen)
            err = np.full((N, C), np.inf)
            fin = np.isfinite(X).all(-1)
            for c, cam in enumerate(cams):
                pix, depth = cam.project(np.where(fin[:, None], X, 0.0))
                e = np.linalg.norm(pix.numpy() - obs[c], axis=-1)
                e[(depth.numpy() <= 0) | ~valid[:, c] | ~fin] = np.inf
                err[:, c] = e
            return err

        best_count = np.zeros(N, np.int64)
        best_cost = np.full(N, np.inf)
        best_mask = np.zeros((N, C), bool)
        for a, b in combinations(range(C), 2):
            w = np.zeros((N, C))
            w[:, [a, b]] = 1.0
            pair_ok = valid[:, a] & valid[:, b]
            if not pair_ok.any():
                continue
            X = _dlt(P, np.nan_to_num(xy), w)
            err = errors(X)
            mask = (err < inlier_px) & pair_ok[:, None]
            count = mask.sum(1)
            cost = np.where(mask, err ** 2, inlier_px ** 2).sum(1)
            better = (count > best_count) | ((count == best_count) & (cost < best_cost) & (count > 0))
            best_count = np.where(better, count, best_count)
            best_cost = np.where(better, cost, best_cost)
            best_mask[better] = mask[better]
        X = _dlt(P, np.nan_to_num(xy), best_mask.astype(np.float64))
        err = errors(X)
        mask = best_mask & (err < inlier_px)
        good = mask.sum(1) >= min_views
        out[t, good] = X[good]
        inl[t] = np.where(good, mask.sum(1), 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.sqrt(np.where(mask, err ** 2, 0).sum(1) / mask.sum(1))
        rms[t, good] = r[good]
    return Landmarks3D(out, inl, rms)


def _write_npz(path: Path, arrays: dict) -> None:
    import io

    from headcap.core.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def write_landmarks2d(path: Path, lm: Landmarks2D) -> None:
    _write_npz(path, {"points": lm.points.astype(np.float32), "confidence": lm.confidence.astype(np.float32),
                      "found": lm.found, "boxes": lm.boxes.astype(np.float32),
                      "cameras": np.array(lm.cameras, dtype=str), "frames": np.array(lm.frames, np.int64),
                      "ibug68": IBUG68_FROM_MEDIAPIPE})


def write_landmarks3d(path: Path, lm: Landmarks3D, cameras: list[str], frames: list[int]) -> None:
    _write_npz(path, {"points": lm.points.astype(np.float64), "inliers": lm.inliers.astype(np.int32),
                      "rms_px": lm.rms_px.astype(np.float32), "cameras": np.array(cameras, dtype=str),
                      "frames": np.array(frames, np.int64), "ibug68": IBUG68_FROM_MEDIAPIPE})
