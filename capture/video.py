"""Video and image-sequence decoding for ingest (PyAV), with errors that name the file.

Every decoded frame carries its presentation time in seconds (container pts x time base), which
is what sync uses to find dropped frames and to align cameras.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from headcap.core.limits import check_image_bytes, check_image_size

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class VideoInfo:
    """What a container says about its first video stream (before decoding)."""

    path: Path
    width: int
    height: int
    fps: float
    declared_frames: int  # 0 when the container does not say
    rotation: int  # degrees counterclockwise frames are turned for display (phone videos); already applied
    has_audio: bool
    metadata: dict


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot open as a video (corrupt or not a video file): {exc}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: no video stream found (the file is truncated, e.g. its index was never written, "
                         "or it is not a video)")
    return container


def _rotation(frame, stream_tag: str | None) -> int:
    """Counterclockwise degrees (0, 90, 180, 270) to turn a decoded frame for display: the display
    matrix side data (what phones write), else the legacy `rotate` stream tag (clockwise degrees)."""
    try:
        angle = frame.rotation
    except (AttributeError, ValueError):
        angle = 0
    if not angle and stream_tag:
        try:
            angle = -int(float(stream_tag))
        except ValueError:
            angle = 0
    return int(round(angle / 90.0)) * 90 % 360


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, rotation // 90))


def probe_video(path) -> VideoInfo:
    """Container facts plus the rotation read from the first frame; width/height are the
    displayed (rotated) size, i.e. the size of what iter_video yields."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.guessed_rate or stream.base_rate or stream.average_rate
        if not rate or float(rate) <= 0:
            raise ValueError(f"{path}: the video stream has no frame rate")
        metadata = {**{str(k): str(v) for k, v in container.metadata.items()},
                    **{str(k): str(v) for k, v in stream.metadata.items()}}
        rotation = 0
        claimed = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if all(claimed):  # before decoding a frame of it
            check_image_size(*claimed, path, what="the video stream claims")
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError:
            first = None  # iter_video reports the corrupt stream with its frame count
        if first is not None:
            rotation = _rotation(first, metadata.get("rotate"))
        w, h = int(stream.codec_context.width), int(stream.codec_context.height)
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(path, w, h, float(rate), int(stream.frames or 0), rotation, bool(container.streams.audio),
                         metadata)
    finally:
        container.close()


def luma_small(frame, rotation: int, side: int) -> np.ndarray:
    """Luma of a decoded av.VideoFrame, area-downscaled to `side` px on the long side, upright,
    as float32 [h, w]. Reads the Y plane directly (no RGB conversion) for YUV formats."""
    import cv2

    name = frame.format.name
    if name.startswith(("yuv", "yuvj", "nv12", "nv21")) and frame.planes:
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    else:
        y = frame.to_ndarray(format="gray")
    h, w = y.shape
    s = side / max(h, w)
    if s < 1:
        y = cv2.resize(y, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return _upright(y, rotation).astype(np.float32)


def iter_video(path, threads: bool = True, raw: bool = False) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time seconds, RGB uint8 [H, W, 3]) for every frame in decode order, turned upright
    when the stream carries a rotation (display matrix or `rotate` tag). With raw=True yield
    (time, av.VideoFrame, rotation) instead, for callers that need only part of the frame.

    Raises ValueError naming the file when the stream is corrupt or ends before the number of
    frames its container declares (a truncated file).
    """
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        declared = int(stream.frames or 0)
        time_base = stream.time_base or Fraction(1, 1)
        rate = float(stream.guessed_rate or stream.base_rate or 30)
        tag = stream.metadata.get("rotate")
        count = 0
        last = None
        rotation = None
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = float(frame.pts * time_base)
                else:
                    t = (last + 1.0 / rate) if last is not None else 0.0
                last = t
                count += 1
                if rotation is None:
                    rotation = _rotation(frame, tag)  # one orientation per stream
                if raw:
                    yield t, frame, rotation
                else:
                    yield t, _upright(frame.to_ndarray(format="rgb24"), rotation)
        except av.error.FFmpegError as exc:
            raise ValueError(f"{path}: corrupt video stream after {count} frames: {exc}") from None
        if count == 0:
            raise ValueError(f"{path}: the video stream holds no decodable frame")
        if declared and count < declared:
            raise ValueError(f"{path}: truncated video: decoded {count} of the {declared} frames the container declares")
    finally:
        container.close()


def read_audio(path) -> tuple[np.ndarray, int] | None:
    """The first audio stream as mono float32 samples and its sample rate, or None if none."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = []
        rate = int(stream.rate or stream.codec_context.sample_rate)
        start = None
        try:
            for frame in container.decode(stream):
                if start is None and frame.pts is not None:
                    start = float(frame.pts * stream.time_base)
                arr = frame.to_ndarray().astype(np.float32)
                if arr.ndim == 2 and not frame.format.is_planar:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                chunks.append(arr.reshape(len(frame.layout.channels), -1).mean(axis=0))
        except av.error.FFmpegError as exc:
            raise ValueError(f"{path}: corrupt audio stream: {exc}") from None
        if not chunks:
            return None
        samples = np.concatenate(chunks)
        # Audio that starts after the video's zero needs padding so sample 0 is time 0.
        if start and start > 0:
            samples = np.concatenate([np.zeros(int(round(start * rate)), np.float32), samples])
        return samples, rate
    finally:
        container.close()


def natural_key(name: str):
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def frame_number(name: str) -> int | None:
    """The last run of digits in a file stem (`cam0_000123.png` -> 123), None if it has none."""
    digits = re.findall(r"\d+", Path(name).stem)
    return int(digits[-1]) if digits else None


def list_images(folder: Path) -> list[Path]:
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_key(p.name))


def read_image(path, flags: int | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] (or grey [H, W] for IMREAD_GRAYSCALE); ValueError naming an unreadable file."""
    import cv2

    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise ValueError(f"{path}: image file not found")
    check_image_bytes(data[:65536].tobytes(), path)  # before decoding: a header may claim gigapixels
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags) if data.size else None
    if image is None:
        raise ValueError(f"{path}: unreadable image (corrupt or not an image)")
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])
    return image


def encode_params(suffix: str, jpeg_quality: int = 95, mask: bool = False) -> list[int]:
    import cv2

    if suffix.lower() in (".jpg", ".jpeg"):
        return [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    if mask:
        # Two-level masks: run-length coding without filtering is 4x faster and smaller than the default.
        return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    # zlib level 1 with the Up filter: libpng's adaptive per-row filter choice costs ~2.5x the
    # encode time for files only a few percent smaller (docs/capture.md).
    return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def write_image(path, image: np.ndarray, jpeg_quality: int = 95, mask: bool = False, params=None) -> None:
    """Encode by suffix and write atomically (temp file + rename). mask=True: a {0, 255} grey mask
    (fast run-length PNG). params: explicit cv2.imencode parameters instead."""
    import cv2

    path = Path(path)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    if params is None:
        params = encode_params(path.suffix, jpeg_quality, mask)
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"{path}: could not encode image")
    # No fsync per image (it would dominate ingest time); see capture/ingest.py on durability.
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
