"""Seeded motion for the synthetic studio: identity, an expression sequence, gaze, head motion.

Expressions are generated as curves keyed by ARKit blendshape name (speech-like `jawOpen` with a
syllable rhythm, blinks on `eyeBlinkLeft/Right`, smiles on `mouthSmileLeft/Right`, rounded
vowels on `mouthFunnel`/`mouthPucker`, brow raises) and then mapped by name onto whatever
`expression_names` a head model has; names the model lacks are dropped (and reported), so the
same seed drives ICT-FaceKit, the MakeHuman head or FLAME-with-ARKit-names alike.
Every random draw comes from the `np.random.Generator` passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MotionConfig", "sample_identity", "expression_curves", "map_expressions", "gaze_rotations",
    "head_motion", "smooth_noise", "euler_to_matrix", "EXPRESSION_CHANNELS",
]

#: ARKit names this module animates.
EXPRESSION_CHANNELS = (
    "jawOpen", "mouthFunnel", "mouthPucker", "mouthClose", "eyeBlinkLeft", "eyeBlinkRight",
    "mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight", "browInnerUp",
    "browOuterUpLeft", "browOuterUpRight",
)


@dataclass(frozen=True)
class MotionConfig:
    fps: float = 30.0
    identity_scale: float = 0.5
    """Standard deviation of the identity coefficients (in the model's units, PCA sigmas for ICT)."""
    identity_clip: float = 2.0
    syllable_rate_hz: float = 4.5
    """Mean syllable rate of the speech-like jaw motion."""
    jaw_open_max: float = 0.55
    blink_interval_s: tuple[float, float] = (1.5, 4.0)
    smile_max: float = 0.8
    rotation_amplitude_deg: tuple[float, float, float] = (12.0, 6.0, 3.0)
    """Largest yaw (about y), pitch (about x), roll (about z) of the head."""
    translation_amplitude_m: float = 0.01
    gaze_amplitude_deg: float = 8.0

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"MotionConfig: field 'fps' must be positive, got {self.fps!r}")
        if not self.syllable_rate_hz > 0:
            raise ValueError(f"MotionConfig: field 'syllable_rate_hz' must be positive, got {self.syllable_rate_hz!r}")
        lo, hi = self.blink_interval_s
        if not 0 < lo <= hi:
            raise ValueError(f"MotionConfig: field 'blink_interval_s' must be 0 < min <= max, got {self.blink_interval_s}")


def sample_identity(num_identity: int, rng: np.random.Generator, scale: float = 0.8,
                    clip: float = 2.0) -> np.ndarray:
    """[Ni] float32 identity coefficients, N(0, scale^2) clipped to +-clip."""
    return np.clip(rng.normal(0.0, scale, size=num_identity), -clip, clip).astype(np.float32)


def smooth_noise(times: np.ndarray, rng: np.random.Generator, frequencies_hz=(0.15, 0.6),
                 terms: int = 3) -> np.ndarray:
    """A smooth random signal in [-1, 1]: a sum of `terms` sinusoids with seeded frequencies
    and phases, normalised by the sum of amplitudes. times: [T] seconds -> [T]."""
    freq = rng.uniform(*frequencies_hz, size=terms)
    phase = rng.uniform(0, 2 * math.pi, size=terms)
    amp = rng.uniform(0.5, 1.0, size=terms)
    signal = (amp[:, None] * np.sin(2 * math.pi * freq[:, None] * times[None] + phase[:, None])).sum(0)
    return signal / amp.sum()


def _raised_cosine(times: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    x = np.clip((times - centre) / half_width, -1.0, 1.0)
    return 0.5 * (1.0 + np.cos(math.pi * x))


def _speech(times: np.ndarray, rng: np.random.Generator, config: MotionConfig) -> dict[str, np.ndarray]:
    """Phrases of syllables separated by pauses; each syllable opens the jaw with a raised-cosine
    bump, about a third of them are rounded vowels (funnel/pucker), closures press the lips."""
    duration = float(times[-1]) + 1.0 / config.fps
    jaw = np.zeros_like(times)
    funnel = np.zeros_like(times)
    pucker = np.zeros_like(times)
    close = np.zeros_like(times)
    t = -rng.uniform(0.0, 0.2)
    while t < duration + 0.5:
        phrase_end = t + rng.uniform(1.5, 3.5)
        while t < phrase_end:
            interval = rng.uniform(0.7, 1.3) / config.syllable_rate_hz
            centre = t + interval / 2
            amplitude = rng.uniform(0.3, 1.0) * config.jaw_open_max
            jaw += amplitude * _raised_cosine(times, centre, 0.55 * interval)
            kind = rng.uniform()
            if kind < 0.2:
                funnel += rng.uniform(0.3, 0.7) * _raised_cosine(times, centre, 0.6 * interval)
            elif kind < 0.35:
                pucker += rng.uniform(0.3, 0.7) * _raised_cosine(times, centre, 0.6 * interval)
            elif kind < 0.5:
                close += rng.uniform(0.2, 0.5) * _raised_cosine(times, t, 0.3 * interval)
            t += interval
        t += rng.uniform(0.25, 0.7)
    return {"jawOpen": np.clip(jaw, 0, 1), "mouthFunnel": np.clip(funnel, 0, 1),
            "mouthPucker": np.clip(pucker, 0, 1), "mouthClose": np.clip(close, 0, 1) * (jaw < 0.15)}


def _blink_profile(times: np.ndarray, start: float) -> np.ndarray:
    """A blink: 60 ms closing (ease-in), 30 ms closed, 150 ms opening (ease-out)."""
    close, hold, reopen = 0.06, 0.03, 0.15
    out = np.zeros_like(times)
    s = (times - start) / close
    m = (s >= 0) & (s < 1)
    out[m] = np.sin(0.5 * math.pi * s[m]) ** 2
    m = (times >= start + close) & (times < start + close + hold)
    out[m] = 1.0
    s = (times - start - close - hold) / reopen
    m = (s >= 0) & (s < 1)
    out[m] = np.cos(0.5 * math.pi * s[m]) ** 2
    return out


def _blinks(times: np.ndarray, rng: np.random.Generator, config: MotionConfig) -> dict[str, np.ndarray]:
    duration = float(times[-1]) + 1.0 / config.fps
    # the first blink falls inside the first second so that short sequences still hold one
    start = rng.uniform(0.15, 0.7) * min(duration, 1.0)
    left = np.zeros_like(times)
    right = np.zeros_like(times)
    while start < duration:
        depth = rng.uniform(0.85, 1.0)
        left = np.maximum(left, depth * _blink_profile(times, start))
        right = np.maximum(right, depth * rng.uniform(0.95, 1.0) * _blink_profile(times, start + rng.uniform(0, 0.01)))
        start += rng.uniform(*config.blink_interval_s)
    return {"eyeBlinkLeft": left, "eyeBlinkRight": right}


def _smiles(times: np.ndarray, rng: np.random.Generator, config: MotionConfig) -> dict[str, np.ndarray]:
    duration = float(times[-1]) + 1.0 / config.fps
    smile = np.zeros_like(times)
    start = -rng.uniform(0.0, 0.4)
    while start < duration:
        length = rng.uniform(0.8, 2.5)
        amplitude = rng.uniform(0.4, 1.0) * config.smile_max
        smile = np.maximum(smile, amplitude * _raised_cosine(times, start + length / 2, length / 2))
        start += length + rng.uniform(0.3, 2.0)
    asym = rng.uniform(-0.1, 0.1)
    left, right = smile * (1 + asym), smile * (1 - asym)
    return {"mouthSmileLeft": np.clip(left, 0, 1), "mouthSmileRight": np.clip(right, 0, 1),
            "cheekSquintLeft": 0.4 * np.clip(left, 0, 1), "cheekSquintRight": 0.4 * np.clip(right, 0, 1)}


def expression_curves(num_frames: int, rng: np.random.Generator, config: MotionConfig = MotionConfig()) -> dict[str, np.ndarray]:
    """ARKit name -> weights [T] in [0, 1] for frames at 0, 1/fps, 2/fps, ..."""
    if num_frames <= 0:
        raise ValueError(f"expression_curves: num_frames must be positive, got {num_frames}")
    times = np.arange(num_frames) / config.fps
    curves: dict[str, np.ndarray] = {}
    curves.update(_speech(times, rng, config))
    curves.update(_blinks(times, rng, config))
    curves.update(_smiles(times, rng, config))
    brow = np.clip(0.5 * smooth_noise(times, rng, (0.2, 0.8)) + 0.5 * curves["jawOpen"] - 0.15, 0, 1) * 0.6
    curves["browInnerUp"] = brow
    curves["browOuterUpLeft"] = 0.7 * brow
    curves["browOuterUpRight"] = 0.7 * brow
    return {name: curves[name].astype(np.float64) for name in EXPRESSION_CHANNELS}


def map_expressions(curves: dict[str, np.ndarray], expression_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Curves by ARKit name -> (weights [T, Ne] float32 in the model's order, model names used).
    A model name 'XLeft'/'XRight' takes curve 'X' when it has no curve of its own; model
    expressions the curves do not mention stay at zero."""
    lengths = {len(v) for v in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"map_expressions: curves have different lengths {sorted(lengths)}")
    out = np.zeros((lengths.pop(), len(expression_names)), dtype=np.float32)
    used = []
    for e, name in enumerate(expression_names):
        # models that split a symmetric ARKit shape into halves (ICT: browInnerUpLeft/Right)
        # get the shared curve on both halves
        base = name[:-4] if name.endswith("Left") else name[:-5] if name.endswith("Right") else None
        source = name if name in curves else base if base in curves else None
        if source is not None:
            out[:, e] = curves[source]
            used.append(name)
    return out, used


def gaze_rotations(num_frames: int, joint_names: list[str], rng: np.random.Generator,
                   config: MotionConfig = MotionConfig()) -> np.ndarray:
    """Joint rotations [T, J, 3] (axis-angle): eye joints (names containing 'eye') fixate and
    saccade together every 0.4-1.2 s; every other joint stays at rest (head motion is rigid and
    lives in world_from_head; the jaw is driven by the jawOpen blendshape)."""
    out = np.zeros((num_frames, len(joint_names), 3), dtype=np.float32)
    eyes = [j for j, name in enumerate(joint_names) if "eye" in name.lower()]
    if not eyes:
        return out
    times = np.arange(num_frames) / config.fps
    amp = math.radians(config.gaze_amplitude_deg)
    target = rng.uniform(-amp, amp, size=2) * (0.6, 1.0)
    t = 0.0
    gaze = np.zeros((num_frames, 2))
    while t < times[-1] + 1.0 / config.fps:
        hold = rng.uniform(0.4, 1.2)
        gaze[(times >= t) & (times < t + hold)] = target
        target = rng.uniform(-amp, amp, size=2) * (0.6, 1.0)
        t += hold
    # pitch (about x) then yaw (about y); small angles, so axis-angle ~ the two components
    for j in eyes:
        out[:, j, 0] = gaze[:, 0]
        out[:, j, 1] = gaze[:, 1]
    return out


def euler_to_matrix(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """R = Ry(yaw) Rx(pitch) Rz(roll), radians, arrays [T] -> [T, 3, 3]."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return ry @ rx @ rz


def head_motion(num_frames: int, rng: np.random.Generator, rotation_centre: np.ndarray,
                config: MotionConfig = MotionConfig()) -> np.ndarray:
    """world_from_head [T, 4, 4] float64: small smooth rotations about `rotation_centre` (a point
    in the head frame, [3], which sits at the world origin at rest) and small translations."""
    times = np.arange(num_frames) / config.fps
    yaw, pitch, roll = (math.radians(a) * smooth_noise(times, rng) for a in config.rotation_amplitude_deg)
    trans = config.translation_amplitude_m * np.stack([smooth_noise(times, rng, (0.1, 0.4)) for _ in range(3)], -1)
    out = np.tile(np.eye(4), (num_frames, 1, 1))
    rot = euler_to_matrix(yaw, pitch, roll)
    out[:, :3, :3] = rot
    out[:, :3, 3] = trans - rot @ np.asarray(rotation_centre, dtype=np.float64)
    return out
