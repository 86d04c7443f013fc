"""Resource limits checked before anything is allocated: image sizes read from file headers,
thread counts, and counts given on the command line or in files.

Every check raises `LimitError` (a ValueError) naming the file or option, the value and the
limit, so the CLI reports it as a bad input. Limits can be raised through the environment:
`HEADCAP_MAX_IMAGE_PIXELS` (default 100 megapixels) and `HEADCAP_MAX_THREADS` (default 1024).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
DEFAULT_MAX_THREADS = 1024


class LimitError(ValueError):
    """An input asks for more memory, threads or items than headcap allows."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise LimitError(f"environment variable {name}: expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise LimitError(f"environment variable {name}: expected a positive integer, got {text!r}")
    return value


def max_image_pixels() -> int:
    return _env_int("HEADCAP_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def max_threads() -> int:
    return _env_int("HEADCAP_MAX_THREADS", DEFAULT_MAX_THREADS)


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, JPEG, BMP, GIF, WebP or TIFF file, without
    decoding it; None when the format is not recognised (the decoder then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        header = struct.unpack("<I", data[14:18])[0]
        if header == 12:
            w, h = struct.unpack("<HH", data[18:22])
        else:
            w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" or data[:4] in (b"II*\x00", b"MM\x00*"):
        return _pil_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return w, h
        pos += 2 + length
    return None


def _pil_size(data: bytes) -> tuple[int, int] | None:
    import io

    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
            return image.size
    except Exception:  # an unreadable header: the decoder reports it with the file name
        return None


def check_image_size(width: int, height: int, where, limit: int | None = None,
                     what: str = "the image header claims") -> None:
    limit = max_image_pixels() if limit is None else limit
    if width <= 0 or height <= 0:
        raise LimitError(f"{where}: {what} a size of {width}x{height} pixels")
    if width * height > limit:
        raise LimitError(f"{where}: {what} {width}x{height} = {width * height:,} pixels, over the "
                         f"limit of {limit:,} (raise HEADCAP_MAX_IMAGE_PIXELS to allow it)")


def check_image_bytes(data: bytes, where) -> tuple[int, int] | None:
    """Refuse encoded image bytes whose header claims more pixels than the limit (before decoding)."""
    size = image_header_size(bytes(data[:65536]))
    if size is not None:
        check_image_size(size[0], size[1], where)
    return size


def check_image_file(path) -> tuple[int, int] | None:
    """Refuse an image file whose header claims more pixels than the limit; reads at most 64 KiB."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(65536)
    return check_image_bytes(head, path)


def check_threads(value, option: str = "--threads", low: int = 1) -> int:
    """A thread count between `low` and HEADCAP_MAX_THREADS (libraries crash on absurd ones)."""
    limit = max_threads()
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= limit:
        raise LimitError(f"{option}: expected an integer from {low} to {limit}, got {value!r}")
    return value


def check_count(value, option: str, low: int = 0, high: int | None = None) -> int:
    """An integer count within [low, high], with an error naming the option or field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise LimitError(f"{option}: expected an integer {bound}, got {value!r}")
    return value
