"""Phones to ARKit-named expression curves: visemes blended by dominance (Cohen & Massaro 1993),
bilabial lip closure, and idle motion (blinks, small head motion) so the face is alive.

Coarticulation: every phone i has a viseme with target weights T_i, a dominance alpha_i and a
decay theta_i; at time t its dominance is D_i(t) = alpha_i * exp(-theta_i * tau_i(t)), tau_i the
distance from t to the phone's interval (0 inside it). A channel's value is sum_i D_i T_i / sum_i D_i,
so strong shapes (p, b, m, f, v, rounded vowels) reach into their neighbours and weak ones
(h, t, n) take the shape around them. Bilabials then close the lips over a bump centred on the
phone, at least one frame wide, so a 40 ms /p/ is never skipped between frames at 30 fps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from headcap.reconstruct.speech.espeak import Phone
from headcap.reconstruct.speech.phonemes import ARKIT_NAMES, VISEMES, viseme_of

__all__ = ["SpeechAnimation", "phones_to_curves", "idle_motion", "animate_phones", "retarget", "frame_count"]

_IDX = {n: i for i, n in enumerate(ARKIT_NAMES)}
_VIS_NAMES = list(VISEMES)
_TARGETS = np.zeros((len(_VIS_NAMES), len(ARKIT_NAMES)))
for _k, _v in enumerate(VISEMES.values()):
    for _n, _w in _v.targets.items():
        _TARGETS[_k, _IDX[_n]] = _w
_ALPHA = np.array([v.dominance for v in VISEMES.values()])
_THETA = np.array([v.decay for v in VISEMES.values()])
_OPENING = [_IDX[n] for n in ("mouthFunnel", "mouthPucker", "mouthLowerDownLeft", "mouthLowerDownRight",
                              "mouthUpperUpLeft", "mouthUpperUpRight", "mouthStretchLeft", "mouthStretchRight",
                              "mouthSmileLeft", "mouthSmileRight", "tongueOut")]


@dataclass
class SpeechAnimation:
    """expression [T, 52] over ARKIT_NAMES at `fps` (frame k shows time k / fps), head_rotation
    [T, 3] axis-angle (radians, head frame: x pitch, y yaw, z roll) of small idle head motion."""

    expression: np.ndarray
    fps: float
    head_rotation: np.ndarray
    expression_names: list[str] = field(default_factory=lambda: list(ARKIT_NAMES))

    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])


def frame_count(duration: float, fps: float) -> int:
    """Frames covering `duration` seconds: the last frame starts before the audio ends."""
    return max(1, int(np.ceil(duration * fps - 1e-9)))


def phones_to_curves(phones: list[Phone], alphabet: str, fps: float, num_frames: int) -> np.ndarray:
    """Mouth curves [T, 52] from timed phones (module docstring); alphabet "espeak" or "arpabet"."""
    t = np.arange(num_frames) / fps
    out = np.zeros((num_frames, len(ARKIT_NAMES)))
    if not phones:
        return out
    vis = np.array([_VIS_NAMES.index(viseme_of(p.symbol, alphabet)) for p in phones])
    start = np.array([p.start for p in phones])
    end = np.array([p.end for p in phones])
    tau = np.maximum(np.maximum(start[None, :] - t[:, None], t[:, None] - end[None, :]), 0.0)  # [T, P]
    dom = _ALPHA[vis][None, :] * np.exp(-_THETA[vis][None, :] * tau) + 1e-12
    out = dom @ _TARGETS[vis] / dom.sum(axis=1, keepdims=True)
    # bilabial closure
    bil = np.array([VISEMES[_VIS_NAMES[v]].bilabial for v in vis])
    if bil.any():
        centre = 0.5 * (start[bil] + end[bil])
        half = np.maximum(0.5 * (end[bil] - start[bil]), 1.0 / fps)
        w = np.clip(1.0 - np.abs(t[:, None] - centre[None, :]) / half[None, :], 0.0, 1.0).max(axis=1)  # [T]
        w = np.clip(1.6 * w, 0.0, 1.0)
        jaw = out[:, _IDX["jawOpen"]]
        jaw = jaw * (1 - w) + w * np.minimum(jaw, 0.03)
        out[:, _IDX["jawOpen"]] = jaw
        out[:, _OPENING] *= (1.0 - 0.85 * w)[:, None]
        out[:, _IDX["mouthClose"]] = np.maximum(out[:, _IDX["mouthClose"]], w * jaw)
        for side in ("mouthPressLeft", "mouthPressRight"):
            out[:, _IDX[side]] = np.maximum(out[:, _IDX[side]], 0.35 * w)
    return np.clip(out, 0.0, 1.0)


def idle_motion(num_frames: int, fps: float, seed: int = 0, speech: np.ndarray | None = None):
    """Blinks [T] in [0, 1] and head rotation [T, 3] (radians), seeded.

    Blinks: a renewal process (gaps 1.8 s + exponential with mean 2.2 s), each 80 ms closing,
    40 ms closed, 160 ms opening. Head: three slow sinusoids per axis (about 1 degree) plus a small
    nod following the speech envelope `speech` [T] (jaw opening) when given.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    blink = np.zeros(num_frames)
    at = 0.6 + rng.exponential(1.5)
    while at < t[-1] + 1.0:
        rel = t - at
        close = np.clip((rel + 0.08) / 0.08, 0, 1) * (rel < 0.04)
        open_ = np.clip(1 - (rel - 0.04) / 0.16, 0, 1) * (rel >= 0.04)
        blink = np.maximum(blink, np.where(rel < -0.08, 0, close + open_))
        at += 1.8 + rng.exponential(2.2)
    rot = np.zeros((num_frames, 3))
    for axis, amp in enumerate(np.radians([1.2, 1.5, 0.6])):
        freqs = rng.uniform(0.08, 0.45, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        rot[:, axis] = amp / 3 * np.sin(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :]).sum(axis=1)
    if speech is not None and len(speech) == num_frames and num_frames > 2:
        k = max(1, int(round(0.25 * fps)))
        env = np.convolve(speech, np.ones(k) / k, mode="same")
        rot[:, 0] += np.radians(2.0) * (env - env.mean())
    return blink, rot


def animate_phones(phones: list[Phone], alphabet: str, duration: float, fps: float = 30.0, seed: int = 0,
                   idle: bool = True) -> SpeechAnimation:
    """Full rule-based route: mouth curves, then blinks and head motion (when `idle`)."""
    n = frame_count(duration, fps)
    expr = phones_to_curves(phones, alphabet, fps, n)
    return add_idle(expr, fps, seed) if idle else SpeechAnimation(expr, fps, np.zeros((n, 3)))


def add_idle(expression: np.ndarray, fps: float, seed: int = 0) -> SpeechAnimation:
    """Blinks and head motion on top of mouth curves [T, 52]."""
    expr = np.array(expression, dtype=np.float64, copy=True)
    blink, rot = idle_motion(len(expr), fps, seed, expr[:, _IDX["jawOpen"]])
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        expr[:, _IDX[name]] = np.maximum(expr[:, _IDX[name]], blink)
    return SpeechAnimation(expr, fps, rot)


def retarget(animation: SpeechAnimation, expression_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Expression [T, Ne] for a head model's `expression_names` (matched by ARKit name, a name with
    Left/Right taking its symmetric ARKit shape; channels the model lacks are dropped, the model's
    other channels stay 0), and the names that were matched."""
    src = {n: i for i, n in enumerate(animation.expression_names)}
    out = np.zeros((animation.num_frames, len(expression_names)))
    matched = []
    for j, name in enumerate(expression_names):
        # a model that splits a symmetric ARKit shape (ICT's browInnerUpLeft/Right) gets it on both sides
        base = name[:-4] if name.endswith("Left") else name[:-5] if name.endswith("Right") else None
        key = name if name in src else base if base in src else None
        if key is not None:
            out[:, j] = animation.expression[:, src[key]]
            matched.append(name)
    if not matched:
        raise ValueError(f"head model expressions {expression_names[:6]}...: none has an ARKit name; "
                         "speech animation drives ARKit-named expressions (jawOpen, mouthClose, ...)")
    return out, matched
