"""Synthetic multi-camera recordings with known ground truth: the raw input of `headcap ingest`
(capture/ingest.py) for its tests and benchmarks. Part of the synthetic studio (the roof), so no
stage imports it.

Each camera films a textured background (its plate) and a textured ellipse (the subject) that
moves; a flash brightens every view for `flash_length` frames at true frame `flash_frame`.
Camera c starts recording at true frame `starts[c]`, loses the frames in `drops[c]` (their pts
are skipped, as a capture PC that misses frames writes them), sees the world through a colour
cast (3x4 in linear RGB), and is encoded with near-lossless H.264 (yuv444p).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from headcap.capture.colour import linear_to_srgb, srgb_to_linear


@dataclass
class SyntheticRecording:
    width: int = 96
    height: int = 80
    frames: int = 30  # length of the true timeline
    fps: int = 30
    starts: list[int] = field(default_factory=lambda: [0, 2, 5])
    drops: dict[int, list[int]] = field(default_factory=dict)  # camera index -> true frames lost
    casts: list[np.ndarray] | None = None  # 3x4 per camera (linear RGB); None: default casts
    flash_frame: int = 8
    flash_length: int = 2
    seed: int = 0

    @property
    def cameras(self) -> list[str]:
        return [f"cam{c:02d}" for c in range(len(self.starts))]

    def cast(self, c: int) -> np.ndarray:
        if self.casts is not None:
            return np.asarray(self.casts[c], np.float64)
        if c == 0:
            return np.hstack([np.eye(3), np.zeros((3, 1))])
        rng = np.random.default_rng(self.seed + 100 + c)
        gains = rng.uniform(0.75, 1.25, 3)
        cross = rng.uniform(-0.06, 0.06, (3, 3))
        a = np.diag(gains) + 0.5 * (cross + cross.T) * (1 - np.eye(3))
        return np.hstack([a, rng.uniform(-0.015, 0.015, (3, 1))])


def _smooth_field(rng, h, w, cells, lo, hi) -> np.ndarray:
    import cv2

    coarse = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(lo + (np.asarray(hi) - np.asarray(lo)) * up, 0, 1)


def render(rec: SyntheticRecording, camera: int, true_frame: int, flash: bool = True):
    """(clean sRGB uint8 [H, W, 3] without cast, ground-truth mask bool [H, W], plate uint8) for
    one camera at one true frame; apply `cast_image` for what the camera records."""
    rng = np.random.default_rng(rec.seed * 7919 + camera)
    h, w = rec.height, rec.width
    # Cool, dim background and warm, bright subject: distinct at every pixel, as a studio backdrop is.
    plate = _smooth_field(rng, h, w, 6, (0.05, 0.25, 0.35), (0.2, 0.45, 0.6))
    tex_rng = np.random.default_rng(rec.seed + 12345)  # the same subject texture in every view
    texture = _smooth_field(tex_rng, 64, 64, 5, (0.5, 0.3, 0.15), (0.85, 0.7, 0.5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = 2 * np.pi * true_frame / max(rec.frames, 1)
    cx = w * (0.5 + 0.12 * np.sin(phase) + 0.04 * (camera - 1))
    cy = h * (0.52 + 0.08 * np.cos(1.3 * phase))
    ax, ay = 0.26 * w, 0.32 * h
    u, v = (xx - cx) / ax, (yy - cy) / ay
    mask = u * u + v * v <= 1.0
    tu = np.clip(((u + 1) * 0.5 * 63).round().astype(int), 0, 63)
    tv = np.clip(((v + 1) * 0.5 * 63).round().astype(int), 0, 63)
    image = np.where(mask[..., None], texture[tv, tu], plate)
    if flash and rec.flash_frame <= true_frame < rec.flash_frame + rec.flash_length:
        image = np.clip(image * 1.5 + 0.25, 0, 1)
    to8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return to8(image), mask, to8(plate)


def cast_image(rec: SyntheticRecording, camera: int, image: np.ndarray) -> np.ndarray:
    m = rec.cast(camera)
    lin = srgb_to_linear(image / 255.0) @ m[:, :3].T + m[:, 3]
    return np.round(linear_to_srgb(lin) * 255).astype(np.uint8)


def encode(path: Path, frames, pts, fps: int, crf: int = 4, audio: tuple[np.ndarray, int] | None = None,
           rotation: int = 0) -> None:
    """Write RGB uint8 frames with explicit pts (in frames) to an H.264 mp4 (yuv444p, crf).

    audio: (mono float32 samples in [-1, 1], sample rate) added as an AAC track starting at 0;
    rotation: a display matrix turning the frames this many degrees counterclockwise (as phones tag).
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        first = frames[0]
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        stream.time_base = Fraction(1, fps)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            samples, rate = audio
            sound = container.add_stream("aac", rate=int(rate), layout="mono")
        for image, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = int(p), Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            block = 1024
            for k in range(0, samples.size, block):
                chunk = np.zeros((1, block), np.float32)
                part = np.asarray(samples[k:k + block], np.float32)
                chunk[0, :part.size] = part
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = int(rate), k, Fraction(1, int(rate))
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def clap_track(rec: "SyntheticRecording", camera: int, clap_s: float, rate: int = 16000) -> np.ndarray:
    """Camera `camera`'s microphone from its first frame on: quiet room noise plus a clap (a
    decaying noise burst) at true time clap_s, at a per-camera gain."""
    rng = np.random.default_rng(rec.seed * 31 + camera)
    start = rec.starts[camera] / rec.fps
    n = int(round((rec.frames - rec.starts[camera]) / rec.fps * rate))
    x = rng.normal(0, 0.005, n).astype(np.float32)
    burst = np.random.default_rng(rec.seed + 777).normal(0, 1, 800) * np.exp(-np.arange(800) / 150)
    at = int(round((clap_s - start) * rate))
    if 0 <= at < n:
        end = min(n, at + burst.size)
        x[at:end] += (0.5 + 0.1 * camera) * burst[: end - at].astype(np.float32)
    return np.clip(x, -1, 1)


def write_recording(rec: SyntheticRecording, folder: Path, shared_clock: bool = False, plates: bool = True,
                    clap_s: float | None = None) -> dict:
    """Encode every camera to `folder/<cam>.mp4` (+ `folder/background/<cam>.png`).

    clap_s: give every file an audio track with a clap at this true time (seconds).

    shared_clock=False starts each file's timestamps at 0 (cameras that disagree about time, so
    only the flash can sync them); True stamps true frame numbers. Returns the ground truth.
    """
    folder = Path(folder)
    truth = {"starts": {}, "drops": {}, "offsets": {}}
    for c, cam in enumerate(rec.cameras):
        start = rec.starts[c]
        kept = [t for t in range(start, rec.frames) if t not in set(rec.drops.get(c, []))]
        frames = [cast_image(rec, c, render(rec, c, t)[0]) for t in kept]
        pts = [t if shared_clock else t - start for t in kept]
        audio = None if clap_s is None else (clap_track(rec, c, clap_s), 16000)
        encode(folder / f"{cam}.mp4", frames, pts, rec.fps, audio=audio)
        if plates:
            import cv2

            plate = cast_image(rec, c, render(rec, c, 0)[2])
            (folder / "background").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "background" / f"{cam}.png"), plate[..., ::-1])
        truth["starts"][cam] = start
        truth["offsets"][cam] = start - rec.starts[0]
        truth["drops"][cam] = sorted(t - start for t in rec.drops.get(c, []))
    return truth
