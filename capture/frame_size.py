"""Output frame sizes: the `--resize` option and the camera of a resized image. Shared by
ingest.py (option checks) and ingest_analysis.py (the frame plan); imports neither."""
from __future__ import annotations


def parse_resize(text: str | None, width: int, height: int) -> tuple[int, int]:
    """(w, h) for a width x height source under `--resize` text: a long side ("512"), an exact
    size ("550x802") or None (unchanged). ValueError naming the option for anything else."""
    if text is None:
        return width, height
    text = str(text).lower().strip()
    try:
        if "x" in text:
            w, h = (int(v) for v in text.split("x"))
        else:
            side = int(text)
            if side <= 0:
                raise ValueError(f"--resize: the long side must be positive, got {text!r}")
            scale = side / max(width, height)
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
    except ValueError as exc:
        if str(exc).startswith("--resize"):
            raise
        raise ValueError(f"--resize: expected a long side ('512') or WxH ('550x802'), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--resize: sizes must be positive, got {text!r}")
    return w, h


def scale_camera(cam, width: int, height: int):
    """The camera for its images resized to width x height (integer pixel centres: x' = s(x + .5) - .5)."""
    sx, sy = width / cam.width, height / cam.height
    K = cam.K.copy()
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[1, 1] *= sy
    K[0, 2] = sx * (K[0, 2] + 0.5) - 0.5
    K[1, 2] = sy * (K[1, 2] + 0.5) - 0.5
    return cam.replace(width=width, height=height, K=K)
