"""Log-mel features computed with torch (no audio library): 16 kHz, 25 ms Hann window, 10 ms hop
(100 frames per second), 40 mel bands from 60 Hz to 7.6 kHz, log with a floor, and per-utterance
mean/variance normalisation per band (so loudness and channel do not matter)."""
from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["log_mel", "FEATURE_RATE", "N_MELS"]

FEATURE_RATE = 100.0
N_MELS = 40
_N_FFT, _WIN, _HOP = 512, 400, 160


@functools.lru_cache(maxsize=2)
def _mel_matrix(n_mels: int = N_MELS, sr: int = 16000, fmin: float = 60.0, fmax: float = 7600.0) -> torch.Tensor:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, _N_FFT // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return torch.tensor(fb, dtype=torch.float32)  # [M, F]


def log_mel(audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    """[N_MELS, frames] features; frame k is centred on time k / 100 s."""
    from headcap.reconstruct.speech.align import to_16k

    x = torch.as_tensor(to_16k(audio, sample_rate), dtype=torch.float32)
    if x.numel() < _WIN:
        x = torch.nn.functional.pad(x, (0, _WIN - x.numel()))
    spec = torch.stft(x, _N_FFT, hop_length=_HOP, win_length=_WIN, window=torch.hann_window(_WIN),
                      center=True, return_complex=True).abs() ** 2  # [F, frames]
    mel = torch.log(_mel_matrix() @ spec + 1e-6)
    return (mel - mel.mean(dim=1, keepdim=True)) / (mel.std(dim=1, keepdim=True) + 1e-3)
