"""Foreground masks by background-plate matting (studios film the empty rig before the subject).

distance = sqrt(luma_weight * dY^2 + dC1^2 + dC2^2) / noise, in an opponent colour space
(Y = mean of R,G,B; C1 = R - G; C2 = (R + G)/2 - B), where noise is the plate's per-pixel
temporal noise (robust: MAD over plate frames) floored at `noise_floor`. Weighting luma down
makes soft shadows cast by the subject on the backdrop, which change brightness more than hue,
less likely to be called foreground. Then: threshold, morphological open/close, small
components removed, holes filled, optional GrabCut refinement in a band around the boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MatteConfig:
    threshold: float = 4.0
    """Foreground when the noise-normalised colour distance exceeds this."""
    noise_floor: float = 2.5
    """Lower bound (grey levels) of the per-pixel noise: compression noise is never zero."""
    luma_weight: float = 0.5
    """Weight of the brightness difference relative to chroma (lower: more shadow-tolerant)."""
    open_px: int = 1
    """Radius of the opening that removes speckle."""
    close_px: int = 2
    """Radius of the closing that bridges thin gaps."""
    min_area: float = 0.002
    """Components smaller than this fraction of the image are dropped."""
    fill_holes: bool = True
    grabcut: bool = False
    """Refine the boundary with GrabCut (slower; helps where subject and plate colours are close)."""
    grabcut_band: int = 4
    grabcut_iterations: int = 2


_OPPONENT = np.array([[1 / 3, 1 / 3, 1 / 3], [1, -1, 0], [0.5, 0.5, -1]], np.float32)


def _opponent(image: np.ndarray) -> np.ndarray:
    """RGB [..., 3] -> (Y, R - G, (R + G)/2 - B) float32."""
    import cv2

    x = np.ascontiguousarray(image, dtype=np.float32)
    if x.ndim == 3:
        return cv2.transform(x, _OPPONENT)
    return x @ _OPPONENT.T


@dataclass
class BackgroundPlate:
    """Per-camera empty-rig image and its per-pixel noise.

    image: float32 [H, W, 3] (median over plate frames); noise: float32 [H, W] grey levels.
    The matting terms derived from them (the plate in the weighted opponent space and the squared
    per-pixel limit) are computed once per luma weight / threshold and reused for every frame.
    """

    image: np.ndarray
    noise: np.ndarray
    _weighted: tuple | None = None
    _limit: tuple | None = None

    def limit2(self, threshold: float) -> np.ndarray:
        """(threshold * noise)^2 [H, W] float32, cached for the last threshold."""
        if self._limit is None or self._limit[0] != threshold:
            self._limit = (threshold, np.square(threshold * self.noise, dtype=np.float32))
        return self._limit[1]

    def weighted(self, luma_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 float32 W = diag(sqrt(luma_weight), 1, 1) @ opponent, W @ plate [H, W, 3])."""
        if self._weighted is None or self._weighted[0] != luma_weight:
            w = (np.array([np.sqrt(luma_weight), 1.0, 1.0])[:, None] * _OPPONENT).astype(np.float32)
            import cv2

            self._weighted = (luma_weight, w, cv2.transform(np.ascontiguousarray(self.image, np.float32), w))
        return self._weighted[1], self._weighted[2]

    @classmethod
    def from_frames(cls, frames, noise_floor: float = 2.5) -> "BackgroundPlate":
        """frames: [K, H, W, 3] uint8 views of the empty rig (K >= 1)."""
        stack = np.asarray(frames)
        if stack.ndim == 3:
            stack = stack[None]
        if stack.ndim != 4 or stack.shape[-1] != 3 or stack.shape[0] < 1:
            raise ValueError(f"background plate: expected [K, H, W, 3] frames, got shape {stack.shape}")
        median = stack[0].astype(np.float32) if stack.shape[0] == 1 else np.median(stack.astype(np.float32), axis=0)
        if stack.shape[0] >= 3:
            opp = _opponent(stack)
            mad = np.median(np.abs(opp - _opponent(median)[None]), axis=0).max(axis=-1) * 1.4826
            noise = np.maximum(mad, noise_floor).astype(np.float32)
        else:
            noise = np.full(median.shape[:2], noise_floor, np.float32)
        return cls(median.astype(np.float32), noise)

    def resized(self, width: int, height: int) -> "BackgroundPlate":
        import cv2

        if (width, height) == (self.image.shape[1], self.image.shape[0]):
            return self
        return BackgroundPlate(cv2.resize(self.image, (width, height), interpolation=cv2.INTER_AREA),
                               cv2.resize(self.noise, (width, height), interpolation=cv2.INTER_LINEAR))


def _check_size(image: np.ndarray, plate: BackgroundPlate) -> None:
    if image.shape[:2] != plate.image.shape[:2]:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the background plate is "
                         f"{plate.image.shape[1]}x{plate.image.shape[0]}")


def _distance2(image: np.ndarray, plate: BackgroundPlate, luma_weight: float) -> np.ndarray:
    """luma_weight dY^2 + dC1^2 + dC2^2 [H, W] float32: the weighted opponent transform is folded
    into one 3x3 matrix, applied to the image and (once, cached) to the plate."""
    import cv2

    w, plate_w = plate.weighted(luma_weight)
    d = cv2.subtract(cv2.transform(np.asarray(image, np.float32), w), plate_w)
    return cv2.transform(cv2.multiply(d, d), np.ones((1, 3), np.float32))


def colour_distance(image: np.ndarray, plate: BackgroundPlate, luma_weight: float = 0.5) -> np.ndarray:
    """Noise-normalised distance [H, W] float32 between an RGB uint8 image [H, W, 3] and the plate."""
    _check_size(image, plate)
    return np.sqrt(_distance2(image, plate, luma_weight)) / plate.noise


def foreground(image: np.ndarray, plate: BackgroundPlate, threshold: float, luma_weight: float = 0.5) -> np.ndarray:
    """colour_distance > threshold as uint8 {0, 1}, without the square root and division."""
    _check_size(image, plate)
    return np.greater(_distance2(image, plate, luma_weight), plate.limit2(threshold)).view(np.uint8)


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def clean_mask(mask: np.ndarray, config: MatteConfig) -> np.ndarray:
    """Binary uint8 {0,1} [H, W] -> cleaned {0,1}: open, close, drop small blobs, fill holes."""
    import cv2

    m = mask.astype(np.uint8)
    if config.open_px > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(config.open_px))
    if config.close_px > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(config.close_px))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < config.min_area * m.size) + 1
    if small.size > 64:
        keep = stats[:, cv2.CC_STAT_AREA] >= config.min_area * m.size
        keep[0] = False
        m = keep[labels].astype(np.uint8)
    else:
        # Usually a few specks: clear each inside its bounding box instead of relabelling the image.
        for k in small:
            x, y, w, h = stats[k, :4]
            box = m[y:y + h, x:x + w]
            box[labels[y:y + h, x:x + w] == k] = 0
    if config.fill_holes and m.any():
        # Background = what a flood fill from outside the image reaches; the rest is foreground.
        pad = np.pad(m, 1)
        flood = pad.copy()
        cv2.floodFill(flood, np.zeros((pad.shape[0] + 2, pad.shape[1] + 2), np.uint8), (0, 0), 1)
        m = (pad | (1 - flood))[1:-1, 1:-1].astype(np.uint8)
    return m


def grabcut_refine(image: np.ndarray, mask: np.ndarray, band: int = 4, iterations: int = 2) -> np.ndarray:
    """GrabCut over the bounding box of the mask, trusting it outside a band around its boundary."""
    import cv2

    if not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    pad = 4 * band
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    roi = mask[y0:y1, x0:x1]
    sure_fg = cv2.erode(roi, _disk(band))
    maybe = cv2.dilate(roi, _disk(band))
    gc = np.full(roi.shape, cv2.GC_BGD, np.uint8)
    gc[maybe > 0] = cv2.GC_PR_BGD
    gc[roi > 0] = cv2.GC_PR_FGD
    gc[sure_fg > 0] = cv2.GC_FGD
    if not (gc == cv2.GC_BGD).any() or not (gc == cv2.GC_FGD).any():
        return mask
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
    cv2.grabCut(bgr, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    out = mask.copy()
    out[y0:y1, x0:x1] = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    return out


def matte(image: np.ndarray, plate: BackgroundPlate, config: MatteConfig | None = None) -> np.ndarray:
    """Foreground mask uint8 {0, 255} [H, W] of an RGB uint8 image [H, W, 3] over its plate."""
    config = config or MatteConfig()
    raw = foreground(image, plate, config.threshold, config.luma_weight)
    m = clean_mask(raw, config)
    if config.grabcut:
        m = clean_mask(grabcut_refine(image, m, config.grabcut_band, config.grabcut_iterations), config)
    return m * np.uint8(255)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
