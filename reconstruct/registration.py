"""Registration of a head model's template to per-frame geometry (the classic route of issue #11):
every frame's surface as the same template mesh, in world metres, with a per-vertex confidence.

  1. rigid pose (registration_rigid): Kabsch on triangulated landmarks when the session has
     them, else the previous frame's pose, else multi-start ICP; refined by point-to-plane ICP;
  2. head-model fit (registration_fit): identity estimated once on a few key frames and shared,
     then per frame expression, jaw/eye joints and pose (robust point-to-plane, normal
     compatibility, landmark term; Levenberg-Marquardt with torch autograd Jacobians);
  3. free-form offsets (registration_nonrigid): a Laplacian-regularised sparse solve towards
     local planes of the cloud, and the per-vertex confidence.

Geometry per frame comes from `geometry/<t:06d>.ply` (points with normals and confidence, as the
reconstruct stage writes it) or `geometry/<t:06d>_surface.ply` (a triangle mesh).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from headcap.reconstruct.head_model import HeadModel
from headcap.reconstruct.registration_fit import (FitConfig, FitResult, absorbed_points, fit_head_model,
                                                  fit_vertex_mask)
from headcap.reconstruct.registration_nonrigid import (NonrigidConfig, nonrigid_refine, uniform_laplacian,
                                                       vertex_normals_np)
from headcap.reconstruct.registration_rigid import (PointCloud, icp, multi_start_icp, rigid_from_landmarks)

__all__ = ["RegistrationConfig", "FrameRegistration", "Registrar", "load_geometry", "load_landmarks68",
           "geometry_paths", "MIN_POINTS", "TooFewPoints", "filled_frame"]

MIN_POINTS = 200


class TooFewPoints(ValueError):
    """A frame's geometry has fewer usable points than registration needs (the register stage
    skips such a frame with a warning; other bad geometry is an error)."""


@dataclass(frozen=True)
class RegistrationConfig:
    method: Literal["classic", "learned"] = "classic"
    """Registration method: classic (model fit to the frame's geometry + Laplacian offsets) or learned (a
    multi-view network from the calibrated images; no geometry needed; see docs/learned_registration.md)."""
    keyframes: int = 4
    """Frames (evenly spaced) on which the shared identity is estimated."""
    points: int = 12000
    """Cloud points per frame in the model fit (a seeded subsample)."""
    rounds: int = 10
    """Correspondence updates of the model fit (two Levenberg-Marquardt steps in between)."""
    landmarks: bool = True
    """Use landmarks/landmarks3d.npz (from `headcap landmarks`) when the session has it."""
    nonrigid_rounds: int = 3
    """Sparse solves of the free-form offsets (0: the model fit alone)."""
    smoothness: float = 1.0
    """Laplacian weight of the free-form offsets (larger: smoother, closer to the model)."""
    radius: float = 0.003
    """Farthest cloud point (m) that counts for a vertex's local plane."""
    seed: int = 0
    """Seed of the point subsampling."""

    def __post_init__(self):
        if self.method not in ("classic", "learned"):
            raise ValueError(f"register: field 'method' must be 'classic' or 'learned', got {self.method!r}")
        for name in ("keyframes", "points", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"register: field '{name}' must be an integer >= 1, got {value!r}")
        if isinstance(self.nonrigid_rounds, bool) or not isinstance(self.nonrigid_rounds, int) or self.nonrigid_rounds < 0:
            raise ValueError(f"register: field 'nonrigid_rounds' must be an integer >= 0, got {self.nonrigid_rounds!r}")
        for name in ("smoothness", "radius"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"register: field '{name}' must be a positive number, got {value!r}")

    def fit(self) -> FitConfig:
        return FitConfig(rounds=self.rounds, points=self.points)

    def nonrigid(self) -> NonrigidConfig:
        # along the fit's normals: free 3D offsets let stereo noise slide the surface sideways
        return NonrigidConfig(rounds=self.nonrigid_rounds, smoothness=self.smoothness, radius=self.radius,
                              along_normal=True)


@dataclass
class FrameRegistration:
    vertices: np.ndarray          # [V, 3] world metres (model fit + offsets)
    confidence: np.ndarray        # [V] float32 in [0, 1]
    fit_vertices: np.ndarray      # [V, 3] the model fit alone
    expression: np.ndarray        # [Ne]
    joint_rotations: np.ndarray   # [J, 3]
    world_from_head: np.ndarray   # [4, 4]
    stats: dict = field(default_factory=dict)


def geometry_paths(folder: Path, frame: int) -> tuple[Path, Path]:
    return folder / f"{frame:06d}.ply", folder / f"{frame:06d}_surface.ply"


def _pca_normals(points: np.ndarray, k: int = 16) -> np.ndarray:
    _, idx = cKDTree(points).query(points, k=min(k, len(points)))
    nb = points[idx] - points[idx].mean(1, keepdims=True)
    _, _, vt = np.linalg.svd(np.einsum("nki,nkj->nij", nb, nb))
    normals = vt[:, 2]
    outward = np.einsum("nc,nc->n", normals, points - points.mean(0)) < 0
    normals[outward] *= -1
    return normals


def load_geometry(folder: Path, frame: int) -> PointCloud:
    """A frame's cloud from geometry/<t:06d>.ply (preferred) or geometry/<t:06d>_surface.ply.
    Normals: the file's, else the mesh's, else PCA oriented away from the centroid."""
    from headcap.core.ply import read_points

    points_path, surface_path = geometry_paths(Path(folder), frame)
    path = points_path if points_path.is_file() else surface_path if surface_path.is_file() else None
    if path is None:
        raise ValueError(f"{folder}: no geometry for frame {frame} (neither {points_path.name} nor "
                         f"{surface_path.name}); run `headcap reconstruct SESSION` first")
    data = read_points(path)
    pts = data["points"]
    if len(pts) < MIN_POINTS:
        raise TooFewPoints(f"{path}: frame {frame} has {len(pts)} points, fewer than the {MIN_POINTS} registration needs")
    if "normals" in data:
        normals = data["normals"]
    elif "faces" in data and len(data["faces"]):
        normals = vertex_normals_np(pts, data["faces"].astype(np.int64))
    else:
        normals = _pca_normals(pts)
    length = np.linalg.norm(normals, axis=1)
    ok = np.isfinite(length) & (length > 1e-9)
    conf = data.get("confidence", np.ones(len(pts)))
    conf = np.nan_to_num(conf, nan=0.0)
    if conf.max() > 0:
        conf = np.clip(conf / conf.max(), 0.0, 1.0)
    ok &= conf > 0
    if ok.sum() < MIN_POINTS:
        raise TooFewPoints(f"{path}: frame {frame} has {int(ok.sum())} points with a normal and a positive confidence, "
                         f"fewer than the {MIN_POINTS} registration needs")
    return PointCloud(pts[ok], normals[ok] / length[ok, None], conf[ok])


def load_landmarks68(path: Path) -> dict[int, np.ndarray]:
    """landmarks/landmarks3d.npz -> {frame index: [68, 3] iBUG-68 world points (NaN missing)}."""
    from headcap.core.fileio import read_npz

    data = read_npz(path)
    for key in ("points", "ibug68", "frames"):
        if key not in data:
            raise ValueError(f"{path}: field {key!r} missing (written by `headcap landmarks`?)")
    points = np.asarray(data["points"])
    if points.dtype.kind not in "fiu":
        raise ValueError(f"{path}: field 'points' must hold numbers, got dtype {points.dtype}")
    points = points.astype(np.float64)  # NaN where a point was not triangulated
    ibug = np.asarray(data["ibug68"], np.int64)
    frames = np.asarray(data["frames"], np.int64)
    if points.ndim != 3 or points.shape[2] != 3 or len(frames) != points.shape[0]:
        raise ValueError(f"{path}: field 'points' has shape {points.shape}, expected [{len(frames)}, N, 3]")
    if ibug.shape != (68,) or ibug.min() < 0 or ibug.max() >= points.shape[1]:
        raise ValueError(f"{path}: field 'ibug68' must hold 68 indices into the {points.shape[1]} points")
    return {int(f): points[t][ibug] for t, f in enumerate(frames)}


def filled_frame(source: FrameRegistration, reason: str, source_frame: int) -> FrameRegistration:
    """A frame that could not be registered: the model fit of a neighbouring frame (`source`,
    its free-form offsets dropped), confidence 0 everywhere, `reason` in the stats."""
    return FrameRegistration(np.array(source.fit_vertices, copy=True), np.zeros(len(source.fit_vertices), np.float32),
                             np.array(source.fit_vertices, copy=True), np.array(source.expression, copy=True),
                             np.array(source.joint_rotations, copy=True), np.array(source.world_from_head, copy=True),
                             {"skipped": reason, "filled_from_frame": int(source_frame)})


class Registrar:
    """Registration of one head model, frame by frame, with a shared identity."""

    def __init__(self, model: HeadModel, config: RegistrationConfig = RegistrationConfig()):
        self.model = model
        self.config = config
        self.faces = model.faces.cpu().numpy().astype(np.int64)
        self.active = fit_vertex_mask(model)
        self.laplacian = uniform_laplacian(self.faces, model.num_vertices)
        self.use_landmarks = len(model.landmark_ids) == 68 and model.landmark_convention == "ibug68"

    def _head(self, identity: np.ndarray | None):
        with torch.no_grad():
            kwargs = {}
            if identity is not None and self.model.num_identity:
                kwargs["identity"] = torch.as_tensor(identity, dtype=self.model.dtype)[None]
            out = self.model.forward(**kwargs)
        verts = out.vertices[0].double().numpy()
        normals = vertex_normals_np(verts, self.faces)
        return verts, normals, out.landmarks[0].double().numpy()

    def rigid(self, cloud: PointCloud, landmarks68: np.ndarray | None, identity: np.ndarray | None = None,
              previous: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        """world_from_head [4, 4] and how it was found."""
        verts, normals, lms = self._head(identity)
        src, src_n = verts[self.active], normals[self.active]
        if landmarks68 is not None and self.use_landmarks:
            start = rigid_from_landmarks(lms, landmarks68)
            if start is not None:
                res = icp(src, src_n, cloud, start, max_distance=0.01)
                if res.inlier_fraction > 0.3:
                    return res.transform, "landmarks + icp"
        if previous is not None:
            res = icp(src, src_n, cloud, previous, max_distance=0.01)
            if res.inlier_fraction > 0.5 and res.cost < 0.003:
                return res.transform, "previous pose + icp"
        res = multi_start_icp(src, src_n, cloud, seed=self.config.seed)
        return res.transform, "multi-start icp"

    def estimate_identity(self, clouds: list[PointCloud], landmarks: list[np.ndarray | None]) -> FitResult:
        poses = np.stack([self.rigid(c, lm)[0] for c, lm in zip(clouds, landmarks)])
        return fit_head_model(self.model, clouds, poses, landmarks if self.use_landmarks else None,
                              config=self.config.fit(), seed=self.config.seed)

    def register_frame(self, cloud: PointCloud, landmarks68: np.ndarray | None, identity: np.ndarray,
                       previous: FrameRegistration | None = None, pose: np.ndarray | None = None) -> FrameRegistration:
        """One frame with the shared identity. `pose` (world_from_head, e.g. from the identity
        fit of a key frame) or the previous frame's pose start the rigid step's ICP."""
        start = pose if pose is not None else None if previous is None else previous.world_from_head
        pose, how = self.rigid(cloud, landmarks68, identity, start)
        expr = None if previous is None else previous.expression[None]
        jrot = None if previous is None else previous.joint_rotations[None]
        fit = fit_head_model(self.model, [cloud], pose[None], [landmarks68] if self.use_landmarks else None,
                             identity=identity, expression=expr, joint_rotations=jrot, config=self.config.fit(),
                             seed=self.config.seed)
        fit_vertices = fit.vertices[0]
        stats = {"rigid": how, "fit_rms_mm": float(fit.rms_mm[0]), "fit_matched": float(fit.matched[0])}
        if self.config.nonrigid_rounds > 0:
            target = cloud
            if self.config.fit().interior != "ignore":  # points on teeth, eyelashes, ... pull no outer vertex
                keep = ~absorbed_points(cloud.points, fit_vertices, self.model)
                target = PointCloud(cloud.points[keep], cloud.normals[keep], cloud.confidence[keep])
                stats["absorbed_fraction"] = float(1 - keep.mean())
            nr = nonrigid_refine(fit_vertices, self.faces, self.active, target, self.config.nonrigid(), self.laplacian)
            vertices, confidence = nr.vertices, nr.confidence
            dist = nr.distance[nr.observed]
            stats.update(observed_fraction=float(nr.observed[self.active].mean()),
                         offset_mm_median=float(np.median(np.linalg.norm(nr.offsets[nr.observed], axis=1)) * 1e3)
                         if nr.observed.any() else None,
                         surface_distance_mm_median=float(np.median(dist) * 1e3) if len(dist) else None)
        else:
            vertices = fit_vertices
            from headcap.reconstruct.registration_nonrigid import local_planes

            q, m, c = local_planes(vertices, vertex_normals_np(vertices, self.faces), self.active, cloud,
                                   self.config.nonrigid())
            d = np.abs(np.einsum("vc,vc->v", m, vertices - q))
            confidence = np.where(c > 0, c * np.exp(-(d / self.config.nonrigid().sigma) ** 2), 0.0).astype(np.float32)
        return FrameRegistration(vertices, confidence, fit_vertices, fit.expression[0], fit.joint_rotations[0],
                                 fit.world_from_head[0], stats)
