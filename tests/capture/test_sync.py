from __future__ import annotations

import numpy as np
import pytest

from headcap.capture.sync import (Slots, Timeline, audio_lag_seconds, brightness_offsets, event_strength, frame_slots,
                          plan_frames, slot_signal)


def _timeline(cam, frames, fps=30.0, t0=0.0, repeat=(), seed=0):
    rng = np.random.default_rng(seed)
    frames = np.asarray(frames)
    change = rng.uniform(2, 4, frames.size)
    change[0] = np.inf
    for j in repeat:
        change[j] = 0.0
    return Timeline(cam, t0 + frames / fps, rng.uniform(90, 110, frames.size), change)


def test_frame_slots_drops_and_duplicates():
    frames = [0, 1, 2, 4, 5, 5, 6, 9, 10]  # 3, 7, 8 dropped; a pts repeat of 5
    s = frame_slots(_timeline("a", frames, repeat=[2]), 30.0)
    assert s.dropped == [3, 7, 8]
    assert s.duplicated == [2, 5]
    assert s.slot_of.tolist() == [0, 1, 2, 4, 5, -1, 6, 9, 10]
    assert s.valid.tolist() == [True, True, False, True, True, False, True, True, True]


def test_backwards_timestamps_rejected():
    with pytest.raises(ValueError, match="backwards"):
        frame_slots(_timeline("a", [0, 1, 2, 1, 3]), 30.0)


@pytest.mark.parametrize("offsets", [{"a": 0, "b": 3, "c": -4}, {"a": 0, "b": 0, "c": 7}])
def test_flash_offsets_exact_with_drops_and_noise(offsets):
    rng = np.random.default_rng(1)
    true_len, flash = 80, 40
    scene = 100 + 5 * np.sin(np.arange(true_len) / 6.0)  # slow drift the subject causes
    scene[flash:flash + 3] += 60
    signals = {}
    for cam, off in offsets.items():
        # camera slot k sees true frame k + off + 10
        idx = np.arange(true_len - 20) + off + 10
        sig = scene[idx] * rng.uniform(0.8, 1.2) + rng.normal(0, 0.5, idx.size)
        sig[rng.choice(idx.size, 4, replace=False)] = np.nan  # dropped frames
        signals[cam] = sig
    found, details = brightness_offsets(signals, "a", max_lag=15)
    assert found == {c: o - offsets["a"] for c, o in offsets.items()}
    assert min(details["strength"].values()) > 8


def test_no_flash_gives_none():
    rng = np.random.default_rng(2)
    signals = {c: 100 + rng.normal(0, 1, 50) for c in "ab"}
    found, details = brightness_offsets(signals, "a", 10)
    assert found is None
    assert max(details["strength"].values()) < 8
    assert event_strength(np.r_[np.full(20, 10.0), np.full(3, 90.0), np.full(20, 10.0)]) > 100


def test_audio_lag():
    rng = np.random.default_rng(3)
    rate = 16000
    base = rng.normal(0, 0.01, rate * 3)
    clap = rng.normal(0, 1, 400) * np.exp(-np.arange(400) / 80)
    ref = base.copy()
    ref[20000:20400] += clap
    lag_samples = 5333  # 0.3333 s
    other = rng.normal(0, 0.01, rate * 3)
    other[20000 + lag_samples:20400 + lag_samples] += 0.5 * clap  # quieter microphone
    lag, score = audio_lag_seconds(other, rate, ref, rate, max_lag_s=1.0)
    assert abs(lag - lag_samples / rate) < 1.5e-3
    assert score > 0.3
    # a negative lag in clips shorter than the search window (no wrap-around alias)
    lag, _ = audio_lag_seconds(ref[lag_samples:], rate, ref, rate, max_lag_s=10.0)
    assert abs(lag + lag_samples / rate) < 1.5e-3


def test_plan_skip_and_fill():
    a = Slots(np.arange(6), np.ones(6, bool), [], [])
    b = Slots(np.array([0, 1, 3, 4, 5]), np.ones(5, bool), [2], [])
    offsets = {"a": 0, "b": 1}  # b's slot k is a's slot k + 1
    skip = plan_frames({"a": a, "b": b}, offsets, "skip")
    assert skip.globals_ == [1, 2, 4, 5] and skip.incomplete == [3]
    assert skip.source["b"] == [0, 1, 2, 3]
    fill = plan_frames({"a": a, "b": b}, offsets, "fill", start=1, stride=2)
    assert fill.globals_ == [2, 4] and fill.filled == {}
    fill_all = plan_frames({"a": a, "b": b}, offsets, "fill")
    assert fill_all.globals_ == [1, 2, 3, 4, 5] and fill_all.filled == {"b": [2]}
    assert fill_all.source["b"][2] == 1  # slot 2 missing: the previous frame stands in
    with pytest.raises(ValueError, match="selects none"):
        plan_frames({"a": a, "b": b}, offsets, "skip", start=10)
    sig = slot_signal(np.arange(5.0), b)
    assert np.isnan(sig[2]) and sig[3] == 2.0
