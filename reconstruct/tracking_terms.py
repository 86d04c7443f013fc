"""Observations of head-model tracking and what its energy terms need (the terms themselves
are linearised in reconstruct.tracking).

Per view of a frame: the image, the mask and, when the landmarks stage ran, 2D landmarks.
Terms (all in pixels, so views of any resolution weigh alike):

* silhouette: every projected vertex lies inside the mask (the mask's outside distance
  transform, bilinearly sampled), and every pixel of the mask's outline has the projected mesh
  near it (distance along the outline's normal to the nearest projected vertex: point to
  line, as in ICP). Both sides together pull the mesh's outline onto the mask's.
* landmarks: robust reprojection error of the model's landmark vertices (iBUG-68).
* photometric: image colour sampled at the projected visible vertices vs albedo x SH shading
  of the vertex normal (vertex-sampled: a rasterization per refresh gives visibility).
* mesh: distance to registered vertices of the same topology.

Pixel coordinates: integer coordinates are pixel centres (headcap's convention), so x maps to
grid_sample's align_corners=True coordinates 2x/(W-1) - 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ViewObservation", "TrackingCamera", "make_view", "sample_image", "estimate_appearance",
           "visible_vertices", "sh_shading"]


@dataclass
class TrackingCamera:
    """A pinhole camera (+ distortion) the tracker projects through; K may be scaled by a
    focal factor (monocular: focal estimated)."""

    K: Tensor               # [3, 3]
    cam_from_world: Tensor  # [4, 4]
    distortion_model: str
    distortion: Tensor
    width: int
    height: int

    @classmethod
    def from_camera(cls, camera, dtype=torch.float32) -> "TrackingCamera":
        return cls(torch.as_tensor(camera.K, dtype=dtype), torch.as_tensor(camera.cam_from_world, dtype=dtype),
                   camera.distortion_model, torch.as_tensor(camera.distortion, dtype=dtype),
                   int(camera.width), int(camera.height))

    def project(self, points: Tensor, focal_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """points [..., N, 3] world -> (pixels [..., N, 2], depth [..., N])."""
        from headcap.calib.projection import project_points

        dtype = points.dtype
        K = self.K.to(dtype)
        if focal_scale is not None:  # the focal lengths (and skew) scale, the principal point stays
            focal_scale = focal_scale.to(dtype)
            one = torch.ones_like(focal_scale)
            K = K * torch.stack([torch.stack([focal_scale, focal_scale, one]), torch.stack([one, focal_scale, one]),
                                 torch.stack([one, one, one])])
        dist = self.distortion.to(dtype) if self.distortion_model != "none" else None
        return project_points(points, K, self.cam_from_world.to(dtype), self.distortion_model, dist)

    def project_with_jacobian(self, points: Tensor, focal_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """points [N, 3] world -> (pixels [N, 2], d pixel / d point [N, 2, 3]): analytic for
        the pinhole and OpenCV models, autograd (one pass per pixel axis) for others."""
        if self.distortion_model not in ("none", "opencv"):
            x = points.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                pix, _ = self.project(x, focal_scale)
                gx = torch.autograd.grad(pix[:, 0].sum(), x, retain_graph=True)[0]
                gy = torch.autograd.grad(pix[:, 1].sum(), x)[0]
            return pix.detach(), torch.stack([gx, gy], 1)
        from headcap.calib.projection import _distortion_jacobian, distort_normalized

        dtype = points.dtype
        K = self.K.to(dtype)
        scale = focal_scale.to(dtype) if focal_scale is not None else torch.ones((), dtype=dtype)
        rot, trans = self.cam_from_world[:3, :3].to(dtype), self.cam_from_world[:3, 3].to(dtype)
        p = points @ rot.T + trans
        z = p[:, 2].clamp(min=1e-12)
        xy = p[:, :2] / z[:, None]
        d_xy = torch.zeros(len(p), 2, 3, dtype=dtype)  # d normalised / d camera point
        d_xy[:, 0, 0] = 1 / z
        d_xy[:, 1, 1] = 1 / z
        d_xy[:, :, 2] = -xy / z[:, None]
        if self.distortion_model == "opencv":
            coeffs = self.distortion.to(dtype)
            d_xy = _distortion_jacobian(xy, "opencv", coeffs) @ d_xy
            xy = distort_normalized(xy, "opencv", coeffs)
        focal = scale * K[:2, :2]
        pix = xy @ focal.T + K[:2, 2]
        return pix, focal @ d_xy @ rot

    def centre(self) -> Tensor:
        rot, trans = self.cam_from_world[:3, :3], self.cam_from_world[:3, 3]
        return -rot.T @ trans


@dataclass
class ViewObservation:
    camera: TrackingCamera
    image: Tensor                # [1, 3, H, W] float in [0, 1]
    image_coarse: Tensor         # [1, 3, H, W] blurred (coarse level of the photometric term)
    mask: Tensor                 # [H, W] bool
    outside_distance: Tensor     # [1, 1, H, W] px from each outside pixel to the mask (0 inside)
    outline: Tensor              # [N, 2] px: the mask's outline pixels
    outline_normals: Tensor      # [N, 2] unit outward normals of the outline (smoothed mask's gradient)
    landmarks: Tensor | None     # [L, 2] px, NaN where missing (model landmark order)


def make_view(camera: TrackingCamera, image: np.ndarray, mask: np.ndarray, landmarks: np.ndarray | None = None,
              max_outline: int = 600, coarse_sigma: float = 2.0) -> ViewObservation:
    """Precompute one view's tracking targets from an RGB uint8 or float image [H, W, 3] and a
    mask [H, W] (bool or 0/255)."""
    import cv2

    mask = np.asarray(mask)
    mask = mask > (127 if mask.dtype == np.uint8 else 0.5) if mask.dtype != bool else mask
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5).astype(np.float32)
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(mask & ~eroded)
    outline = np.stack([xs, ys], 1).astype(np.float32)
    if len(outline) > max_outline:
        outline = outline[np.linspace(0, len(outline) - 1, max_outline).round().astype(int)]
    smooth = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5)
    gy, gx = np.gradient(smooth)
    ox, oy = outline[:, 0].astype(int), outline[:, 1].astype(int)
    normals = -np.stack([gx[oy, ox], gy[oy, ox]], 1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)
    k = int(2 * math.ceil(3 * coarse_sigma) + 1)
    coarse = cv2.GaussianBlur(img, (k, k), coarse_sigma)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    lm = None if landmarks is None else torch.as_tensor(np.asarray(landmarks, np.float32))
    return ViewObservation(camera, to_t(img), to_t(coarse), torch.from_numpy(mask), torch.from_numpy(outside)[None, None],
                           torch.from_numpy(outline), torch.from_numpy(normals.astype(np.float32)), lm)


def sample_image(image: Tensor, pixels: Tensor) -> Tensor:
    """Bilinear samples [N, C] of image [1, C, H, W] at pixels [N, 2] (x, y; centres at
    integers); border values outside. Differentiable in the pixels."""
    H, W = image.shape[-2:]
    grid = torch.stack([2.0 * pixels[:, 0] / (W - 1) - 1.0, 2.0 * pixels[:, 1] / (H - 1) - 1.0], -1)
    out = F.grid_sample(image, grid.view(1, 1, -1, 2).to(image.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[0, :, 0].T


def sh_shading(normals: Tensor, sh_coeffs: Tensor) -> Tensor:
    """Lambertian irradiance / pi [N, 3] at unit normals [N, 3] (reconstruct.shading)."""
    from headcap.reconstruct.shading import sh_irradiance

    return sh_irradiance(normals, sh_coeffs.to(normals.dtype)) / math.pi


@torch.no_grad()
def visible_vertices(vertices: Tensor, faces: Tensor, normals: Tensor, view: ViewObservation,
                     focal_scale: Tensor | None = None, min_cos: float = 0.15) -> Tensor:
    """Ids of vertices seen in a view: corners of triangles the z-buffer shows, facing the
    camera by at least `min_cos`."""
    from headcap.reconstruct.rasterize_mesh import rasterize

    cam = view.camera
    pix, depth = cam.project(vertices.double(), None if focal_scale is None else focal_scale.double())
    screen = torch.cat([pix, depth[:, None]], -1)
    frags = rasterize(screen, faces, cam.height, cam.width)
    tid = frags.triangle_id.reshape(-1)
    shown = torch.unique(tid[tid >= 0])
    seen = torch.zeros(len(vertices), dtype=torch.bool)
    seen[faces[shown].reshape(-1)] = True
    view_dir = cam.centre().to(vertices.dtype)[None] - vertices
    cos = (normals * view_dir).sum(-1) / view_dir.norm(dim=-1).clamp(min=1e-9)
    return (seen & (cos > min_cos)).nonzero().squeeze(1)


@torch.no_grad()
def estimate_appearance(vertices: Tensor, normals: Tensor, views: list[ViewObservation], visible: list[Tensor],
                        focal_scale: Tensor | None = None, rounds: int = 3) -> tuple[Tensor, Tensor]:
    """Per-vertex albedo [V, 3] and SH lighting [9, 3] (world frame) explaining the colours seen
    at the visible vertices of one or more views (alternating least squares: lighting given
    albedo, albedo given lighting). Vertices seen nowhere get the median albedo."""
    from headcap.reconstruct.shading import LAMBERT_BAND_FACTORS, SH_BAND_OF_COEFF, UNIFORM_WHITE_SH00, sh_basis_irradiance

    ids, colours = [], []
    for view, vis in zip(views, visible):
        pix, _ = view.camera.project(vertices[vis], focal_scale)
        ids.append(vis)
        colours.append(sample_image(view.image, pix))
    ids_all = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
    obs = torch.cat(colours).double() if colours else torch.zeros(0, 3, dtype=torch.float64)
    V = len(vertices)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = UNIFORM_WHITE_SH00
    albedo = torch.full((V, 3), 0.5, dtype=torch.float64)
    if len(ids_all) == 0:
        return albedo.float(), sh.float()
    n = normals[ids_all].double()
    bands = torch.tensor([LAMBERT_BAND_FACTORS[b] for b in SH_BAND_OF_COEFF], dtype=torch.float64)
    basis = sh_basis_irradiance(n) * bands / math.pi  # [N, 9]: shading = basis @ sh
    count = torch.zeros(V, dtype=torch.float64).index_add_(0, ids_all, torch.ones(len(ids_all), dtype=torch.float64))
    seen = count > 0
    for _ in range(rounds):
        shade = (basis @ sh).clamp(min=1e-3)
        acc = torch.zeros(V, 3, dtype=torch.float64).index_add_(0, ids_all, obs * shade)
        norm = torch.zeros(V, 3, dtype=torch.float64).index_add_(0, ids_all, shade * shade)
        albedo = torch.where(seen[:, None], acc / norm.clamp(min=1e-9), albedo)
        # mean albedo fixed to its current value: the scale is shared by albedo and light
        a = albedo[ids_all]
        for c in range(3):
            design = basis * a[:, c:c + 1]
            # numpy's LAPACK: torch's (MKL) lstsq differs in the last bits from call to call
            # (its results depend on memory alignment), which a resumed run would not reproduce
            sh[:, c] = torch.from_numpy(np.linalg.lstsq(design.numpy(), obs[:, c].numpy(), rcond=None)[0])
    fill = albedo[seen].median(dim=0).values
    albedo = torch.where(seen[:, None], albedo, fill)
    return albedo.clamp(0.0, 2.0).float(), sh.float()
