"""Write an H.264 + AAC mp4 with PyAV: frames at a fixed rate from time 0, audio from time 0.

Sync: video frame k has pts k in time base 1/fps; audio frames carry pts in samples (time base
1/rate) starting at 0. The AAC encoder's priming samples are written as an edit list by FFmpeg,
so a player starts both streams together. Written to a temporary name and renamed into place.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["write_mp4", "read_mp4_info"]


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int, audio: np.ndarray | None = None,
              sample_rate: int = 0, crf: int = 18) -> Path:
    """frames: RGB uint8 [H, W, 3] (even H and W); audio: mono float samples in [-1, 1]."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial.mp4")
    stream = None
    try:
        with av.open(str(tmp), "w") as container:
            sound = None
            if audio is not None:
                sound = container.add_stream("aac", rate=int(sample_rate), layout="mono")
                sound.bit_rate = 96000
            for k, image in enumerate(frames):
                if stream is None:
                    stream = container.add_stream("libx264", rate=int(fps))
                    stream.width, stream.height = image.shape[1], image.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                    stream.time_base = Fraction(1, int(fps))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, int(fps))
                for packet in stream.encode(frame):
                    container.mux(packet)
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
            if sound is not None:
                samples = np.asarray(audio, np.float32).reshape(-1)
                block = 1024
                for k in range(0, samples.size, block):
                    part = samples[k:k + block]
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part[None]), format="flt", layout="mono")
                    frame.sample_rate, frame.pts, frame.time_base = int(sample_rate), k, Fraction(1, int(sample_rate))
                    for packet in sound.encode(frame):
                        container.mux(packet)
                for packet in sound.encode():
                    container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_mp4_info(path: str | os.PathLike) -> dict:
    """Decoded timing of an mp4: video frame times [n] (s), audio samples (mono float) and the
    time (s) of the first audio sample, the video/audio codecs, and both durations."""
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0]
        times, frames = [], []
        for frame in container.decode(v):
            times.append(float(frame.pts * frame.time_base))
            frames.append(frame.to_ndarray(format="rgb24"))
        codecs = {"video": v.codec_context.name, "audio": None}
    audio, audio_start, rate = None, None, None
    with av.open(str(path)) as container:
        if container.streams.audio:
            a = container.streams.audio[0]
            codecs["audio"] = a.codec_context.name
            rate = int(a.rate)
            chunks = []
            for frame in container.decode(a):
                if audio_start is None:
                    audio_start = float(frame.pts * frame.time_base)
                chunks.append(frame.to_ndarray().reshape(frame.to_ndarray().shape[0], -1).mean(axis=0))
            audio = np.concatenate(chunks) if chunks else np.zeros(0)
    order = np.argsort(times)
    fps = 1.0 / np.median(np.diff(np.sort(times))) if len(times) > 1 else 0.0
    return {"video_times": np.asarray(times)[order], "frames": [frames[i] for i in order], "codecs": codecs,
            "audio": audio, "audio_start": audio_start, "sample_rate": rate,
            "video_duration": (max(times) + 1.0 / fps) if len(times) > 1 else 0.0,
            "audio_duration": (audio.size / rate) if audio is not None and rate else 0.0}
