from __future__ import annotations

import numpy as np
import pytest

from headcap.capture.masks import BackgroundPlate, MatteConfig, clean_mask, colour_distance, mask_iou, matte


def _scene(seed=0, h=120, w=100, noise=2.0):
    import cv2

    rng = np.random.default_rng(seed)
    plate = cv2.resize(rng.uniform(40, 140, (5, 5, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    truth = ((xx - 50) / 28.0) ** 2 + ((yy - 58) / 40.0) ** 2 <= 1
    subject = np.stack([180 + 30 * np.sin(xx / 5.0), 120 + 20 * np.cos(yy / 7.0), 90 + 0 * xx], -1)
    shadow = (((xx - 80) / 14.0) ** 2 + ((yy - 100) / 10.0) ** 2 <= 1) & ~truth
    image = np.where(truth[..., None], subject, plate)
    image[shadow] *= 0.85  # a soft shadow on the backdrop: darker, same hue
    plates = [plate + rng.normal(0, noise, plate.shape) for _ in range(5)]
    image = image + rng.normal(0, noise, image.shape)
    to8 = lambda x: np.clip(np.round(x), 0, 255).astype(np.uint8)
    return to8(image), truth, np.stack([to8(p) for p in plates])


@pytest.mark.parametrize("grabcut", [False, True])
def test_matte_iou(grabcut):
    image, truth, plates = _scene()
    plate = BackgroundPlate.from_frames(plates)
    mask = matte(image, plate, MatteConfig(grabcut=grabcut))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert mask_iou(mask, truth) >= 0.97


def test_plate_noise_estimate():
    _, _, plates = _scene(noise=6.0)
    plate = BackgroundPlate.from_frames(plates, noise_floor=0.5)
    # opponent channels: max over (Y, R-G, (R+G)/2-B) of robust sigma; for iid RGB noise sigma_C1 = sqrt(2) s
    assert 5.0 < float(np.median(plate.noise)) < 12.0
    single = BackgroundPlate.from_frames(plates[:1], noise_floor=2.5)
    assert np.all(single.noise == 2.5)


def test_clean_mask_fills_holes_and_drops_specks():
    m = np.zeros((60, 60), np.uint8)
    m[10:40, 10:40] = 1
    m[20:25, 20:25] = 0  # a hole
    m[50, 50] = 1  # a speck
    out = clean_mask(m, MatteConfig(open_px=0, close_px=0, min_area=0.01))
    truth = np.zeros_like(m)
    truth[10:40, 10:40] = 1
    assert mask_iou(out, truth) == 1.0


def test_size_mismatch_is_an_error():
    image, _, plates = _scene()
    with pytest.raises(ValueError, match="background plate"):
        colour_distance(image[:50], BackgroundPlate.from_frames(plates))
