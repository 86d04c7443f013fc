"""Train the audio-to-expression model on speech we synthesise (corpus.py) and save safetensors.

    python -m headcap.reconstruct.speech.train --out reconstruct/speech/weights/speech_tcn.safetensors

Reproducible: seeded sentences, voices, augmentation, initialisation and batch order, torch on
2 threads (CPU). Prints train loss per epoch and the held-out error of the curves at the end.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from headcap.reconstruct.speech.animate import phones_to_curves
from headcap.reconstruct.speech.corpus import HELD_OUT_SENTENCES, HELD_OUT_VOICES, TRAIN_VOICES, training_sentences
from headcap.reconstruct.speech.espeak import synthesize
from headcap.reconstruct.speech.features import FEATURE_RATE, log_mel
from headcap.reconstruct.speech.model import DEFAULT_WEIGHTS, SpeechTCN, save_model
from headcap.reconstruct.speech.phonemes import ARKIT_NAMES, DRIVEN_NAMES

__all__ = ["make_example", "make_dataset", "train"]

_DRIVEN = [ARKIT_NAMES.index(n) for n in DRIVEN_NAMES]


def make_example(text: str, voice, rng: np.random.Generator | None = None):
    """(mel [M, F], target curves [C, F] at 100 fps) for one sentence in one voice; with `rng`,
    random gain and a little noise on the audio."""
    speech = synthesize(text, voice)
    audio = speech.audio.astype(np.float64)
    if rng is not None:
        audio = audio * rng.uniform(0.3, 1.0) + rng.normal(0, rng.uniform(0, 3e-3), len(audio))
    mel = log_mel(audio, speech.sample_rate)
    curves = phones_to_curves(speech.phones, "espeak", FEATURE_RATE, mel.shape[1])[:, _DRIVEN]
    return mel, torch.tensor(curves.T, dtype=torch.float32)


def make_dataset(count: int, seed: int):
    rng = np.random.default_rng(seed)
    sentences = training_sentences(count, seed)
    return [make_example(s, TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))], rng) for s in sentences]


def _batches(data, batch: int, crop: int, rng: np.random.Generator):
    order = rng.permutation(len(data))
    for i in range(0, len(order), batch):
        mels, tgts = [], []
        for k in order[i:i + batch]:
            mel, tgt = data[k]
            if mel.shape[1] > crop:
                s = int(rng.integers(0, mel.shape[1] - crop + 1))
                mel, tgt = mel[:, s:s + crop], tgt[:, s:s + crop]
            pad = crop - mel.shape[1]
            mels.append(torch.nn.functional.pad(mel, (0, pad)))
            tgts.append(torch.nn.functional.pad(tgt, (0, pad), value=-1.0))
        yield torch.stack(mels), torch.stack(tgts)


def held_out_error(model: SpeechTCN) -> float:
    """Mean absolute curve error on held-out sentences x held-out voices."""
    errs = []
    with torch.no_grad():
        for text in HELD_OUT_SENTENCES:
            for voice in HELD_OUT_VOICES:
                mel, tgt = make_example(text, voice)
                errs.append(float((model(mel[None])[0].clamp(0, 1) - tgt).abs().mean()))
    return float(np.mean(errs))


def train(utterances: int = 300, epochs: int = 20, seed: int = 0, channels: int = 64, lr: float = 3e-3,
          log=print) -> tuple[SpeechTCN, dict]:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = make_dataset(utterances, seed)
    seconds = sum(m.shape[1] for m, _ in data) / FEATURE_RATE
    log(f"data: {utterances} utterances, {seconds / 60:.1f} min of speech, {time.perf_counter() - t0:.1f} s")
    model = SpeechTCN(channels=channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(data) + 15) // 16)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed + 1)
    for epoch in range(epochs):
        total, n = 0.0, 0
        for mel, tgt in _batches(data, 16, 400, rng):
            pred = model(mel)
            valid = tgt >= 0
            diff = (pred - tgt)[valid]
            vel = (pred[..., 1:] - pred[..., :-1]) - (tgt[..., 1:] - tgt[..., :-1])
            vel = vel[valid[..., 1:] & valid[..., :-1]]
            # squared error: its optimum is the conditional mean, so a sparse channel (pucker, press)
            # is not pulled to its median, zero, as an absolute error would pull it
            loss = 10.0 * (diff.pow(2).mean() + 0.5 * vel.pow(2).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item(), n + 1
        log(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    info = {"utterances": utterances, "epochs": epochs, "seed": seed, "minutes_of_speech": round(seconds / 60, 2),
            "train_seconds": round(time.perf_counter() - t0, 1), "held_out_curve_l1": round(held_out_error(model), 4)}
    log(f"held-out mean |curve error| {info['held_out_curve_l1']:.4f}")
    return model, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, info = train(args.utterances, args.epochs, args.seed, args.channels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out, info)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
