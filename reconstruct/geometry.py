"""Per-frame geometry from calibrated views and masks: the steps of headcap.reconstruct.mvs,
.fusion and .surface in order, with the visual hull as the fallback.

    views = load_views(session, rig, t)       undistorted images + masks (mvs)
    hull = carve_visual_hull(views)           silhouettes -> voxels (fusion)
    maps = [depth_map(views, i, *hull.depth_bounds(views[i]))]   per-view stereo (mvs)
    fused = fuse_depth_maps(views, maps)      consistent points + normals + confidence (fusion)
    surface = tsdf_surface(views, maps, fused)  TSDF + marching cubes (surface)

A frame whose consistent depths cover less than `min_coverage` of the masked pixels (no texture,
bad calibration) falls back to the visual hull: its surface is the hull's, its points the hull
surface's vertices with confidence `hull_confidence`. Without masks there is no hull: the depth
search runs over `no_mask_range` around the scene centre and there is no fallback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from headcap.reconstruct.fusion import (FusedPoints, FusionConfig, HullConfig, VisualHull, carve_visual_hull,
                                        fuse_depth_maps)
from headcap.reconstruct.mvs import DepthMap, MVSConfig, View, depth_map, scene_centre
from headcap.reconstruct.surface import SurfaceConfig, tsdf_surface, vertex_normals

__all__ = ["GeometryConfig", "FrameGeometry", "reconstruct_frame", "unmasked_bounds"]


@dataclass(frozen=True)
class GeometryConfig:
    mvs: MVSConfig = MVSConfig()
    hull: HullConfig = HullConfig()
    fusion: FusionConfig = FusionConfig()
    surface: SurfaceConfig = SurfaceConfig()
    min_coverage: float = 0.05
    """Fraction of masked pixels with a consistent depth under which the frame falls back to the hull."""
    hull_confidence: float = 0.1
    """Confidence given to visual-hull points (fallback)."""
    no_mask_range: float = 0.3
    """Without masks: depth searched from (distance to the scene centre - this/2), over this many metres."""


@dataclass
class FrameGeometry:
    """points/normals/confidence/colors: the fused point cloud (world metres); surface_vertices,
    surface_faces: the mesh; method: "mvs" or "visual_hull"; maps: per-view depth maps;
    hull: the visual hull (None without masks); seconds: per step."""

    points: np.ndarray
    normals: np.ndarray
    confidence: np.ndarray
    colors: np.ndarray
    surface_vertices: np.ndarray
    surface_faces: np.ndarray
    method: str
    coverage: float
    maps: list[DepthMap]
    hull: VisualHull | None
    seconds: dict[str, float] = field(default_factory=dict)


def unmasked_bounds(view: View, centre: np.ndarray, extent: float) -> tuple[Tensor, Tensor]:
    """Constant (near, far) [H, W] around the scene centre's depth in a view."""
    z = float((view.camera.cam_from_world[:3, :3] @ centre + view.camera.cam_from_world[:3, 3])[2])
    near = torch.full((view.height, view.width), max(z - extent / 2, 1e-3))
    return near, near + extent


def reconstruct_frame(views: list[View], config: GeometryConfig = GeometryConfig(), progress=None) -> FrameGeometry:
    """The frame's geometry (see the module docstring). progress(done, total) after each view."""
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    masked = [v for v in views if v.mask_raw is not None]
    hull = carve_visual_hull(views, config.hull) if len(masked) >= config.hull.min_views else None
    seconds["visual_hull"] = time.perf_counter() - tic
    centre = scene_centre([v.camera for v in views])
    maps = []
    tic = time.perf_counter()
    bounds_s = 0.0
    for i, v in enumerate(views):
        t0 = time.perf_counter()
        if hull is not None:
            near, far = hull.depth_bounds(v)  # an unmasked view searches wherever the hull is
        else:
            near, far = unmasked_bounds(v, centre, config.no_mask_range)
        bounds_s += time.perf_counter() - t0
        maps.append(depth_map(views, i, near, far, config.mvs, centre))
        if progress is not None:
            progress(i + 1, len(views))
    seconds["depth_bounds"] = bounds_s
    seconds["stereo"] = time.perf_counter() - tic - bounds_s
    tic = time.perf_counter()
    fused = fuse_depth_maps(views, maps, config.fusion)
    seconds["fusion"] = time.perf_counter() - tic
    if fused.coverage >= config.min_coverage or hull is None:
        tic = time.perf_counter()
        sv, sf = tsdf_surface(views, maps, fused.points, fused.consistent, config.surface)
        seconds["surface"] = time.perf_counter() - tic
        return FrameGeometry(fused.points, fused.normals, fused.confidence, fused.colors, sv, sf, "mvs",
                             fused.coverage, maps, hull, seconds)
    tic = time.perf_counter()
    sv, sf = hull.surface()
    normals = vertex_normals(sv, sf)
    seconds["surface"] = time.perf_counter() - tic
    colors = np.full((len(sv), 3), 128, np.uint8)
    return FrameGeometry(sv, normals, np.full(len(sv), config.hull_confidence), colors, sv, sf, "visual_hull",
                         fused.coverage, maps, hull, seconds)
