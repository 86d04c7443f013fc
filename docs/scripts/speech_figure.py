"""The pictures in docs/speech.md: expression curves of a held-out sentence (truth from espeak's
own phone timings, the rule-based route from the audio with its transcript, the learned route from
the audio alone) and frames of the default head speaking it.

    python docs/scripts/speech_figure.py docs/img/speech_curves.png docs/img/speech_frames.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", type=Path)
    parser.add_argument("frames", type=Path)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, ImageDraw

    from headcap.reconstruct.speech.align import align_transcript
    from headcap.reconstruct.speech.animate import add_idle, frame_count, phones_to_curves
    from headcap.reconstruct.speech.corpus import HELD_OUT_SENTENCES, HELD_OUT_VOICES
    from headcap.reconstruct.speech.espeak import synthesize
    from headcap.reconstruct.speech.model import load_model, predict_curves
    from headcap.reconstruct.speech.phonemes import ARKIT_NAMES
    from headcap.reconstruct.speech.render import load_puppet, render_frames

    fps = 30
    text, voice = HELD_OUT_SENTENCES[0], HELD_OUT_VOICES[0]
    speech = synthesize(text, voice)
    n = frame_count(speech.duration, fps)
    truth = phones_to_curves(speech.phones, "espeak", fps, n)
    aligned = align_transcript(speech.audio, speech.sample_rate, text)
    rules = phones_to_curves(aligned, "arpabet", fps, n)
    learned = predict_curves(load_model(), speech.audio, speech.sample_rate, fps, n)
    t = np.arange(n) / fps
    channels = [("jawOpen", ["jawOpen"]), ("lips round (pucker + funnel)", ["mouthPucker", "mouthFunnel"]),
                ("lips pressed (bilabials)", ["mouthPressLeft"]), ("lips spread (smile + stretch)",
                                                                   ["mouthSmileLeft", "mouthStretchLeft"])]
    fig, axes = plt.subplots(len(channels) + 1, 1, figsize=(9, 7.5), dpi=100, sharex=True,
                             gridspec_kw={"height_ratios": [0.8] + [1] * len(channels)})
    ts = np.arange(len(speech.audio)) / speech.sample_rate
    axes[0].plot(ts, speech.audio, lw=0.4, color="0.4")
    for p in speech.phones:
        if not p.symbol.startswith("_"):
            axes[0].axvline(p.start, color="tab:blue", lw=0.4, alpha=0.5)
            axes[0].text((p.start + p.end) / 2, 0.8, p.symbol, ha="center", fontsize=6, color="tab:blue")
    for p in aligned:
        if p.symbol != "SIL":
            axes[0].axvline(p.start, ymax=0.35, color="tab:orange", lw=0.6)
    axes[0].set_ylim(-1, 1.1)
    axes[0].set_yticks([])
    axes[0].set_title(f"\"{text}\" (held-out sentence, voice {voice.name}); espeak phones (blue), "
                      "pocketsphinx boundaries (orange)", fontsize=8)
    for ax, (label, names) in zip(axes[1:], channels):
        idx = [ARKIT_NAMES.index(nm) for nm in names]
        ax.plot(t, truth[:, idx].sum(1), color="k", lw=1.6, label="truth (espeak timings)")
        ax.plot(t, rules[:, idx].sum(1), color="tab:orange", lw=1.1, label="rules, from audio + transcript")
        ax.plot(t, learned[:, idx].sum(1), color="tab:green", lw=1.1, label="learned, from audio")
        ax.set_ylabel(label, fontsize=7)
        ax.tick_params(labelsize=7)
    axes[1].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    args.curves.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.curves)
    # frames at the centres of a few phones
    puppet = load_puppet("default")
    anim = add_idle(rules, fps, seed=0)
    picks = []
    for p in speech.phones:
        if p.symbol in ("b", "3:", "tS", "u:", "m", "a", "s") and p.end - p.start > 0.04:
            picks.append((p.symbol, int(round((p.start + p.end) / 2 * fps))))
    picks = picks[:7]
    frames_idx = [k for _, k in picks]
    images = list(render_frames(puppet, anim.expression[frames_idx], anim.head_rotation[frames_idx], size=192))
    strip = Image.new("RGB", (192 * len(images), 212), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, ((sym, k), img) in enumerate(zip(picks, images)):
        strip.paste(Image.fromarray(img), (192 * i, 20))
        draw.text((192 * i + 6, 4), f"/{sym}/  t={k / fps:.2f} s", fill=(0, 0, 0))
    strip.save(args.frames)
    print(f"wrote {args.curves} and {args.frames}")


if __name__ == "__main__":
    main()
