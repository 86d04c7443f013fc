"""Read and write audio: .wav through scipy, anything else PyAV decodes (mp3, flac, m4a, ...)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

__all__ = ["read_audio", "read_wav", "write_wav", "wav_bytes"]

MAX_SECONDS = 3600.0


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Mono float64 samples in [-1, 1] and the sample rate of a PCM or float .wav."""
    from scipy.io import wavfile

    path = Path(path)
    try:
        rate, data = wavfile.read(str(path))
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .wav ({exc})") from None
    return _normalise(path, data, rate)


def _normalise(path: Path, data: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    if data.dtype.kind == "i":
        data = data.astype(np.float64) / float(np.iinfo(data.dtype).max + 1)
    elif data.dtype.kind == "u":
        data = (data.astype(np.float64) - 128.0) / 128.0
    else:
        data = data.astype(np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if rate < 4000 or rate > 384000:
        raise ValueError(f"{path}: field 'sample_rate' {rate} Hz is outside 4000..384000")
    if data.size == 0:
        raise ValueError(f"{path}: field 'samples' is empty (no audio)")
    if data.size / rate > MAX_SECONDS:
        raise ValueError(f"{path}: field 'duration' {data.size / rate:.0f} s exceeds {MAX_SECONDS:.0f} s")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: field 'samples' holds NaN or inf")
    return np.clip(data, -1.0, 1.0), int(rate)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Mono float64 samples and rate from a .wav or any file PyAV can decode."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    if path.suffix.lower() == ".wav":
        return read_wav(path)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: field 'streams' has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: not a readable audio file ({exc})") from None
    return _normalise(path, np.concatenate(chunks) if chunks else np.zeros(0), rate)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, int(sample_rate), (np.clip(audio, -1, 1) * 32767).astype(np.int16))
    return buf.getvalue()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono .wav, written atomically."""
    from headcap.core.fileio import atomic_write_bytes

    atomic_write_bytes(Path(path), wav_bytes(audio, sample_rate))
