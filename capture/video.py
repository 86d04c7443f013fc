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
    rotation: int  # degrees clockwise the player should rotate (phone videos)
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


def probe_video(path) -> VideoInfo:
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
        try:
            rotation = int(metadata.get("rotate", 0)) % 360
        except ValueError:
            pass
        return VideoInfo(path, int(stream.codec_context.width), int(stream.codec_context.height), float(rate),
                         int(stream.frames or 0), rotation, bool(container.streams.audio), metadata)
    finally:
        container.close()


def iter_video(path, threads: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time seconds, RGB uint8 [H, W, 3]) for every frame in decode order.

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
        count = 0
        last = None
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = float(frame.pts * time_base)
                else:
                    t = (last + 1.0 / rate) if last is not None else 0.0
                last = t
                count += 1
                yield t, frame.to_ndarray(format="rgb24")
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
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags) if data.size else None
    if image is None:
        raise ValueError(f"{path}: unreadable image (corrupt or not an image)")
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])
    return image


def write_image(path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Encode by suffix and write atomically (temp file + rename)."""
    import cv2

    path = Path(path)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if path.suffix.lower() in (".jpg", ".jpeg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"{path}: could not encode image")
    # No fsync per image (it would dominate ingest time): ingest syncs once per checkpoint.
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
