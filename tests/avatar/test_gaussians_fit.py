"""Image fitting through the whole differentiable path on a real photo."""
from __future__ import annotations

import imageio.v3 as iio
import torch

from headcap.avatar.gaussians.fit_image import fit_image, psnr

FACE_CROP = (slice(40, 168), slice(150, 278))  # 128 x 128 around the face


def test_fit_5000_gaussians_to_face_crop_reaches_30_db(test_data):
    image = iio.imread(test_data / "face_images" / "astronaut_eileen_collins.png")[FACE_CROP]
    target = torch.from_numpy(image[..., :3].copy()).float() / 255.0
    assert target.shape == (128, 128, 3)
    result = fit_image(target, n_gaussians=5000, steps=80, seed=0)
    assert result.backend == "cpu"
    assert result.psnr >= 30.0, result.psnr_history
    # the optimisation, not the initialisation, gets it there
    assert result.psnr_history[0] < 25.0
    assert abs(psnr(result.render, target) - result.psnr) < 1e-9
