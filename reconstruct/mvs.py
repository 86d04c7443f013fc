"""Multi-view stereo on the CPU: a per-view depth, normal and confidence map from calibrated,
undistorted views (torch, vectorised with grid_sample).

For every reference view:

1. neighbours: the `neighbours` views whose viewing directions (towards the scene centre) make
   an angle with the reference closest to `best_angle_deg`, inside [min_angle_deg, max_angle_deg];
2. a coarse plane sweep at `coarse_scale` of the resolution: `depth_samples` depth hypotheses per
   pixel between the per-pixel bounds given by the caller (the visual hull's entry and exit depth,
   headcap.reconstruct.fusion.VisualHull.depth_bounds); each hypothesis warps every neighbour
   into the reference (pinhole back-projection + projection, bilinear grid_sample) and scores
   zero-mean normalised cross-correlation (NCC) over a `window` x `window` box;
3. the score of a hypothesis is the mean NCC of the best half of the neighbours (robust to a
   neighbour where the point is occluded or outside the mask); the best hypothesis is refined to
   sub-sample depth by a parabola through its two neighbours;
4. `refine_rounds` full-resolution sweeps of 2*`refine_steps`+1 hypotheses around the current
   depth, each with a finer spacing, again with the parabola;
5. confidence = the best score clipped to [0, 1]; pixels outside the reference mask, or scoring
   under `min_score`, get depth 0; normals (camera frame, towards the camera) come from the
   depth map's central differences.

Images are undistorted first (Camera.undistort_image into the same K), so everything after
step 0 is pinhole. Pixel centres sit at integer coordinates (headcap.calib.projection).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from headcap.calib.camera import Camera

__all__ = ["MVSConfig", "View", "DepthMap", "load_views", "select_neighbours", "depth_map", "depth_normals",
           "scene_centre"]


@dataclass(frozen=True)
class MVSConfig:
    neighbours: int = 4
    """Source views scored against each reference view."""
    best_angle_deg: float = 20.0
    """Preferred angle between the reference and a source view (seen from the scene centre)."""
    min_angle_deg: float = 4.0
    """Smallest angle between reference and source (a shorter baseline gives poor depth)."""
    max_angle_deg: float = 50.0
    """Largest angle between reference and source (wider views see too different patches)."""
    window: int = 7
    """Side of the NCC window in pixels at full resolution (odd)."""
    coarse_scale: float = 0.5
    """Resolution of the coarse plane sweep, as a fraction of the image size."""
    depth_samples: int = 64
    """Depth hypotheses per pixel in the coarse sweep."""
    max_range: float = 0.08
    """Deepest search behind a pixel's near bound (metres): the first visible surface lies at
    most this far behind the visual hull's entry point."""
    refine_steps: int = 4
    """Hypotheses on each side of the current depth in a refinement round."""
    refine_rounds: int = 2
    """Full-resolution refinement rounds (each spacing is 1/refine_steps of the previous)."""
    min_score: float = 0.4
    """Lowest aggregated NCC (0..1) kept as a depth."""
    min_texture: float = 0.004
    """Lowest grey-level standard deviation (0..1) in the reference window that can be matched."""


@dataclass
class View:
    """One camera's image of a frame, undistorted into the pinhole camera with the same K.

    grey: [H, W] float32 in [0, 1]; rgb: [H, W, 3] uint8; mask: [H, W] bool or None (no mask);
    mask_raw: the mask in the original (distorted) image, for carving; camera: the calibrated
    camera (with its distortion)."""

    id: str
    camera: Camera
    grey: Tensor
    rgb: np.ndarray
    mask: Tensor | None = None
    mask_raw: np.ndarray | None = None

    @property
    def K(self) -> Tensor:
        return torch.tensor(self.camera.K, dtype=torch.float64)

    @property
    def cam_from_world(self) -> Tensor:
        return torch.tensor(self.camera.cam_from_world, dtype=torch.float64)

    @property
    def height(self) -> int:
        return self.camera.height

    @property
    def width(self) -> int:
        return self.camera.width


@dataclass
class DepthMap:
    """A view's depth (camera z, metres; 0 = none) [H, W], normals (camera frame, unit, towards
    the camera) [H, W, 3] and confidence [H, W] in [0, 1], all float32 tensors."""

    view: str
    depth: Tensor
    normals: Tensor
    confidence: Tensor
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_views(session, rig, frame: int, warn=None) -> list[View]:
    """The frame's views, undistorted. A camera without a mask is used unmasked (warn(message))."""
    import cv2

    from headcap.capture.video import read_image

    views = []
    for cam_id in session.cameras:
        cam = rig[cam_id]
        image_path = session.image_path(frame, cam_id)
        rgb = read_image(image_path)
        if rgb.shape[:2] != (cam.height, cam.width):
            raise ValueError(f"{image_path}: image is {rgb.shape[1]}x{rgb.shape[0]}, camera {cam_id!r} in the rig "
                             f"is {cam.width}x{cam.height}")
        rgb_u = cam.undistort_image(rgb)
        grey = torch.from_numpy(cv2.cvtColor(rgb_u, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)
        mask_t = mask_raw = None
        mask_path = session.mask_path(frame, cam_id)
        if mask_path is None or not mask_path.is_file():
            if warn is not None:
                where = "no mask listed" if mask_path is None else f"mask file {mask_path} missing"
                warn(f"frame {frame} camera {cam_id}: {where}; this view is used without a mask "
                     "and does not carve the visual hull")
        else:
            m = read_image(mask_path, cv2.IMREAD_GRAYSCALE)
            if m.shape[:2] != (cam.height, cam.width):
                raise ValueError(f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]}, camera {cam_id!r} is "
                                 f"{cam.width}x{cam.height}")
            mask_raw = m > 127
            mu = cam.undistort_image(mask_raw.astype(np.uint8) * 255, interpolation=cv2.INTER_NEAREST)
            mask_t = torch.from_numpy(mu > 127)
        views.append(View(cam_id, cam, grey, rgb_u, mask_t, mask_raw))
    return views


def scene_centre(cameras: list[Camera]) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis [3]."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in cameras:
        d = cam.world_from_cam[:3, 2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.centre
    return np.linalg.lstsq(A, b, rcond=None)[0]


def select_neighbours(views: list[View], ref: int, config: MVSConfig, centre: np.ndarray) -> list[int]:
    """Indices of the source views for `ref`: angle (at the scene centre) in range, closest to
    best_angle_deg first."""
    def direction(v: View) -> np.ndarray:
        d = v.camera.centre - centre
        return d / np.linalg.norm(d)

    dr = direction(views[ref])
    scored = []
    for i, v in enumerate(views):
        if i == ref:
            continue
        angle = math.degrees(math.acos(float(np.clip(dr @ direction(v), -1, 1))))
        if config.min_angle_deg <= angle <= config.max_angle_deg:
            scored.append((abs(angle - config.best_angle_deg), i))
    return [i for _, i in sorted(scored)[:config.neighbours]]


def _scaled_K(K: Tensor, sx: float, sy: float) -> Tensor:
    """K of an image resized by (sx, sy) (pixel centres at integers: u' = (u + 0.5) s - 0.5)."""
    out = K.clone()
    out[0, 0] = K[0, 0] * sx
    out[0, 1] = K[0, 1] * sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] = K[1, 1] * sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image[None, None], size=size, mode="area")[0, 0]


def _box(x: Tensor, k: int) -> Tensor:
    """Mean over k x k windows of [N, H, W] (border windows average what they hold)."""
    y = F.avg_pool2d(x[:, None], (1, k), stride=1, padding=(0, k // 2), count_include_pad=False)
    return F.avg_pool2d(y, (k, 1), stride=1, padding=(k // 2, 0), count_include_pad=False)[:, 0]


class _Level:
    """The reference crop and its sources at one resolution."""

    def __init__(self, views: list[View], ref: int, sources: list[int], scale: float, box: tuple[int, int, int, int],
                 window: int):
        H, W = views[ref].height, views[ref].width
        h, w = max(8, round(H * scale)), max(8, round(W * scale))
        self.scale_x, self.scale_y = w / W, h / H
        x0, y0, x1, y1 = box  # full-resolution crop (inclusive-exclusive)
        self.x0, self.y0 = math.floor(x0 * self.scale_x), math.floor(y0 * self.scale_y)
        self.x1, self.y1 = math.ceil(x1 * self.scale_x), math.ceil(y1 * self.scale_y)
        ref_v = views[ref]
        grey = ref_v.grey if (h, w) == (H, W) else _resize(ref_v.grey, (h, w))
        self.ref = grey[self.y0:self.y1, self.x0:self.x1].contiguous()
        self.K_ref = _scaled_K(ref_v.K, self.scale_x, self.scale_y)
        self.window = window
        self.srcs, self.src_masks, self.K_src, self.src_from_ref = [], [], [], []
        ref_from_world = ref_v.cam_from_world
        world_from_ref = torch.linalg.inv(ref_from_world)
        for s in sources:
            v = views[s]
            hs, ws = max(8, round(v.height * scale)), max(8, round(v.width * scale))
            self.srcs.append(v.grey if (hs, ws) == (v.height, v.width) else _resize(v.grey, (hs, ws)))
            if v.mask is not None:
                m = v.mask.float()
                self.src_masks.append(m if (hs, ws) == (v.height, v.width) else _resize(m, (hs, ws)))
            else:
                self.src_masks.append(None)
            self.K_src.append(_scaled_K(v.K, ws / v.width, hs / v.height))
            self.src_from_ref.append(v.cam_from_world @ world_from_ref)
        hh, ww = self.ref.shape
        ys, xs = torch.meshgrid(torch.arange(self.y0, self.y0 + hh, dtype=torch.float64),
                                torch.arange(self.x0, self.x0 + ww, dtype=torch.float64), indexing="ij")
        K = self.K_ref
        ry = (ys - K[1, 2]) / K[1, 1]
        rx = (xs - K[0, 2] - K[0, 1] * ry) / K[0, 0]
        self.rays = torch.stack([rx, ry, torch.ones_like(rx)], 0).float()  # [3, h, w]: camera point at depth 1
        k = window
        self.mu_r = _box(self.ref[None], k)[0]
        var_r = (_box((self.ref * self.ref)[None], k)[0] - self.mu_r ** 2).clamp_min(0)
        self.sigma_r = var_r.sqrt()

    def scores(self, depth: Tensor) -> Tensor:
        """Aggregated NCC [D, h, w] of depth hypotheses [D, h, w] (camera z of the reference)."""
        D = depth.shape[0]
        pts = self.rays[None] * depth[:, None]  # [D, 3, h, w]
        nccs = []
        k = self.window
        for src, smask, Ks, T in zip(self.srcs, self.src_masks, self.K_src, self.src_from_ref):
            R = T[:3, :3].float()
            t = T[:3, 3].float()
            p = torch.einsum("ij,djhw->dihw", R, pts) + t[None, :, None, None]
            z = p[:, 2]
            zs = torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
            xn, yn = p[:, 0] / zs, p[:, 1] / zs
            Ks32 = Ks.float()
            u = Ks32[0, 0] * xn + Ks32[0, 1] * yn + Ks32[0, 2]
            v = Ks32[1, 1] * yn + Ks32[1, 2]
            hs, ws = src.shape
            h, w = u.shape[1:]
            grid = torch.stack([2 * u / (ws - 1) - 1, 2 * v / (hs - 1) - 1], -1).reshape(1, D * h, w, 2)
            planes = src[None, None] if smask is None else torch.stack([src, smask])[None]
            sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=True)[0].reshape(-1, D, h, w)
            warped = sampled[0]
            inside = (z > 1e-6) & (u >= 0) & (u <= ws - 1) & (v >= 0) & (v <= hs - 1)
            if smask is not None:
                inside &= sampled[1] > 0.5
            mu_s = _box(warped, k)
            var_s = (_box(warped * warped, k) - mu_s ** 2).clamp_min(0)
            cov = _box(warped * self.ref[None], k) - mu_s * self.mu_r[None]
            ncc = cov / (var_s.sqrt() * self.sigma_r[None] + 1e-5)
            nccs.append(torch.where(inside, ncc, torch.full_like(ncc, -1.0)))
        stack = torch.stack(nccs, 0)  # [S, D, h, w]
        keep = max(1, (stack.shape[0] + 1) // 2)
        return stack.topk(keep, dim=0).values.mean(0)


def _parabola(s_m: Tensor, s_0: Tensor, s_p: Tensor) -> Tensor:
    """Offset (in samples, within [-0.5, 0.5]) of the peak of the parabola through three scores."""
    denom = s_m - 2 * s_0 + s_p
    off = torch.where(denom < -1e-9, 0.5 * (s_m - s_p) / torch.where(denom < -1e-9, denom, -torch.ones_like(denom)),
                      torch.zeros_like(denom))
    return off.clamp(-0.5, 0.5)


def _sweep(level: _Level, near: Tensor, far: Tensor, samples: int, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """Best depth (sub-sample) and score per pixel for `samples` depths from near to far."""
    h, w = level.ref.shape
    steps = torch.linspace(0, 1, samples)
    best_s = torch.full((h, w), -2.0)
    best_k = torch.zeros((h, w), dtype=torch.long)
    all_scores = torch.empty((samples, h, w))
    for start in range(0, samples, chunk):
        ks = steps[start:start + chunk]
        depth = near[None] + ks[:, None, None] * (far - near)[None]
        all_scores[start:start + len(ks)] = level.scores(depth)
    best_s, best_k = all_scores.max(0)
    k_m = (best_k - 1).clamp_min(0)
    k_p = (best_k + 1).clamp_max(samples - 1)
    s_m = all_scores.gather(0, k_m[None])[0]
    s_p = all_scores.gather(0, k_p[None])[0]
    off = _parabola(s_m, best_s, s_p)
    off = torch.where((best_k == 0) | (best_k == samples - 1), torch.zeros_like(off), off)
    step = (far - near) / max(samples - 1, 1)
    return near + (best_k.float() + off) * step, best_s


def _refine(level: _Level, depth: Tensor, spacing: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Best depth (sub-sample) and score among depth + j * spacing, j = -steps..steps."""
    js = torch.arange(-steps, steps + 1, dtype=torch.float32)
    hyp = depth[None] + js[:, None, None] * spacing[None]
    scores = level.scores(hyp.clamp_min(1e-3))
    best_s, best_k = scores.max(0)
    n = len(js)
    s_m = scores.gather(0, (best_k - 1).clamp_min(0)[None])[0]
    s_p = scores.gather(0, (best_k + 1).clamp_max(n - 1)[None])[0]
    off = _parabola(s_m, best_s, s_p)
    off = torch.where((best_k == 0) | (best_k == n - 1), torch.zeros_like(off), off)
    return depth + (best_k.float() - steps + off) * spacing, best_s


def depth_normals(depth: Tensor, K: Tensor) -> Tensor:
    """Camera-frame unit normals [H, W, 3] (facing the camera) from a depth map [H, W] by central
    differences; zero where a neighbour has no depth or the depth jumps."""
    H, W = depth.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    Kf = K.float()
    yn = (ys - Kf[1, 2]) / Kf[1, 1]
    xn = (xs - Kf[0, 2] - Kf[0, 1] * yn) / Kf[0, 0]
    P = torch.stack([xn * depth, yn * depth, depth], -1)
    pad = F.pad(P.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")[0].permute(1, 2, 0)
    dx = pad[1:-1, 2:] - pad[1:-1, :-2]
    dy = pad[2:, 1:-1] - pad[:-2, 1:-1]
    n = torch.cross(dx, dy, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = torch.where((n * P).sum(-1, keepdim=True) > 0, -n, n)
    dpad = F.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    neigh = torch.stack([dpad[1:-1, 2:], dpad[1:-1, :-2], dpad[2:, 1:-1], dpad[:-2, 1:-1]], 0)
    ok = (depth > 0) & (neigh > 0).all(0) & ((neigh - depth[None]).abs() < 0.02 * depth[None]).all(0)
    return torch.where(ok[..., None], n, torch.zeros_like(n))


def depth_map(views: list[View], ref: int, near: Tensor, far: Tensor, config: MVSConfig = MVSConfig(),
              centre: np.ndarray | None = None) -> DepthMap:
    """The depth, normal and confidence maps of view `ref`.

    near, far: [H, W] float32 per-pixel depth bounds (camera z; far <= near marks a pixel with no
    surface to look for, e.g. outside the visual hull)."""
    import time

    tic = time.perf_counter()
    v = views[ref]
    H, W = v.height, v.width
    if near.shape != (H, W) or far.shape != (H, W):
        raise ValueError(f"view {v.id!r}: depth bounds are {tuple(near.shape)}/{tuple(far.shape)}, image is {H}x{W}")
    if config.window % 2 != 1 or config.window < 3:
        raise ValueError(f"mvs: field 'window' must be an odd integer >= 3, got {config.window}")
    if centre is None:
        centre = scene_centre([x.camera for x in views])
    sources = select_neighbours(views, ref, config, centre)
    empty = DepthMap(v.id, torch.zeros(H, W), torch.zeros(H, W, 3), torch.zeros(H, W), [views[s].id for s in sources])
    far = torch.minimum(far, near + config.max_range)
    valid = far > near
    if v.mask is not None:
        valid &= v.mask
    # a flat window cannot be matched: skip it before the sweep (and a textureless view entirely)
    k = config.window
    mu = _box(v.grey[None], k)[0]
    valid &= (_box((v.grey * v.grey)[None], k)[0] - mu * mu).clamp_min(0).sqrt() > config.min_texture
    if not sources or not valid.any():
        empty.seconds = time.perf_counter() - tic
        return empty
    ys, xs = torch.nonzero(valid, as_tuple=True)
    margin = config.window
    box = (max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin),
           min(W, int(xs.max()) + 1 + margin), min(H, int(ys.max()) + 1 + margin))

    # coarse sweep
    coarse_window = max(3, (round(config.window * config.coarse_scale) // 2) * 2 + 1)
    lc = _Level(views, ref, sources, config.coarse_scale, box, coarse_window)
    h, w = lc.ref.shape
    hc, wc = round(H * lc.scale_y), round(W * lc.scale_x)

    def down(x: Tensor, mode: str) -> Tensor:
        if (hc, wc) == (H, W):
            return x[lc.y0:lc.y1, lc.x0:lc.x1]
        if mode == "min":
            r = -F.adaptive_max_pool2d(-x[None, None], (hc, wc))[0, 0]
        else:
            r = F.adaptive_max_pool2d(x[None, None], (hc, wc))[0, 0]
        return r[lc.y0:lc.y1, lc.x0:lc.x1]

    BIG = 1e6
    near_c = down(torch.where(valid, near, torch.full_like(near, BIG)), "min")
    far_c = down(torch.where(valid, far, torch.zeros_like(far)), "max")
    ok_c = far_c > near_c
    near_c = torch.where(ok_c, near_c, torch.ones_like(near_c))
    far_c = torch.where(ok_c, far_c, torch.ones_like(far_c) * 1.001)
    d_c, _ = _sweep(lc, near_c, far_c, config.depth_samples)
    step_c = (far_c - near_c) / max(config.depth_samples - 1, 1)

    # to full resolution (crop), then refinement rounds
    lf = _Level(views, ref, sources, 1.0, box, config.window)
    hf, wf = lf.ref.shape
    # coarse pixel centres: full pixel (x) sits at coarse (x + 0.5) * s - 0.5
    gy = ((torch.arange(lf.y0, lf.y0 + hf, dtype=torch.float32) + 0.5) * lc.scale_y - 0.5 - lc.y0)
    gx = ((torch.arange(lf.x0, lf.x0 + wf, dtype=torch.float32) + 0.5) * lc.scale_x - 0.5 - lc.x0)
    gyy, gxx = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([2 * gxx / max(w - 1, 1) - 1, 2 * gyy / max(h - 1, 1) - 1], -1)[None]
    d = F.grid_sample(d_c[None, None], grid, mode="nearest", padding_mode="border", align_corners=True)[0, 0]
    spacing = F.grid_sample(step_c[None, None], grid, mode="nearest", padding_mode="border", align_corners=True)[0, 0]
    score = torch.full_like(d, -1.0)
    for _ in range(config.refine_rounds):
        spacing = spacing / max(config.refine_steps, 1) * 1.5
        d, score = _refine(lf, d, spacing, config.refine_steps)
    full_depth = torch.zeros(H, W)
    full_conf = torch.zeros(H, W)
    valid_crop = valid[lf.y0:lf.y0 + hf, lf.x0:lf.x0 + wf]
    textured = lf.sigma_r > config.min_texture
    keep = valid_crop & textured & (score >= config.min_score) & (d > 0)
    full_depth[lf.y0:lf.y0 + hf, lf.x0:lf.x0 + wf] = torch.where(keep, d, torch.zeros_like(d))
    full_conf[lf.y0:lf.y0 + hf, lf.x0:lf.x0 + wf] = torch.where(keep, score.clamp(0, 1), torch.zeros_like(d))
    normals = depth_normals(full_depth, v.K)
    return DepthMap(v.id, full_depth, normals, full_conf, [views[s].id for s in sources], time.perf_counter() - tic)
