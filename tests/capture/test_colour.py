from __future__ import annotations

import numpy as np
import pytest

from headcap.capture.colour import (apply_colour, delta_e, detect_chart, fit_affine, fit_transport, linear_to_srgb,
                            srgb_to_lab, srgb_to_linear)


def test_lab_reference_values():
    # CIE values of sRGB primaries / white (D65), as published for the sRGB space
    lab = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]], np.uint8))
    expected = np.array([[100, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
                         [0, 0, 0]])
    assert np.abs(lab - expected).max() < 0.05


def test_lab_matches_opencv():
    import cv2

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 1, 3), dtype=np.uint8)
    ours = srgb_to_lab(rgb)
    theirs = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    assert np.abs(ours - theirs).max() < 0.3  # OpenCV rounds its float Lab slightly


def _cast(seed):
    rng = np.random.default_rng(seed)
    cross = rng.uniform(-0.05, 0.05, (3, 3))
    a = np.diag(rng.uniform(0.8, 1.2, 3)) + 0.5 * (cross + cross.T) * (1 - np.eye(3))
    return np.hstack([a, rng.uniform(-0.02, 0.02, (3, 1))])


def test_fit_affine_exact():
    rng = np.random.default_rng(1)
    m = _cast(1)
    m[0, 1] += 0.04  # least squares needs no symmetry
    src = rng.uniform(0.05, 0.8, (24, 3))
    dst = src @ m[:, :3].T + m[:, 3]
    assert np.abs(fit_affine(src, dst) - m).max() < 1e-10
    with pytest.raises(ValueError, match="at least 4"):
        fit_affine(src[:3], dst[:3])


def test_fit_transport_recovers_symmetric_cast_without_correspondences():
    rng = np.random.default_rng(2)
    ref = rng.multivariate_normal([0.4, 0.3, 0.2], [[0.02, 0.01, 0.0], [0.01, 0.015, 0.004], [0.0, 0.004, 0.01]],
                                  size=40000)
    cast = _cast(3)
    seen = ref @ cast[:, :3].T + cast[:, 3]
    rng.shuffle(seen)  # no pixel correspondence
    m = fit_transport(seen, ref)
    inverse = np.linalg.inv(np.vstack([cast, [0, 0, 0, 1]]))[:3]
    assert np.abs(m - inverse).max() < 0.02


def test_apply_colour_cuts_delta_e():
    rng = np.random.default_rng(4)
    clean = rng.integers(20, 230, (32, 32, 3), dtype=np.uint8)
    cast = _cast(5)
    lin = srgb_to_linear(clean / 255) @ cast[:, :3].T + cast[:, 3]
    seen = np.round(linear_to_srgb(lin) * 255).astype(np.uint8)
    inverse = np.linalg.inv(np.vstack([cast, [0, 0, 0, 1]]))[:3]
    fixed = apply_colour(seen, inverse)
    assert delta_e(seen, clean) > 3
    assert delta_e(fixed, clean) < 0.6
    assert np.array_equal(apply_colour(clean, np.hstack([np.eye(3), np.zeros((3, 1))])), clean)


def _chart_image(colours_bgr, rotate=False):
    import cv2

    img = np.full((480, 640, 3), 180, np.uint8)
    x0, y0, p, g = 140, 120, 50, 10
    cv2.rectangle(img, (x0 - 15, y0 - 15), (x0 + 6 * (p + g) + 5, y0 + 4 * (p + g) + 5), (20, 20, 20), -1)
    for i in range(24):
        r, c = divmod(i, 6)
        img[y0 + r * (p + g):y0 + r * (p + g) + p, x0 + c * (p + g):x0 + c * (p + g) + p] = colours_bgr[i]
    return img[::-1, ::-1].copy() if rotate else img


def test_chart_detection_and_fit():
    import cv2

    detector = cv2.mcc.CCheckerDetector.create()
    detector.setColorChartType(cv2.mcc.MCC24)
    ref_bgr = np.asarray(detector.getRefColors(), np.float64).reshape(24, 3)
    reference_rgb = _chart_image(ref_bgr)[..., ::-1]
    cast = _cast(6)
    lin = srgb_to_linear(reference_rgb / 255) @ cast[:, :3].T + cast[:, 3]
    seen_rgb = np.round(linear_to_srgb(lin) * 255).astype(np.uint8)
    a = detect_chart(np.ascontiguousarray(reference_rgb))
    b = detect_chart(np.ascontiguousarray(seen_rgb[::-1, ::-1]))  # the chart upside down in this view
    assert a is not None and b is not None
    m = fit_affine(b, a)
    inverse = np.linalg.inv(np.vstack([cast, [0, 0, 0, 1]]))[:3]
    assert np.abs(m - inverse).max() < 0.03
    assert detect_chart(np.full((200, 200, 3), 128, np.uint8)) is None
