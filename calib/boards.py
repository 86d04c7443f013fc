"""Calibration boards: their specification, geometry, printable image and a physically correct
renderer of a board seen by a distorted camera.

Board frame (OpenCV's, for ChArUco and chessboards alike): origin at the outer top-left corner of
the printed board, x to the right along the columns, y down along the rows, z = x cross y
(pointing into the board, away from a camera that sees its printed face). The top-left square
is black. Inner corner `id = row * (cols - 1) + col` sits at ((col + 1) * square, (row + 1) *
square, 0), exactly `cv2.aruco.CharucoBoard.getChessboardCorners()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from headcap.calib import projection
from headcap.calib.camera import Camera, invert_rigid

BOARD_KINDS = ("charuco", "chessboard")
_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_SPEC_HELP = ("expected 'charuco:COLSxROWS:SQUARE:MARKER:DICT' (e.g. charuco:5x7:0.04:0.02:DICT_6X6_250) "
              "or 'chessboard:COLSxROWS:SQUARE' (e.g. chessboard:9x7:0.025); COLSxROWS counts squares, "
              "lengths are metres (or add a unit: 40mm, 4cm)")


def _dictionary_names() -> list[str]:
    import cv2

    return sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_") and n == n.upper())


def _parse_length(text: str, field: str, spec: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(mm|cm|m)?\s*", text)
    if not m:
        raise ValueError(f"board spec {spec!r}: field '{field}' is {text!r}, not a length; {_SPEC_HELP}")
    return float(m.group(1)) * _UNITS[m.group(2) or "m"]


@dataclass(frozen=True)
class BoardSpec:
    """A planar calibration target.

    kind: 'charuco' | 'chessboard'; cols, rows: number of SQUARES along x and y; square, marker:
    side lengths in metres (marker only for ChArUco); dictionary: an OpenCV ArUco dictionary
    name such as 'DICT_5X5_100'; legacy: OpenCV's pre-4.6 ChArUco layout (matters only for an
    even number of rows).
    """

    kind: str
    cols: int
    rows: int
    square: float
    marker: float = 0.0
    dictionary: str = ""
    legacy: bool = False

    def __post_init__(self):
        where = f"board spec ({self.kind}:{self.cols}x{self.rows})"
        if self.kind not in BOARD_KINDS:
            raise ValueError(f"board spec: field 'kind' is {self.kind!r}; expected one of {list(BOARD_KINDS)}")
        for name in ("cols", "rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
                raise ValueError(f"{where}: field '{name}' must be an integer >= 2 (squares), got {v!r}")
        if not (np.isfinite(self.square) and self.square > 0):
            raise ValueError(f"{where}: field 'square' must be a positive length in metres, got {self.square!r}")
        if self.square > 5:
            raise ValueError(f"{where}: field 'square' is {self.square} m; lengths are in metres (did you mean mm?)")
        if self.kind == "charuco":
            if not (np.isfinite(self.marker) and 0 < self.marker < self.square):
                raise ValueError(f"{where}: field 'marker' must be positive and smaller than the square "
                                 f"({self.square} m), got {self.marker!r}")
            names = _dictionary_names()
            if self.dictionary not in names:
                raise ValueError(f"{where}: field 'dictionary' is {self.dictionary!r}; expected one of {names}")
            size = _dictionary_size(self.dictionary)
            if self.n_markers > size:
                raise ValueError(f"{where}: needs {self.n_markers} markers but {self.dictionary} holds only {size}")

    # --- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "BoardSpec":
        """'charuco:COLSxROWS:SQUARE:MARKER:DICT[:legacy]' or 'chessboard:COLSxROWS:SQUARE'."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"board spec {text!r}: empty; {_SPEC_HELP}")
        parts = [p.strip() for p in text.strip().split(":")]
        kind = parts[0].lower()
        if kind not in BOARD_KINDS:
            raise ValueError(f"board spec {text!r}: unknown kind {parts[0]!r}; {_SPEC_HELP}")
        expected = (5, 6) if kind == "charuco" else (3,)
        if len(parts) not in expected:
            raise ValueError(f"board spec {text!r}: {kind} takes {expected[0]} ':'-separated fields, got {len(parts)}; {_SPEC_HELP}")
        m = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", parts[1])
        if not m:
            raise ValueError(f"board spec {text!r}: field 'COLSxROWS' is {parts[1]!r}; {_SPEC_HELP}")
        cols, rows = int(m.group(1)), int(m.group(2))
        square = _parse_length(parts[2], "SQUARE", text)
        if kind == "chessboard":
            return cls("chessboard", cols, rows, square)
        marker = _parse_length(parts[3], "MARKER", text)
        dictionary = parts[4].upper()
        if not dictionary.startswith("DICT_"):
            dictionary = "DICT_" + dictionary
        legacy = False
        if len(parts) == 6:
            if parts[5].lower() != "legacy":
                raise ValueError(f"board spec {text!r}: optional 6th field must be 'legacy', got {parts[5]!r}")
            legacy = True
        return cls("charuco", cols, rows, square, marker, dictionary, legacy)

    def __str__(self) -> str:
        if self.kind == "chessboard":
            return f"chessboard:{self.cols}x{self.rows}:{self.square:g}"
        return (f"charuco:{self.cols}x{self.rows}:{self.square:g}:{self.marker:g}:{self.dictionary}"
                + (":legacy" if self.legacy else ""))

    # --- geometry ------------------------------------------------------------------------
    @property
    def n_markers(self) -> int:
        return (self.cols * self.rows) // 2 if self.kind == "charuco" else 0

    @property
    def min_texture_pps(self) -> int:
        """Texels per square that draw each marker bit with at least 4 texels."""
        if self.kind != "charuco":
            return 8
        bits = int(self.dictionary.split("_")[1].split("X")[0]) if self.dictionary[5].isdigit() else 6
        return int(np.ceil(4 * (bits + 2) * self.square / self.marker))

    @property
    def n_corners(self) -> int:
        return (self.cols - 1) * (self.rows - 1)

    @property
    def size(self) -> tuple[float, float]:
        """Printed pattern extent (width, height) in metres."""
        return self.cols * self.square, self.rows * self.square

    def object_points(self, ids=None) -> np.ndarray:
        """Board-frame positions [N, 3] (metres, z = 0) of inner corners `ids` (default all)."""
        all_ids = np.arange(self.n_corners)
        ids = all_ids if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_corners):
            raise ValueError(f"board {self}: corner ids must lie in [0, {self.n_corners}), got "
                             f"{ids[(ids < 0) | (ids >= self.n_corners)][:5].tolist()}")
        col = ids % (self.cols - 1)
        row = ids // (self.cols - 1)
        return np.stack([(col + 1) * self.square, (row + 1) * self.square, np.zeros(ids.shape)], axis=1).astype(np.float64)

    def cv_board(self):
        """cv2.aruco.CharucoBoard for ChArUco specs (raises for a chessboard)."""
        import cv2

        if self.kind != "charuco":
            raise ValueError(f"board {self}: a chessboard has no cv2.aruco board object")
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        board = cv2.aruco.CharucoBoard((self.cols, self.rows), self.square, self.marker, dictionary)
        board.setLegacyPattern(self.legacy)
        return board

    def board_image(self, pixels_per_square: int = 64) -> np.ndarray:
        """The printable pattern, uint8 [rows * pps, cols * pps], no margin (black = 0)."""
        pps = int(pixels_per_square)
        if pps < 4:
            raise ValueError(f"board_image: pixels_per_square must be >= 4, got {pixels_per_square!r}")
        h, w = self.rows * pps, self.cols * pps
        if self.kind == "charuco":
            return self.cv_board().generateImage((w, h), marginSize=0, borderBits=1)
        rr, cc = np.divmod(np.arange(h * w), w)
        black = ((rr // pps + cc // pps) % 2) == 0
        return np.where(black, 0, 255).astype(np.uint8).reshape(h, w)


def _dictionary_size(name: str) -> int:
    import cv2

    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
    return int(d.bytesList.shape[0])


# --- rendering ----------------------------------------------------------------------------
def ray_directions(camera: Camera, supersample: int = 2) -> np.ndarray:
    """Undistorted normalized coordinates [H*s, W*s, 2] (camera frame, z = 1) of the s x s
    sub-pixel samples of every pixel: sample j of a row sits at x = (j + 0.5) / s - 0.5.

    Pose-independent, so callers rendering many views of one camera compute it once. The lens
    inversion is exact (Newton to ~1e-13): a coarse grid is solved fully, bilinearly upsampled
    as the starting point, then two Newton steps polish every sample.
    """
    s = int(supersample)
    if s < 1:
        raise ValueError(f"ray_directions: supersample must be >= 1, got {supersample!r}")
    hs, ws = camera.height * s, camera.width * s
    K = torch.as_tensor(camera.K)
    sub = lambda n: (np.arange(n) + 0.5) / s - 0.5  # noqa: E731
    if camera.distortion_model == "none":
        xs, ys = np.meshgrid(sub(ws), sub(hs))
        pix = torch.as_tensor(np.stack([xs, ys], -1))
        return projection.pixels_to_normalized(pix, K).numpy()
    dist = torch.as_tensor(camera.distortion)
    stride = 8
    cx_idx = np.arange(0, ws + stride, stride)
    cy_idx = np.arange(0, hs + stride, stride)
    gx, gy = np.meshgrid((cx_idx + 0.5) / s - 0.5, (cy_idx + 0.5) / s - 0.5)
    coarse_d = projection.pixels_to_normalized(torch.as_tensor(np.stack([gx, gy], -1)), K)
    if camera.distortion_model == "opencv":
        coarse = _polish_opencv(coarse_d.numpy(), coarse_d.numpy(), camera.distortion, steps=30)
    else:
        coarse = projection.undistort_normalized(coarse_d, camera.distortion_model, dist, iterations=30).numpy()
    jx, jy = np.arange(ws), np.arange(hs)
    ix, fx = jx // stride, (jx % stride) / stride
    iy, fy = jy // stride, (jy % stride) / stride
    along_x = coarse[:, ix] * (1 - fx)[None, :, None] + coarse[:, ix + 1] * fx[None, :, None]
    init = along_x[iy] * (1 - fy)[:, None, None] + along_x[iy + 1] * fy[:, None, None]
    xs, ys = np.meshgrid(sub(ws), sub(hs))
    target = projection.pixels_to_normalized(torch.as_tensor(np.stack([xs, ys], -1)), K)
    target = target.numpy()
    if camera.distortion_model == "opencv":
        return _polish_opencv(init, target, camera.distortion)
    return _polish_fisheye(init, target, camera.distortion)


def _polish_fisheye(xy: np.ndarray, target: np.ndarray, coeffs: np.ndarray, steps: int = 3) -> np.ndarray:
    """Newton on the equidistant model's scalar theta_d(theta) = |target|, started from `xy`."""
    k1, k2, k3, k4 = (float(c) for c in coeffs)
    rd = np.linalg.norm(target, axis=-1)
    theta = np.arctan(np.linalg.norm(xy, axis=-1))
    for _ in range(steps):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - rd
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        theta = theta - f / df
    safe = np.where(rd > 1e-12, rd, 1.0)
    scale = np.where(rd > 1e-12, np.tan(theta) / safe, 1.0)
    return target * scale[..., None]


def _polish_opencv(xy: np.ndarray, target: np.ndarray, coeffs: np.ndarray, steps: int = 2) -> np.ndarray:
    """Newton steps on distort(xy) = target for the 5-coefficient OpenCV model; [..., 2] arrays.
    Written out in numpy (same formulas as projection._distortion_jacobian) because this runs
    on about a million samples per camera."""
    k1, k2, p1, p2, k3 = (float(c) for c in coeffs)
    x, y = xy[..., 0].copy(), xy[..., 1].copy()
    for _ in range(steps):
        xx, yy, xy_ = x * x, y * y, x * y
        r2 = xx + yy
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        drad = k1 + r2 * (2 * k2 + 3 * k3 * r2)
        ex = x * radial + 2 * p1 * xy_ + p2 * (r2 + 2 * xx) - target[..., 0]
        ey = y * radial + p1 * (r2 + 2 * yy) + 2 * p2 * xy_ - target[..., 1]
        a = radial + 2 * xx * drad + 2 * p1 * y + 6 * p2 * x
        b = 2 * xy_ * drad + 2 * p1 * x + 2 * p2 * y
        d = radial + 2 * yy * drad + 6 * p1 * y + 2 * p2 * x
        det = a * d - b * b
        x -= (d * ex - b * ey) / det
        y -= (a * ey - b * ex) / det
    return np.stack([x, y], axis=-1)


def render_board_view(camera: Camera, spec: BoardSpec, world_from_board, image: np.ndarray | None = None,
                      supersample: int = 2, background: float | tuple = 128.0, *, margin: float = 0.5,
                      black: float = 20.0, white: float = 235.0, directions: np.ndarray | None = None,
                      texture_pps: int | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Render the board plane into `camera` by casting a ray through every sub-pixel sample.

    world_from_board: [4, 4]; image: optional uint8 [H, W] or [H, W, 3] to composite over (else
    a constant `background`); margin: white paper around the pattern, in squares; black/white:
    printed ink and paper grey levels; directions: `ray_directions(camera, supersample)` to
    reuse across views. Returns (uint8 image [H, W] (or [H, W, 3] like `image`), visible
    corners {corner id: pixel [2]}): the inner corners in front of the camera, on the printed
    face, and inside the image (projected with the camera's distortion).

    The texture is sampled bilinearly at roughly the sample footprint (so minified markers do
    not alias) and the s x s samples of each pixel are box-averaged (area antialiasing).
    """
    import cv2

    if not isinstance(spec, BoardSpec):
        raise TypeError(f"render_board_view: spec must be a BoardSpec, got {type(spec).__name__}")
    world_from_board = np.asarray(world_from_board, dtype=np.float64)
    if world_from_board.shape != (4, 4):
        raise ValueError(f"render_board_view: world_from_board must be [4, 4], got {world_from_board.shape}")
    s = int(supersample)
    H, W = camera.height, camera.width
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != (H, W) or image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"render_board_view: image must be uint8 [{H}, {W}] or [{H}, {W}, C] for camera "
                             f"{camera.id!r}, got {image.dtype} {image.shape}")
    if directions is None:
        directions = ray_directions(camera, s)
    elif directions.shape != (H * s, W * s, 2):
        raise ValueError(f"render_board_view: directions must be [{H * s}, {W * s}, 2], got {directions.shape}")

    board_from_cam = invert_rigid(world_from_board) @ invert_rigid(camera.cam_from_world)
    rot, origin = board_from_cam[:3, :3], board_from_cam[:3, 3]
    d = directions[..., 0, None] * rot[:, 0] + directions[..., 1, None] * rot[:, 1] + rot[:, 2]  # [Hs, Ws, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / d[..., 2]
    hit = np.isfinite(t) & (t > 0)
    t = np.where(hit, t, 0.0)
    bx = origin[0] + t * d[..., 0]
    by = origin[1] + t * d[..., 1]
    bw, bh = spec.size
    pad = margin * spec.square
    on_paper = hit & (bx >= -pad) & (bx <= bw + pad) & (by >= -pad) & (by <= bh + pad)
    front = origin[2] < 0  # the camera is on the printed side (board z points away from it)

    if front:
        if texture_pps is None:
            texture_pps = max(_texture_resolution(bx, by, on_paper, spec.square), spec.min_texture_pps)
        tex = spec.board_image(texture_pps).astype(np.float32)
        tex = black + (white - black) * (tex / 255.0)
        scale = texture_pps / spec.square
        map_x = (bx * scale - 0.5).astype(np.float32)
        map_y = (by * scale - 0.5).astype(np.float32)
        # outside the pattern but on the paper: the white border
        value = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=float(white))
    else:
        value = np.full(bx.shape, white, np.float32)
    cover = on_paper.astype(np.float32)

    def box(a):
        return a.reshape(H, s, W, s, *a.shape[2:]).mean(axis=(1, 3))

    alpha = box(cover)
    colour = box(value * cover)
    if image is None:
        base = np.broadcast_to(np.asarray(background, np.float32), (H, W) if np.ndim(background) == 0 else (H, W, len(background)))
    else:
        base = image.astype(np.float32)
    if base.ndim == 3:
        out = base * (1 - alpha[..., None]) + colour[..., None]
    else:
        out = base * (1 - alpha) + colour
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    visible: dict[int, np.ndarray] = {}
    if front:
        obj = spec.object_points()
        world = obj @ world_from_board[:3, :3].T + world_from_board[:3, 3]
        pix, depth = camera.project(world)
        pix, depth = pix.numpy(), depth.numpy()
        cam_pts = world @ camera.cam_from_world[:3, :3].T + camera.cam_from_world[:3, 3]
        xy = cam_pts[:, :2] / np.maximum(cam_pts[:, 2:], 1e-12)
        # a real lens folds back far outside its calibrated field; only trust the distortion
        # model where the rendered rays themselves reach
        lim = np.abs(directions).reshape(-1, 2).max(axis=0) * 1.02
        ok = ((depth > 0) & (pix[:, 0] >= 0) & (pix[:, 0] <= W - 1) & (pix[:, 1] >= 0) & (pix[:, 1] <= H - 1)
              & (np.abs(xy[:, 0]) <= lim[0]) & (np.abs(xy[:, 1]) <= lim[1]))
        visible = {int(i): pix[i].copy() for i in np.nonzero(ok)[0]}
    return out, visible


def _texture_resolution(bx: np.ndarray, by: np.ndarray, mask: np.ndarray, square: float) -> int:
    """Texels per square so one texel is about one sample footprint (median over the board)."""
    if mask.sum() < 4:
        return 32
    dx = np.hypot(np.diff(bx, axis=1), np.diff(by, axis=1))
    m = mask[:, 1:] & mask[:, :-1]
    if not m.any():
        return 32
    step = float(np.median(dx[m]))
    return int(np.clip(round(square / max(step, 1e-12)), 24, 320))
