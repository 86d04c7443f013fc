"""Frame synchronisation: per-camera frame slots from timestamps, dropped/duplicated frames, and
integer frame offsets between cameras from container timestamps, a flash, or a clap.

Model: camera c's decoded frame j has time t_c[j]; its *slot* is round((t_c[j] - t_c[0]) * fps),
so a dropped frame leaves a gap in the slots. A shared clock index is g = slot + offset_c, with
offset_ref = 0. From timestamps, offset_c = round((t_c[0] - t_ref[0]) * fps); from an event seen
(flash) or heard (clap) by every camera, the offset is the lag that lines the events up.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timeline:
    """What the analysis pass measured for one camera; arrays are [n] over decoded frames."""

    camera: str
    times: np.ndarray  # seconds, decode order
    brightness: np.ndarray  # mean luma per frame, 0..255
    change: np.ndarray  # mean |frame - previous frame| (grey levels); inf for the first frame


@dataclass
class Slots:
    """Decoded frames placed on the camera's own frame grid."""

    slot_of: np.ndarray  # [n] int slot of each decoded frame (-1: a timestamp duplicate, unused)
    valid: np.ndarray  # [n] bool: a real, new frame (not a repeat of the previous image)
    dropped: list[int]  # slots with no frame
    duplicated: list[int]  # slots whose frame repeats the previous one (by timestamp or content)


def frame_slots(timeline: Timeline, fps: float, duplicate_ratio: float = 0.05, duplicate_abs: float = 0.02) -> Slots:
    """Place frames on the grid; report slots with no frame (drops) and repeated frames (duplicates).

    A frame is a content duplicate when it differs from its predecessor by less than
    max(duplicate_abs, duplicate_ratio * median change): capture software that misses a frame
    often repeats the previous image at the right time, so the slot is kept but marked invalid.
    """
    t = np.asarray(timeline.times, dtype=np.float64)
    if t.size == 0:
        raise ValueError(f"camera {timeline.camera!r}: no frames")
    if np.any(np.diff(t) < -0.5 / fps):
        raise ValueError(f"camera {timeline.camera!r}: timestamps go backwards (frame "
                         f"{int(np.argmax(np.diff(t) < -0.5 / fps)) + 1}); the file is damaged or has B-frame pts errors")
    slots = np.rint((t - t[0]) * fps).astype(np.int64)
    slot_of = slots.copy()
    valid = np.ones(t.size, dtype=bool)
    duplicated: list[int] = []
    for j in range(1, t.size):
        if slots[j] <= slots[j - 1]:
            slot_of[j] = -1
            valid[j] = False
            duplicated.append(int(slots[j]))
    change = np.asarray(timeline.change, dtype=np.float64)
    finite = change[np.isfinite(change)]
    if finite.size >= 3:
        limit = max(duplicate_abs, duplicate_ratio * float(np.median(finite)))
        for j in range(1, t.size):
            if slot_of[j] >= 0 and change[j] <= limit:
                valid[j] = False
                duplicated.append(int(slot_of[j]))
    used = set(int(s) for s in slot_of[slot_of >= 0])
    dropped = [s for s in range(int(slots.max()) + 1) if s not in used]
    return Slots(slot_of, valid, dropped, sorted(set(duplicated)))


def slot_signal(values: np.ndarray, slots: Slots) -> np.ndarray:
    """values [n] over decoded frames -> [max slot + 1] over slots, NaN where no valid frame."""
    out = np.full(int(slots.slot_of.max()) + 1, np.nan)
    keep = slots.valid & (slots.slot_of >= 0)
    out[slots.slot_of[keep]] = np.asarray(values, dtype=np.float64)[keep]
    return out


def _masked_ncc(a: np.ndarray, b: np.ndarray, lag: int, min_overlap: int) -> float:
    """Normalised correlation of a[k] with b[k + lag] over samples finite in both."""
    if lag >= 0:
        x, y = a[: max(0, min(a.size, b.size - lag))], b[lag: lag + a.size]
    else:
        x, y = a[-lag: -lag + b.size], b[: max(0, a.size + lag)]
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < min_overlap:
        return -np.inf
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else -np.inf


def detrend(signal: np.ndarray, window: int = 15) -> np.ndarray:
    """signal minus its running median (NaN-aware): keeps short events such as a flash, removes
    slow drift from exposure changes and subject motion. NaN stays NaN."""
    x = np.asarray(signal, dtype=np.float64)
    half = window // 2
    pad = np.pad(x, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (long gaps) give NaN
        base = np.nanmedian(windows, axis=1)
    return x - base


def event_strength(signal: np.ndarray) -> float:
    """Largest detrended excursion over its robust spread (a few without an event)."""
    d = detrend(signal)
    d = d[np.isfinite(d)]
    if d.size < 3:
        return 0.0
    mad = np.median(np.abs(d - np.median(d))) * 1.4826
    return float(np.abs(d).max() / max(mad, 0.05))


def brightness_offsets(signals: dict[str, np.ndarray], reference: str, max_lag: int,
                       min_strength: float = 8.0) -> tuple[dict[str, int] | None, dict]:
    """Integer offsets from a brightness event (flash) by cross-correlating detrended brightness.

    signals: camera -> [slots] mean brightness (NaN where no frame). Detrending removes drift and
    the normalised correlation ignores per-camera gain; NaN samples are left out of the sums, so
    a frame dropped next to the flash costs one sample, not the edge. Returns (None, details)
    when some camera sees no clear event.
    """
    details = {"strength": {c: round(event_strength(s), 2) for c, s in signals.items()}, "score": {}}
    if any(v < min_strength for v in details["strength"].values()):
        return None, details
    ref = detrend(signals[reference])
    offsets = {}
    for cam, sig in signals.items():
        d = detrend(sig)
        lags = range(-max_lag, max_lag + 1)
        scores = [_masked_ncc(d, ref, lag, min_overlap=3) for lag in lags]
        best = int(np.argmax(scores))
        offsets[cam] = int(lags[best])
        details["score"][cam] = round(float(scores[best]), 4)
    if min(details["score"].values()) < 0.5:
        return None, details
    return offsets, details


def audio_lag_seconds(audio: np.ndarray, rate: int, reference: np.ndarray, reference_rate: int,
                      max_lag_s: float, envelope_rate: int = 1000) -> tuple[float, float]:
    """Lag (seconds) such that audio(t) ~ reference(t - lag), from onset-envelope cross-correlation.

    Envelopes (block-max of |first difference|) make the match depend on transients such as a
    clap rather than on each microphone's frequency response. Returns (lag, peak score in [0, 1]).
    """
    def envelope(x, r):
        x = np.abs(np.diff(np.asarray(x, np.float64), prepend=0.0))
        block = max(1, int(round(r / envelope_rate)))
        n = x.size // block
        env = x[: n * block].reshape(n, block).max(axis=1)
        return env - env.mean()

    a, b = envelope(audio, rate), envelope(reference, reference_rate)
    size = 1 << int(np.ceil(np.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    max_lag = int(max_lag_s * envelope_rate)
    # Lags beyond the signals' lengths would wrap around the circular correlation and alias
    # (a clip shorter than --max-offset would find -0.1 s at size - 100): clip them.
    forward, backward = min(max_lag, a.size - 1), min(max_lag, b.size - 1)
    lags = np.concatenate([np.arange(0, forward + 1), np.arange(-backward, 0)])
    values = corr[lags % size]
    best = int(np.argmax(values))
    score = float(values[best] / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return float(lags[best]) / envelope_rate, score


@dataclass
class SyncPlan:
    """Which decoded frame of each camera goes into each output frame."""

    offsets: dict[str, int]
    globals_: list[int]  # shared clock index of each output frame
    source: dict[str, list[int]]  # camera -> decoded-frame ordinal for each output frame
    filled: dict[str, list[int]] = field(default_factory=dict)  # camera -> output frames filled from a neighbour
    incomplete: list[int] = field(default_factory=list)  # shared indices skipped (some camera had no frame)


def plan_frames(slots: dict[str, Slots], offsets: dict[str, int], on_missing: str = "skip",
                start: int = 0, end: int | None = None, stride: int = 1) -> SyncPlan:
    """Output frames over the span every camera covers.

    on_missing: "skip" drops a shared index that some camera lacks; "fill" uses that camera's
    nearest earlier valid frame (later if none) and lists it in `filled`. start/end/stride select
    from the resulting frames (end exclusive).
    """
    if on_missing not in ("skip", "fill"):
        raise ValueError(f"on_missing: expected 'skip' or 'fill', got {on_missing!r}")
    if stride < 1:
        raise ValueError(f"stride: must be >= 1, got {stride}")
    by_global: dict[str, dict[int, int]] = {}
    for cam, s in slots.items():
        table = {}
        for j, (slot, ok) in enumerate(zip(s.slot_of, s.valid)):
            if ok and slot >= 0:
                table[int(slot) + offsets[cam]] = j
        if not table:
            raise ValueError(f"camera {cam!r}: no valid frame")
        by_global[cam] = table
    lo = max(min(t) for t in by_global.values())
    hi = min(max(t) for t in by_global.values())
    if hi < lo:
        raise ValueError(f"the cameras share no time span after synchronisation (offsets {offsets}); "
                         "check the sync method")
    frames, incomplete = [], []
    filled: dict[str, list[int]] = {c: [] for c in slots}
    source: dict[str, list[int]] = {c: [] for c in slots}
    for g in range(lo, hi + 1):
        missing = [c for c, t in by_global.items() if g not in t]
        if missing and on_missing == "skip":
            incomplete.append(g)
            continue
        frames.append((g, missing))
    end = len(frames) if end is None else min(end, len(frames))
    if start < 0:
        raise ValueError(f"frame range: start must be >= 0, got {start}")
    chosen = frames[start:end:stride]
    if not chosen:
        raise ValueError(f"frame range: start {start}, end {end}, stride {stride} selects none of the "
                         f"{len(frames)} synchronised frames")
    globals_ = []
    for out_index, (g, missing) in enumerate(chosen):
        globals_.append(g)
        for cam, table in by_global.items():
            if g in table:
                source[cam].append(table[g])
                continue
            keys = np.fromiter(table.keys(), dtype=np.int64)
            earlier = keys[keys < g]
            nearest = int(earlier.max()) if earlier.size else int(keys[keys > g].min())
            source[cam].append(table[nearest])
            filled[cam].append(out_index)
    return SyncPlan(dict(offsets), globals_, source, {c: v for c, v in filled.items() if v}, incomplete)
