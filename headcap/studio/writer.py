"""Deterministic writers for the synthetic session: PNGs (cv2's encoder: no timestamps),
npz archives with fixed zip metadata, and the contact sheet.

`np.savez` stamps each member with the current time, so two runs with the same seed would
differ in their bytes; `write_npz` writes the same .npy members with a fixed date instead and
reads back with `np.load(..., allow_pickle=False)`.
"""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["write_png", "write_npz", "contact_sheet", "add_noise", "FIXED_ZIP_DATE"]

FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_png(path: Path, image: np.ndarray) -> None:
    """uint8 [H, W] or RGB [H, W, 3] -> PNG (written as is: the caller builds the session in a
    scratch folder that is renamed into place as a whole)."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"write_png: {path}: expected uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    data = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError(f"write_png: cv2 could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def write_npz(path: Path, compress: bool = False, **arrays) -> None:
    """Plain arrays (no object dtype: nothing to unpickle) -> .npz with fixed member dates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype == object:
                raise ValueError(f"write_npz: {path}: field {name!r} has dtype object (would need pickle)")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_ZIP_DATE)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, buf.getvalue())


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Seeded Gaussian sensor noise: float image [H, W, 3] in [0, 1] + N(0, sigma^2), clipped."""
    if sigma <= 0:
        return image
    return np.clip(image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32), 0.0, 1.0)


def contact_sheet(images: list[np.ndarray], labels: list[str], tile: int = 160, columns: int | None = None,
                  points: list[np.ndarray] | None = None) -> np.ndarray:
    """Tile uint8 RGB images [H, W, 3] into one RGB sheet, each scaled to `tile` px wide and
    labelled; `points` (optional, one [N, 2] pixel array per image) are drawn as small dots."""
    import cv2

    if not images:
        raise ValueError("contact_sheet: no images")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    h0, w0 = images[0].shape[:2]
    scale = tile / w0
    th = max(1, round(h0 * scale))
    sheet = np.zeros((rows * th, columns * tile, 3), np.uint8)
    for i, image in enumerate(images):
        small = cv2.resize(image, (tile, th), interpolation=cv2.INTER_AREA)
        if points is not None and len(points[i]):
            for x, y in np.asarray(points[i]) * scale:
                cv2.circle(small, (int(round(x)), int(round(y))), 1, (60, 255, 60), -1, cv2.LINE_8)
        cv2.putText(small, labels[i], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_8)
        r, c = divmod(i, columns)
        sheet[r * th:(r + 1) * th, c * tile:(c + 1) * tile] = small
    return sheet
