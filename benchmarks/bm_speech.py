"""Speech animation benchmark (#17): speed and accuracy on held-out synthetic speech.

Speed: seconds of animation produced per second of compute (real-time factor) for
- the rule-based route from timed phones (visemes, coarticulation, closure, idle motion),
- the rule-based route from audio (pocketsphinx forced alignment included),
- the learned route from audio (log-mel + network), and the mp4 rendering (frames per second).
Accuracy: median phone-boundary error (forced alignment and phone recognition) against espeak's
own timings, and lip vertex error (mm, default head) of each route against the motion espeak's
timings define, over the 12 held-out Harvard sentences x 3 held-out voices (--quick: 4 x 3).

    python benchmarks/bm_speech.py [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences instead of 12")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.speech.align import align_transcript, recognize_phones
    from headcap.reconstruct.speech.animate import add_idle, frame_count, phones_to_curves
    from headcap.reconstruct.speech.corpus import HELD_OUT_SENTENCES, HELD_OUT_VOICES
    from headcap.reconstruct.speech.espeak import synthesize
    from headcap.reconstruct.speech.metrics import boundary_errors, lip_vertex_error, lip_vertex_ids
    from headcap.reconstruct.speech.model import load_model, predict_curves
    from headcap.reconstruct.speech.render import load_puppet, render_frames

    fps = 30
    model = load_head_model("default", dtype=torch.float64)
    ids = lip_vertex_ids(model)
    net = load_model()
    sentences = HELD_OUT_SENTENCES[:4] if args.quick else HELD_OUT_SENTENCES
    t_rules = t_align = t_learned = 0.0
    audio_s = 0.0
    b_align, b_rec = [], []
    lve = {"rules, transcript": [], "rules, no transcript": [], "learned": [], "no motion": []}
    for text in sentences:
        for voice in HELD_OUT_VOICES:
            speech = synthesize(text, voice)
            audio_s += speech.duration
            n = frame_count(speech.duration, fps)
            truth = phones_to_curves(speech.phones, "espeak", fps, n)
            tic = time.perf_counter()
            for _ in range(20):
                add_idle(phones_to_curves(speech.phones, "espeak", fps, n), fps, seed=0)
            t_rules += (time.perf_counter() - tic) / 20
            tic = time.perf_counter()
            aligned = align_transcript(speech.audio, speech.sample_rate, text)
            rules = phones_to_curves(aligned, "arpabet", fps, n)
            t_align += time.perf_counter() - tic
            recognised = recognize_phones(speech.audio, speech.sample_rate)
            tic = time.perf_counter()
            learned = predict_curves(net, speech.audio, speech.sample_rate, fps, n)
            t_learned += time.perf_counter() - tic
            b_align.append(boundary_errors(speech.phones, "espeak", aligned, "arpabet"))
            b_rec.append(boundary_errors(speech.phones, "espeak", recognised, "arpabet"))
            lve["rules, transcript"].append(lip_vertex_error(model, rules, truth, ids))
            lve["rules, no transcript"].append(lip_vertex_error(model, phones_to_curves(recognised, "arpabet", fps, n),
                                                                truth, ids))
            lve["learned"].append(lip_vertex_error(model, learned, truth, ids))
            lve["no motion"].append(lip_vertex_error(model, np.zeros_like(truth), truth, ids))
    puppet = load_puppet("default")
    expr = np.zeros((60, len(puppet.expression_names)))
    tic = time.perf_counter()
    for _ in render_frames(puppet, expr, np.zeros((60, 3)), size=256):
        pass
    render_fps = 60 / (time.perf_counter() - tic)
    pairs = len(sentences) * len(HELD_OUT_VOICES)
    result = {
        "pairs": pairs, "audio_seconds": round(audio_s, 2),
        "realtime_rules_from_phones": round(audio_s / t_rules, 1),
        "realtime_rules_from_audio_with_alignment": round(audio_s / t_align, 2),
        "realtime_learned_from_audio": round(audio_s / t_learned, 1),
        "render_fps_256px": round(render_fps, 1),
        "median_boundary_error_ms_aligned": round(1000 * float(np.median(np.concatenate(b_align))), 1),
        "median_boundary_error_ms_recognised": round(1000 * float(np.median(np.concatenate(b_rec))), 1),
        "lve_mm": {k: round(float(np.mean(v)), 2) for k, v in lve.items()},
        "learned_model": net.info,
    }
    print(f"{pairs} held-out sentence/voice pairs, {audio_s:.1f} s of speech")
    print(f"rule-based route from phones: {result['realtime_rules_from_phones']}x real time "
          f"(target >= 100x)")
    print(f"rule-based route from audio (forced alignment): {result['realtime_rules_from_audio_with_alignment']}x")
    print(f"learned route from audio: {result['realtime_learned_from_audio']}x; "
          f"mesh video {result['render_fps_256px']} frames/s at 256 px")
    print(f"median phone boundary error: {result['median_boundary_error_ms_aligned']} ms with transcript "
          f"(target <= 30), {result['median_boundary_error_ms_recognised']} ms without")
    print("lip vertex error (mm, mean of per-frame max over lip vertices): "
          + ", ".join(f"{k} {v}" for k, v in result["lve_mm"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
