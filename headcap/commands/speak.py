"""`headcap speak AVATAR --audio WAV [--text "..."] --out DIR`: make the head speak, lips in sync.

AVATAR: a head model spec (default | ict:PATH | flame:PATH | npz:PATH), a .glb from `headcap
export`, or a Gaussian avatar folder. Writes expression.npz (ARKit-named curves retargeted onto the
head's expressions), phones.json, speech.glb (the head with the speech as an animation clip),
speech.wav and speech.mp4 (H.264 + AAC). See docs/speech.md.
"""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "speak", help="animate a head from an audio file (lip sync, blinks, head motion): curves, glTF clip, mp4",
        description="Phones from the audio (pocketsphinx forced alignment with --text, phone recognition without) "
                    "become visemes blended with coarticulation into ARKit-named expression curves (or a small "
                    "network maps the audio straight to curves: --method learned), plus blinks and head motion. "
                    "Offline; English.")
    parser.add_argument("avatar", metavar="AVATAR",
                        help="head model spec (default | ict:PATH | flame:PATH | npz:PATH), an exported .glb, "
                             "or a Gaussian avatar folder")
    parser.add_argument("--audio", type=Path, required=True, metavar="WAV", help="speech audio (.wav, or any "
                        "format FFmpeg decodes)")
    parser.add_argument("--text", default=None, help="transcript of the audio (better timing: forced alignment)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--method", choices=("rules", "learned"), default="rules",
                        help="rules: phones -> visemes; learned: the audio-to-expression network (default: rules)")
    parser.add_argument("--fps", type=int, default=30, help="animation and video frame rate (default: 30)")
    parser.add_argument("--size", type=int, default=256, help="video width and height in pixels (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the idle motion (default: 0)")
    parser.add_argument("--no-video", action="store_true", help="skip the mp4")
    parser.add_argument("--weights", type=Path, default=None, help="learned model weights (default: the shipped ones)")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from headcap.reconstruct.speech.speak import speak

    if not args.audio.is_file():
        raise ValueError(f"--audio {args.audio}: no such file")
    if args.text is not None and not args.text.strip():
        raise ValueError("--text: empty transcript (leave it out for phone recognition)")
    result = speak(args.avatar, args.audio, args.out, text=args.text, method=args.method, fps=args.fps,
                   size=args.size, seed=args.seed, video=not args.no_video, weights=args.weights)
    t = result.expression.shape[0]
    print(f"{t} frames at {args.fps} fps ({t / args.fps:.2f} s), {len(result.matched)} of "
          f"{len(result.expression_names)} head expressions driven; "
          f"animation {result.seconds['animate']:.2f} s, total {result.seconds['total']:.1f} s")
    for kind, path in result.files.items():
        print(f"  {kind}: {path}")
    return 0
