"""A small learned audio-to-expression model: log-mel (features.py) -> dilated temporal
convolutions -> the ARKit mouth channels speech drives (phonemes.DRIVEN_NAMES), at 100 fps.

Non-causal, receptive field about +-0.2 s (coarticulation needs the next phone). About 0.27 M
parameters; the shipped weights (weights/speech_tcn.safetensors, float16) are about 0.5 MB and
come from `python -m headcap.reconstruct.speech.train` (docs/speech.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headcap.reconstruct.speech.features import FEATURE_RATE, N_MELS, log_mel
from headcap.reconstruct.speech.phonemes import ARKIT_NAMES, DRIVEN_NAMES

__all__ = ["SpeechTCN", "load_model", "save_model", "predict_curves", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "speech_tcn.safetensors"


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, x):
        return x + self.mix(torch.nn.functional.gelu(self.norm(self.conv(x))))


class SpeechTCN(nn.Module):
    def __init__(self, n_mels: int = N_MELS, channels: int = 128, dilations=(1, 2, 4, 8, 1),
                 outputs: int = len(DRIVEN_NAMES)):
        super().__init__()
        self.config = {"n_mels": n_mels, "channels": channels, "dilations": list(dilations), "outputs": outputs}
        self.inp = nn.Conv1d(n_mels, channels, 5, padding=2)
        self.blocks = nn.Sequential(*[_Block(channels, d) for d in dilations])
        self.out = nn.Conv1d(channels, outputs, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, F] -> curves [B, outputs, F] (linear: a sigmoid saturates on the channels that
        are zero most of the time, and they never learn; predict_curves clamps to [0, 1])."""
        return self.out(self.blocks(self.inp(mel)))


def save_model(model: SpeechTCN, path: str | Path, info: dict | None = None) -> None:
    from safetensors.torch import save

    from headcap.core.fileio import atomic_write_bytes

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config), "outputs": json.dumps(DRIVEN_NAMES),
            "info": json.dumps(info or {})}
    atomic_write_bytes(Path(path), save(tensors, metadata=meta))


def load_model(path: str | Path | None = None) -> SpeechTCN:
    """Load weights written by save_model (default: the shipped checkpoint)."""
    from safetensors import safe_open

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise ValueError(f"{path}: no speech model weights (train them: python -m headcap.reconstruct.speech.train)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        config = json.loads(meta["config"])
        outputs = json.loads(meta["outputs"])
    except (KeyError, json.JSONDecodeError, OSError, Exception) as exc:  # safetensors raises its own errors
        raise ValueError(f"{path}: not a speech model checkpoint ({exc})") from None
    if outputs != DRIVEN_NAMES:
        raise ValueError(f"{path}: field 'outputs' {outputs} differs from this version's {DRIVEN_NAMES}")
    model = SpeechTCN(config["n_mels"], config["channels"], tuple(config["dilations"]), config["outputs"])
    model.load_state_dict(state)
    model.info = json.loads(meta.get("info", "{}"))
    return model.eval()


@torch.no_grad()
def predict_curves(model: SpeechTCN, audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Expression [num_frames, 52] (ARKIT_NAMES; undriven channels 0) at `fps` from audio."""
    mel = log_mel(audio, sample_rate)[None]
    pred = model(mel)[0].clamp(0.0, 1.0).double().numpy()  # [C, F] at 100 fps
    src_t = np.arange(pred.shape[1]) / FEATURE_RATE
    t = np.arange(num_frames) / fps
    out = np.zeros((num_frames, len(ARKIT_NAMES)))
    for c, name in enumerate(DRIVEN_NAMES):
        out[:, ARKIT_NAMES.index(name)] = np.interp(t, src_t, pred[c])
    return out
