"""The learned-registration network and its geometry.

    views (any number, any layout) --crop around the projected volume--> 2D CNN (shared weights)
      -> feature maps [C, 16, 16] per view
    a cube of R^3 points (the feature volume) in a frame placed from the rig: centred on the
      head (mask centroids triangulated, or where the optical axes meet), y along the cameras'
      mean up, z towards the cameras' mean position (the face side)
    every point projected into every view through the calibration (headcap.calib: pinhole +
      lens distortion), features sampled bilinearly, fused across views with softmax weights
      from a small network on (feature, viewing direction in the volume frame), masked by
      visibility (in front of the camera, inside the crop): weighted mean, weighted variance,
      fraction of views that see the point, plus the point's coordinates
    3D CNN (R^3 -> R/4 ^3) -> MLP -> head-model parameters: identity, expression, joint
      rotations, and the rigid pose of the head in the volume frame
    the head model (differentiable) turns them into template vertices in world metres.

The final layer starts at zero: an untrained network predicts the mean head upright at the
volume centre (the "no images" baseline the tests and benchmark compare against).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["NetConfig", "LearnedRegNet", "ViewBatch", "prepare_views", "volume_frame", "locate_head",
           "save_weights", "load_weights", "DEFAULT_WEIGHTS", "rotation_centre", "axis_angle_to_matrix"]

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default_head.safetensors"
FORMAT = "headcap-learned-registration-1"


@dataclass(frozen=True)
class NetConfig:
    crop: int = 64
    """Side (pixels) of the square crop of each view around the projected volume."""
    features: int = 16
    """Channels of the per-view feature maps (stride 4: crop/4 pixels on a side)."""
    resolution: int = 12
    """Points per side of the feature volume."""
    side: float = 0.32
    """Side of the feature volume (m)."""
    channels3d: int = 24
    hidden: int = 256
    num_identity: int = 0
    num_expression: int = 0
    num_joints: int = 0


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """[..., 3] axis-angle -> [..., 3, 3] (Rodrigues, smooth at 0)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-12)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(cross.shape)
    return eye + s * cross + (1 - c) * (cross @ cross)


def rotation_centre(model) -> np.ndarray:
    """The mean head's rotation centre in the head frame: 8 cm behind the landmarks' centroid (as
    the studio turns heads, headcap.studio.synthesize._rotation_centre), the bounding-box centre for
    models with few landmarks."""
    with torch.no_grad():
        out = model.forward()
    verts = out.vertices[0].double().numpy()
    lms = out.landmarks[0].double().numpy()
    if len(lms) < 5:
        return 0.5 * (verts.min(0) + verts.max(0))
    return lms.mean(0) - np.array([0.0, 0.0, 0.08])


# --- placing the volume -------------------------------------------------------------------------

def locate_head(cameras, masks: list[np.ndarray | None] | None = None) -> np.ndarray:
    """World point [3] nearest (least squares) to the rays through the masks' centroids; cameras
    without a usable mask (fewer than 20 pixels) contribute their optical axis. With one camera
    (or parallel rays) the point lies on the first ray at the depth where a 16 cm wide head fills
    the mask's width (1 m without a mask)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    first = None
    for i, cam in enumerate(cameras):
        mask = None if masks is None else masks[i]
        width_px = None
        if mask is not None and int(mask.sum()) >= 20:
            ys, xs = np.nonzero(mask)
            pix = np.array([[xs.mean(), ys.mean()]])
            width_px = float(xs.max() - xs.min() + 1)
        else:
            pix = np.array([[cam.K[0, 2], cam.K[1, 2]]])
        origin, direction = cam.rays(pix)
        o, d = origin[0].numpy(), direction[0].numpy()
        if first is None:
            depth = 1.0 if width_px is None else float(cam.K[0, 0]) * 0.16 / width_px
            first = o + depth * d
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
    if first is None:
        raise ValueError("learned registration: no cameras")
    if np.linalg.eigvalsh(A)[0] < 1e-3:
        return first
    return np.linalg.solve(A, b)


def volume_frame(cameras, centre: np.ndarray) -> np.ndarray:
    """world_from_volume [4, 4]: origin at `centre`, y the cameras' mean up direction, z towards
    the cameras' mean position (orthogonalised), x = y cross z (the head frame's convention)."""
    ups, dirs = [], []
    for cam in cameras:
        R = np.asarray(cam.cam_from_world[:3, :3], float)
        ups.append(-R[1])
        d = np.asarray(cam.centre, float) - centre
        dirs.append(d / max(np.linalg.norm(d), 1e-9))
    y = np.mean(ups, 0)
    y /= max(np.linalg.norm(y), 1e-9)
    z = np.mean(dirs, 0)
    z = z - (z @ y) * y
    if np.linalg.norm(z) < 1e-6:  # cameras all around: any horizontal direction
        z = np.cross(y, [1.0, 0.0, 0.0]) if abs(y[0]) < 0.9 else np.cross(y, [0.0, 0.0, 1.0])
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2], out[:3, 3] = x, y, z, centre
    return out


def volume_points(config: NetConfig) -> Tensor:
    """[R^3, 3] point coordinates in the volume frame (z slowest, x fastest), metres."""
    r = config.resolution
    g = (torch.arange(r, dtype=torch.float64) + 0.5) / r * config.side - config.side / 2
    zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
    return torch.stack([xx, yy, zz], -1).reshape(-1, 3)


@dataclass
class ViewBatch:
    """One multi-view observation, ready for the network.

    crops [C, 3, S, S] float32 (per-crop normalised); grid [C, N, 2] sampling positions of the
    volume points in crop coordinates ([-1, 1]); valid [C, N] bool; directions [C, N, 3] unit
    vectors point -> camera in the volume frame; world_from_volume [4, 4] float64."""
    crops: Tensor
    grid: Tensor
    valid: Tensor
    directions: Tensor
    world_from_volume: np.ndarray


def _crop_box(pix: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """A square (x0, y0, side) in edge coordinates (pixel centre + 0.5) around projected points."""
    lo, hi = pix.min(0) + 0.5, pix.max(0) + 0.5
    side = float(max(hi - lo) * 1.02)
    centre = 0.5 * (lo + hi)
    side = max(side, 8.0)
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def prepare_views(images: list[np.ndarray], cameras, config: NetConfig, centre: np.ndarray) -> ViewBatch:
    """images: per camera [H, W, 3] uint8 or float in [0, 1] (RGB); cameras: headcap.calib Cameras
    (any distortion model); centre: the head's world position (locate_head)."""
    if len(images) != len(cameras) or not cameras:
        raise ValueError(f"learned registration: {len(images)} images for {len(cameras)} cameras")
    world_from_volume = volume_frame(cameras, centre)
    pts_vol = volume_points(config)
    W = torch.from_numpy(world_from_volume)
    pts_world = pts_vol @ W[:3, :3].T + W[:3, 3]
    h = config.side / 2
    corners = torch.tensor([[sx, sy, sz] for sx in (-h, h) for sy in (-h, h) for sz in (-h, h)], dtype=torch.float64)
    corners_world = corners @ W[:3, :3].T + W[:3, 3]
    S = config.crop
    crops, grids, valids, dirs = [], [], [], []
    for image, cam in zip(images, cameras):
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != (cam.height, cam.width):
            raise ValueError(f"learned registration: camera {cam.id}: image of shape {img.shape}, expected "
                             f"({cam.height}, {cam.width}, 3)")
        img_t = torch.from_numpy(np.ascontiguousarray(img)).float()
        if img.dtype == np.uint8:
            img_t = img_t / 255.0
        cpix, cdepth = cam.project(corners_world)
        pix, depth = cam.project(pts_world)
        if (cdepth <= 0).any():
            # the volume straddles the camera: crop on the points in front only
            keep = depth > 0.05
            if int(keep.sum()) < 4:
                cpix = torch.tensor([[0.0, 0.0], [cam.width - 1.0, cam.height - 1.0]], dtype=torch.float64)
            else:
                cpix = pix[keep]
        x0, y0, side = _crop_box(cpix.numpy(), cam.width, cam.height)
        # crop by bilinear sampling of the full image (zeros outside), align_corners=False
        i = (torch.arange(S, dtype=torch.float64) + 0.5) / S * side
        ex, ey = x0 + i, y0 + i
        gx = ex / cam.width * 2 - 1
        gy = ey / cam.height * 2 - 1
        gyy, gxx = torch.meshgrid(gy, gx, indexing="ij")
        crop_grid = torch.stack([gxx, gyy], -1)[None].float()
        crop = F.grid_sample(img_t.permute(2, 0, 1)[None], crop_grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)[0]
        crop = (crop - crop.mean()) / crop.std().clamp(min=1e-3)
        crops.append(crop)
        u = ((pix[:, 0] + 0.5) - x0) / side * 2 - 1
        v = ((pix[:, 1] + 0.5) - y0) / side * 2 - 1
        grids.append(torch.stack([u, v], -1).float())
        valids.append((depth > 1e-3) & (u.abs() <= 1) & (v.abs() <= 1))
        cam_vol = torch.from_numpy(np.linalg.inv(world_from_volume)[:3, :3] @ (np.asarray(cam.centre) - centre))
        d = cam_vol[None] - pts_vol
        dirs.append((d / d.norm(dim=-1, keepdim=True)).float())
    return ViewBatch(torch.stack(crops), torch.stack(grids), torch.stack(valids), torch.stack(dirs), world_from_volume)


# --- the network --------------------------------------------------------------------------------

def _block2d(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


def _block3d(cin, cout, stride):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class LearnedRegNet(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        c = config.features
        self.encoder = nn.Sequential(_block2d(3, 16, 2), _block2d(16, 32, 2), _block2d(32, 32, 1),
                                     nn.Conv2d(32, c, 3, 1, 1))
        self.weigher = nn.Sequential(nn.Linear(c + 3, 16), nn.ReLU(inplace=True), nn.Linear(16, 1))
        c3 = config.channels3d
        self.volume_net = nn.Sequential(_block3d(2 * c + 4, c3, 1), _block3d(c3, 2 * c3, 2),
                                        _block3d(2 * c3, 2 * c3, 1), _block3d(2 * c3, 3 * c3, 2))
        cells = (config.resolution // 4) ** 3
        self.mlp = nn.Sequential(nn.Linear(3 * c3 * cells, config.hidden), nn.ReLU(inplace=True))
        self.num_out = 6 + config.num_identity + config.num_expression + 3 * config.num_joints
        self.out = nn.Linear(config.hidden, self.num_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("coords", (volume_points(config) / (config.side / 2)).float(), persistent=False)

    def fuse(self, views: ViewBatch) -> Tensor:
        """[2C + 4, R, R, R]: weighted mean, weighted variance, fraction of views, coordinates."""
        feats = self.encoder(views.crops)  # [V, C, h, w]
        sampled = F.grid_sample(feats, views.grid[:, None], mode="bilinear", padding_mode="zeros",
                                align_corners=False)[:, :, 0]  # [V, C, N]
        sampled = sampled.permute(0, 2, 1)  # [V, N, C]
        logits = self.weigher(torch.cat([sampled, views.directions], -1))[..., 0]  # [V, N]
        valid = views.valid
        logits = logits.masked_fill(~valid, -1e4)
        w = torch.softmax(logits, 0) * valid.float()
        w = w / w.sum(0, keepdim=True).clamp(min=1e-6)
        mean = (w[..., None] * sampled).sum(0)
        var = (w[..., None] * (sampled - mean) ** 2).sum(0)
        seen = valid.float().mean(0, keepdim=True).T  # [N, 1]
        vol = torch.cat([mean, var, seen, self.coords], -1)  # [N, 2C+4]
        r = self.config.resolution
        return vol.T.reshape(-1, r, r, r)

    def forward(self, batch: list[ViewBatch]) -> Tensor:
        """[B, num_out] raw outputs (see decode)."""
        vols = torch.stack([self.fuse(v) for v in batch])
        x = self.volume_net(vols).flatten(1)
        return self.out(self.mlp(x))

    def decode(self, raw: Tensor) -> dict[str, Tensor]:
        """Raw outputs -> rotation [B, 3] (axis-angle, volume frame), translation [B, 3] (m),
        identity [B, Ni], expression [B, Ne], joint_rotations [B, J, 3]."""
        c = self.config
        i = 6
        out = {"rotation": 0.3 * raw[:, :3], "translation": 0.03 * raw[:, 3:6]}
        out["identity"] = 0.5 * raw[:, i:i + c.num_identity]
        i += c.num_identity
        out["expression"] = 0.3 * raw[:, i:i + c.num_expression]
        i += c.num_expression
        out["joint_rotations"] = 0.1 * raw[:, i:i + 3 * c.num_joints].reshape(-1, c.num_joints, 3)
        return out


def world_from_head(params: dict[str, Tensor], world_from_volume: Tensor, centre_head: Tensor) -> Tensor:
    """[B, 4, 4]: the predicted pose; the head turns about its rotation centre `centre_head` [3]
    (head frame), which sits at the volume origin + translation."""
    R = axis_angle_to_matrix(params["rotation"].double())
    t = params["translation"].double() - (R @ centre_head.double()[:, None])[..., 0]
    B = R.shape[0]
    vol_from_head = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    vol_from_head[:, :3, :3] = R
    vol_from_head[:, :3, 3] = t
    return world_from_volume.double() @ vol_from_head


def predict_vertices(net: LearnedRegNet, head_model, batch: list[ViewBatch], centre_head: Tensor):
    """(vertices [B, V, 3] world metres, params dict incl. world_from_head [B, 4, 4])."""
    params = net.decode(net(batch))
    W = torch.stack([torch.from_numpy(v.world_from_volume) for v in batch])
    wfh = world_from_head(params, W, centre_head)
    kwargs = {"world_from_head": wfh.to(head_model.dtype)}
    if head_model.num_identity:
        kwargs["identity"] = params["identity"].to(head_model.dtype)
    if head_model.num_expression:
        kwargs["expression"] = params["expression"].to(head_model.dtype)
    if head_model.num_joints:
        kwargs["joint_rotations"] = params["joint_rotations"].to(head_model.dtype)
    verts = head_model.forward(**kwargs).vertices
    params["world_from_head"] = wfh
    return verts, params


# --- weights ------------------------------------------------------------------------------------

def save_weights(net: LearnedRegNet, path: str | Path, head: str, info: dict | None = None) -> None:
    """Plain tensors (safetensors, float16) + the config, head spec and training info as metadata."""
    from safetensors.torch import save

    from headcap.core.fileio import atomic_write_bytes

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(asdict(net.config)), "head": head, "info": json.dumps(info or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def load_weights(path: str | Path | None = None) -> tuple[LearnedRegNet, str, dict]:
    """(network in eval mode, head spec it was trained for, training info). Default: the shipped
    checkpoint for the default head. ValueError naming the file for anything unreadable."""
    from safetensors import safe_open

    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise ValueError(f"{path}: no learned-registration weights there (train them: headcap train-registration "
                         f"--out {path})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        if meta.get("format") != FORMAT:
            raise KeyError(f"field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
        config = NetConfig(**json.loads(meta["config"]))
        net = LearnedRegNet(config)
        net.load_state_dict(state)
        info = json.loads(meta.get("info", "{}"))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a learned-registration checkpoint ({exc})") from None
    return net.eval(), meta.get("head", "default"), info


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def deg(x: float) -> float:
    return math.degrees(x)
