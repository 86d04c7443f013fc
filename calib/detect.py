"""Board detection in one image: ChArUco (any dictionary, partial and occluded boards) and plain
chessboards, with sub-pixel corners and per-detection quality measures.

ChArUco uses OpenCV 5's `CharucoDetector.detectBoard` (markers, then the chessboard corners
between them, refined with a per-corner `cornerSubPix` window that never reaches the next
marker) and `board.matchImagePoints`; chessboards use `findChessboardCornersSB` (sub-pixel by
construction), whose 180-degree ambiguity is resolved from the square colours when the board
allows it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcap.calib.boards import BoardSpec
from headcap.core.limits import check_image_file

#: quality thresholds behind the flags (pixels unless stated)
MIN_CORNERS = 6
MIN_MARKERS_FOR_SIZE_CHECK = 4  # fewer outlines inside the corners decide nothing
MAX_MARKER_SCALE_ERROR = 0.12  # median marker outline scale vs the spec's (a 0.026 vs 0.035 slip is 0.35)
MIN_COVERAGE = 0.01          # convex hull of the corners / image area
MAX_EDGE_BLUR_PX = 2.5       # estimated Gaussian sigma of the board's edges
MAX_HOMOGRAPHY_FRACTION = 0.08  # homography RMS / square size in pixels


@dataclass
class Detection:
    """Board corners found in one image.

    ids: [N] inner-corner ids of the board; corners: [N, 2] pixels (integer pixel centres);
    object_points: [N, 3] board-frame metres; image_size: (width, height).
    flags: names of failed quality checks ('too_few_corners', 'collinear', 'low_coverage',
    'blurry', 'inconsistent_geometry', 'marker_size_mismatch', 'foreign_markers',
    'orientation_ambiguous', 'no_board');
    `usable` is False when the corners cannot constrain a camera.
    """

    camera: str
    frame: str
    path: str
    image_size: tuple[int, int]
    ids: np.ndarray
    corners: np.ndarray
    object_points: np.ndarray
    n_markers: int = 0
    coverage: float = 0.0
    edge_blur_px: float = float("nan")
    homography_rms_px: float = float("nan")
    marker_rms_px: float = float("nan")
    flags: list[str] = field(default_factory=list)

    @property
    def n_corners(self) -> int:
        return int(self.ids.shape[0])

    @property
    def usable(self) -> bool:
        return not ({"too_few_corners", "collinear", "no_board"} & set(self.flags))

    def summary(self) -> dict:
        return {"camera": self.camera, "frame": self.frame, "path": self.path, "corners": self.n_corners,
                "markers": self.n_markers, "coverage": round(self.coverage, 4),
                "edge_blur_px": None if not np.isfinite(self.edge_blur_px) else round(self.edge_blur_px, 3),
                "homography_rms_px": None if not np.isfinite(self.homography_rms_px) else round(self.homography_rms_px, 4),
                "marker_rms_px": None if not np.isfinite(self.marker_rms_px) else round(self.marker_rms_px, 4),
                "flags": list(self.flags), "usable": self.usable}


class BoardDetector:
    """Detects one board spec in many images (the OpenCV detector is built once)."""

    def __init__(self, spec: BoardSpec, min_corners: int = MIN_CORNERS):
        import cv2

        if not isinstance(spec, BoardSpec):
            raise TypeError(f"BoardDetector: spec must be a BoardSpec, got {type(spec).__name__}")
        self.spec = spec
        self.min_corners = int(min_corners)
        if spec.kind == "charuco":
            self._board = spec.cv_board()
            params = cv2.aruco.DetectorParameters()
            charuco = cv2.aruco.CharucoParameters()
            charuco.tryRefineMarkers = True  # recovers markers on partly occluded boards
            self._detector = cv2.aruco.CharucoDetector(self._board, charuco, params)

    def detect(self, image: np.ndarray, camera: str = "", frame: str = "", path: str = "") -> Detection:
        """image: uint8 [H, W] or [H, W, 3] (BGR)."""
        import cv2

        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"detect: image {path or frame!r} must be uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        flags: list[str] = []
        n_markers = 0
        if self.spec.kind == "charuco":
            corners, ids, marker_corners, marker_ids = self._detector.detectBoard(gray)
            n_markers = 0 if marker_ids is None else len(marker_ids)
            if marker_ids is not None and (marker_ids.ravel() >= self.spec.n_markers).any():
                flags.append("foreign_markers")
            markers = (marker_corners, marker_ids) if n_markers else None
            if ids is None or len(ids) == 0:
                ids = np.zeros(0, np.int64)
                corners = np.zeros((0, 2))
            else:
                obj, img_pts = self._board.matchImagePoints(corners, ids)
                ids = ids.reshape(-1).astype(np.int64)
                corners = np.asarray(img_pts, np.float64).reshape(-1, 2)
                if not np.allclose(np.asarray(obj, np.float64).reshape(-1, 3), self.spec.object_points(ids), atol=1e-6):
                    raise RuntimeError(f"detect: OpenCV's board geometry disagrees with {self.spec} (legacy pattern?)")
            if len(ids) >= 4 and self._board.checkCharucoCornersCollinear(ids.reshape(-1, 1).astype(np.int32)):
                flags.append("collinear")
        else:
            markers = None
            ids, corners, ambiguous = self._chessboard(gray)
            if ambiguous:
                flags.append("orientation_ambiguous")
        if len(ids) == 0:
            flags.append("no_board")
        elif len(ids) < self.min_corners:
            flags.append("too_few_corners")
        det = Detection(camera, frame, path, (w, h), ids, corners, self.spec.object_points(ids), n_markers, flags=flags)
        if len(ids) >= 4:
            _measure_quality(det, gray, self.spec)
            if markers is not None:
                self._check_markers(det, *markers)
        return det

    def _check_markers(self, det: Detection, marker_corners, marker_ids) -> None:
        """The detected marker outlines must sit where the spec's marker size puts them: a wrong
        MARKER length (or a board with another layout) still yields corners, since OpenCV
        places them from the markers, but not at consistent marker outlines."""
        import cv2

        if {"too_few_corners", "inconsistent_geometry"} & set(det.flags):
            return  # no homography worth testing outlines against
        keep = [i for i, m in enumerate(np.asarray(marker_ids).ravel()) if m < self.spec.n_markers]
        if len(keep) < MIN_MARKERS_FOR_SIZE_CHECK:
            return
        # (matchImagePoints on a CharucoBoard only matches chessboard corners)
        board_ids = list(np.asarray(self._board.getIds()).ravel())
        board_obj = self._board.getObjPoints()
        ids = np.asarray(marker_ids).ravel()
        obj = np.concatenate([np.asarray(board_obj[board_ids.index(ids[i])], np.float64)[:, :2] for i in keep])
        img = np.concatenate([np.asarray(marker_corners[i], np.float64).reshape(4, 2) for i in keep])
        H, _ = cv2.findHomography(det.object_points[:, :2], det.corners, 0)
        if H is None:
            return
        pred = cv2.perspectiveTransform(obj[None], H)[0]
        rms = float(np.sqrt(np.mean(np.sum((pred - img) ** 2, axis=1))))
        det.marker_rms_px = rms
        # the homography is only trusted inside the corners that fit it: outlines it extrapolates
        # to (a board cut by the image edge, under lens distortion) say nothing about their size
        hull = cv2.convexHull(det.corners.astype(np.float32))
        inside = [k for k, centre in enumerate(pred.reshape(-1, 4, 2).mean(axis=1))
                  if cv2.pointPolygonTest(hull, (float(centre[0]), float(centre[1])), False) >= 0]
        if len(inside) < MIN_MARKERS_FOR_SIZE_CHECK:
            return
        pred = pred.reshape(-1, 4, 2)[inside].reshape(-1, 2)
        img = img.reshape(-1, 4, 2)[inside].reshape(-1, 2)
        # a wrong MARKER length scales every outline about its centre by true / given; lens
        # distortion and small, noisy outlines (low resolution) mostly shift them instead, so the
        # test is on the median outline scale, not on the residual
        pc = pred.reshape(-1, 4, 2) - pred.reshape(-1, 4, 2).mean(axis=1, keepdims=True)
        ic = img.reshape(-1, 4, 2) - img.reshape(-1, 4, 2).mean(axis=1, keepdims=True)
        scale = np.sum(ic * pc, axis=(1, 2)) / np.maximum(np.sum(pc * pc, axis=(1, 2)), 1e-12)
        if abs(float(np.median(scale)) - 1.0) > MAX_MARKER_SCALE_ERROR:
            det.flags.append("marker_size_mismatch")

    def _chessboard(self, gray: np.ndarray):
        import cv2

        spec = self.spec
        pattern = (spec.cols - 1, spec.rows - 1)
        sb_flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
        ok, found = cv2.findChessboardCornersSB(gray, pattern, flags=sb_flags)
        if not ok or found is None:
            return np.zeros(0, np.int64), np.zeros((0, 2)), False
        grid = found.reshape(pattern[1], pattern[0], 2).astype(np.float64)
        # a view of the printed face keeps the board's handedness (x right, y down in both)
        ex, ey = grid[0, 1] - grid[0, 0], grid[1, 0] - grid[0, 0]
        if ex[0] * ey[1] - ex[1] * ey[0] < 0:
            grid = grid[::-1]
        ambiguous = (spec.cols + spec.rows) % 2 == 0
        if not ambiguous and not self._first_square_is_black(gray, grid):
            grid = grid[::-1, ::-1]
        # the SB detector's own estimate is biased by ~0.15 px on sharp renders; a saddle-point
        # refinement whose window stays inside the neighbouring squares removes it
        spacing = min(np.linalg.norm(np.diff(grid, axis=0), axis=-1).min(), np.linalg.norm(np.diff(grid, axis=1), axis=-1).min())
        half = int(np.clip(0.35 * spacing, 2, 7))
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-5)
        refined = cv2.cornerSubPix(gray, grid.reshape(-1, 1, 2).astype(np.float32), (half, half), (-1, -1), crit)
        return np.arange(spec.n_corners), refined.reshape(-1, 2).astype(np.float64), ambiguous

    @staticmethod
    def _first_square_is_black(gray: np.ndarray, grid: np.ndarray) -> bool:
        """Square (0, 0) lies diagonally outside corner 0 and is black; its row neighbour is white."""
        c0, cx, cy = grid[0, 0], grid[0, 1], grid[1, 0]
        outside = c0 - 0.5 * (cx - c0) - 0.5 * (cy - c0)
        beside = c0 + 0.5 * (cx - c0) - 0.5 * (cy - c0)
        return _sample(gray, outside) < _sample(gray, beside)


def _sample(gray: np.ndarray, xy: np.ndarray) -> float:
    x = int(np.clip(round(xy[0]), 0, gray.shape[1] - 1))
    y = int(np.clip(round(xy[1]), 0, gray.shape[0] - 1))
    return float(gray[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].mean())


def _measure_quality(det: Detection, gray: np.ndarray, spec: BoardSpec) -> None:
    import cv2

    w, h = det.image_size
    hull = cv2.convexHull(det.corners.astype(np.float32))
    det.coverage = float(cv2.contourArea(hull)) / float(w * h)
    if det.coverage < MIN_COVERAGE:
        det.flags.append("low_coverage")
    H, _ = cv2.findHomography(det.object_points[:, :2], det.corners, 0)
    if H is not None:
        pts = cv2.perspectiveTransform(det.object_points[None, :, :2], H)[0]
        det.homography_rms_px = float(np.sqrt(np.mean(np.sum((pts - det.corners) ** 2, axis=1))))
        # size of one square in pixels at the board's centre, so the check scales with distance
        centre = det.object_points[:, :2].mean(axis=0)
        quad = cv2.perspectiveTransform(np.array([[centre, centre + [spec.square, 0], centre + [0, spec.square]]]), H)[0]
        square_px = 0.5 * (np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[0]))
        if det.homography_rms_px > max(1.0, MAX_HOMOGRAPHY_FRACTION * square_px):
            det.flags.append("inconsistent_geometry")
        det.edge_blur_px = _edge_blur(gray, det.corners)
        if det.edge_blur_px > MAX_EDGE_BLUR_PX:
            det.flags.append("blurry")


def _edge_blur(gray: np.ndarray, corners: np.ndarray) -> float:
    """Gaussian sigma (px) of the board's edges: a step of contrast C blurred by sigma has a
    peak gradient of C / (sigma sqrt(2 pi)), so sigma = C / (peak gradient sqrt(2 pi))."""
    import cv2

    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    patch = gray[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)].astype(np.float32)
    if patch.shape[0] < 5 or patch.shape[1] < 5:
        return float("nan")
    gx = cv2.Sobel(patch, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.hypot(gx, gy)
    contrast = float(np.percentile(patch, 95) - np.percentile(patch, 5))
    peak = float(np.percentile(mag, 99.5))
    if contrast < 10 or peak <= 0:
        return float("inf")
    # a sharp edge still spreads over the 3x3 Sobel footprint and the pixel itself (~0.6 px)
    sigma = contrast / (peak * np.sqrt(2 * np.pi))
    return float(np.sqrt(max(sigma ** 2 - 0.6 ** 2, 0.0)))


def read_gray(path) -> np.ndarray:
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration image not found")
    check_image_file(path)  # a header claiming a huge size is refused before decoding
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return img


def detect_images(images: dict[str, list], spec: BoardSpec, min_corners: int = MIN_CORNERS,
                  progress=None) -> dict[str, list[Detection]]:
    """Detect the board in every calibration image.

    images: {camera id: [image path, ...]}; the frame key of an image is its file stem, so
    cameras whose images share a stem saw the same board pose (a synchronised frame).
    progress: optional callable(n_done, n_total, label). Returns {camera id: [Detection, ...]}.
    """
    import cv2

    detector = BoardDetector(spec, min_corners)
    total = sum(len(v) for v in images.values())
    done = 0
    out: dict[str, list[Detection]] = {}
    for cam, paths in images.items():
        dets = []
        seen: set[str] = set()
        for p in paths:
            frame = Path(p).stem
            if frame in seen:
                raise ValueError(f"camera {cam!r}: two calibration images share the frame name {frame!r} ({p})")
            seen.add(frame)
            try:
                dets.append(detector.detect(read_gray(p), cam, frame, str(p)))
            except cv2.error as exc:
                raise ValueError(f"{p}: OpenCV failed on this calibration image of camera {cam!r}: "
                                 f"{str(exc).strip().splitlines()[-1]}") from exc
            done += 1
            if progress is not None:
                progress(done, total, f"{cam}/{frame}")
        out[cam] = dets
    return out
