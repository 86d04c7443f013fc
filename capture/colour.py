"""Per-camera colour correction to a reference camera: linear RGB -> M[:, :3] @ rgb + M[:, 3].

Two estimators of the 3x4 matrix M:
- `fit_affine`: weighted least squares on corresponding colour samples (colour-chart patches).
- `fit_transport`: from the subject seen by several cameras, without pixel correspondences:
  the affine map that carries the camera's distribution of masked subject colours onto the
  reference's (Monge-Kantorovich map between Gaussians: A S_cam A = S_ref with A symmetric
  positive definite, offset from the means). It is exact for any symmetric positive-definite
  cast (white-balance gains plus symmetric cross-talk) when the views see the same colours.

Colour error is CIE76 delta-E in CIELAB (D65), computed here from sRGB.
"""
from __future__ import annotations

import numpy as np

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1).
_XYZ_FROM_RGB = np.array([[0.4124564, 0.3575761, 0.1804375],
                          [0.2126729, 0.7151522, 0.0721750],
                          [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = _XYZ_FROM_RGB.sum(axis=1)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (any shape)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB [..., 3] (uint8, or float in [0, 1]) -> CIELAB [..., 3] (D65)."""
    rgb = np.asarray(rgb)
    x = rgb / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    xyz = srgb_to_linear(x) @ _XYZ_FROM_RGB.T / _WHITE_D65
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(rgb_a: np.ndarray, rgb_b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean CIE76 delta-E between two sRGB images [..., 3] (over `mask` [...] when given)."""
    d = np.linalg.norm(srgb_to_lab(rgb_a) - srgb_to_lab(rgb_b), axis=-1)
    if mask is not None:
        d = d[np.asarray(mask) > 0]
    if d.size == 0:
        raise ValueError("delta_e: empty mask")
    return float(d.mean())


IDENTITY = np.hstack([np.eye(3), np.zeros((3, 1))])


def fit_affine(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """3x4 M minimising sum w |M [s; 1] - t|^2 over samples source/target [N, 3] (linear RGB)."""
    s, t = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if s.shape != t.shape or s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f"fit_affine: source {s.shape} and target {t.shape} must both be [N, 3]")
    if s.shape[0] < 4:
        raise ValueError(f"fit_affine: need at least 4 colour samples, got {s.shape[0]}")
    x = np.hstack([s, np.ones((s.shape[0], 1))])
    w = np.ones(s.shape[0]) if weights is None else np.asarray(weights, np.float64)
    sw = np.sqrt(w)[:, None]
    sol, *_ = np.linalg.lstsq(x * sw, t * sw, rcond=None)
    return sol.T


def _sqrtm_spd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(a)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def fit_transport(source: np.ndarray, target: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """3x4 M carrying the colour distribution of `source` [N, 3] onto `target` [K, 3] (linear RGB).

    Samples need not correspond one to one (different cameras, same subject).
    """
    s, t = np.asarray(source, np.float64), np.asarray(target, np.float64)
    for name, v in (("source", s), ("target", t)):
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 16:
            raise ValueError(f"fit_transport: {name} must be [N >= 16, 3] colour samples, got {v.shape}")
    ms, mt = s.mean(0), t.mean(0)
    cs = np.cov(s.T) + ridge * np.eye(3)
    ct = np.cov(t.T) + ridge * np.eye(3)
    cs_half = _sqrtm_spd(cs)
    cs_inv_half = np.linalg.inv(cs_half)
    a = cs_inv_half @ _sqrtm_spd(cs_half @ ct @ cs_half) @ cs_inv_half
    return np.hstack([a, (mt - a @ ms)[:, None]])


_DECODE = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32).reshape(1, 256)
_ENCODE_STEPS = 16383
# A 16384-entry table for the inverse transfer keeps this fast at 1100x1604 (< 0.5 level error).
_ENCODE = np.round(linear_to_srgb(np.arange(_ENCODE_STEPS + 1) / _ENCODE_STEPS) * 255).astype(np.uint8)


def apply_colour(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 3x4 linear-RGB matrix to an sRGB uint8 image [H, W, 3]; returns uint8."""
    import cv2

    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 4):
        raise ValueError(f"colour matrix must be 3x4, got {m.shape}")
    lin = cv2.LUT(np.ascontiguousarray(image), np.repeat(_DECODE[..., None], 3, axis=-1))
    # Scaling the matrix folds the table index computation into cv2.transform.
    scaled = (m * _ENCODE_STEPS + np.array([0, 0, 0, 0.5])).astype(np.float32)
    idx = cv2.transform(lin, scaled)
    np.clip(idx, 0, _ENCODE_STEPS, out=idx)
    return _ENCODE[idx.astype(np.uint16)]


def linear_samples(image: np.ndarray, mask: np.ndarray | None, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `limit` linear-RGB pixels [N, 3] of an sRGB uint8 image inside `mask`, skipping clipped ones."""
    px = image.reshape(-1, 3)
    keep = np.ones(px.shape[0], bool) if mask is None else (np.asarray(mask).reshape(-1) > 0)
    # Saturated or black pixels carry no information about the camera's response.
    keep &= (px.max(axis=1) < 250) & (px.min(axis=1) > 5)
    idx = np.flatnonzero(keep)
    if idx.size > limit:
        idx = rng.choice(idx, size=limit, replace=False)
    return srgb_to_linear(px[idx] / 255.0)


def detect_chart(image: np.ndarray) -> np.ndarray | None:
    """Mean linear-RGB colours [24, 3] of a Macbeth ColorChecker's patches, in the detector's
    canonical patch order (cv2.mcc), or None when no chart is found."""
    import cv2

    if not hasattr(cv2, "mcc"):
        return None
    detector = cv2.mcc.CCheckerDetector.create()
    detector.setColorChartType(cv2.mcc.MCC24)
    if not detector.process(np.ascontiguousarray(image[..., ::-1]), 1):
        return None
    checker = detector.getBestColorChecker()
    if checker is None:
        return None
    stats = np.asarray(checker.getChartsRGB(), np.float64)
    if stats.shape != (72, 5):
        return None
    # Rows are (patch, channel) pairs in R, G, B order; column 1 holds the patch mean.
    return srgb_to_linear(stats[:, 1].reshape(24, 3) / 255.0)
