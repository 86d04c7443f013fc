"""Audio (+ optional transcript) -> ARKit expression curves -> files for a head: the library side
of `headcap speak` (headcap/commands/speak.py).

Routes:
- "rules": phones from pocketsphinx (forced alignment with a transcript, phone recognition
  without), visemes blended by dominance (animate.py);
- "learned": the audio-to-expression network (model.py) on the log-mel of the audio.
Both get the same seeded idle motion (blinks, head motion).

Outputs in `out`: expression.npz (expression [T, Ne] over the head's expression_names,
expression_names, fps, head_rotation [T, 3], arkit_expression [T, 52], arkit_names),
phones.json (the phones and their times; rules route), speech.glb (the head with the clip
"speech"), speech.mp4 (H.264 + AAC) and speech.wav (the audio as used).
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.reconstruct.speech.animate import SpeechAnimation, add_idle, frame_count, phones_to_curves, retarget

__all__ = ["animate_audio", "speak", "SpeakResult", "write_speech_glb"]


@dataclass
class SpeakResult:
    animation: SpeechAnimation
    expression: np.ndarray  # [T, Ne] for the puppet
    expression_names: list[str]
    matched: list[str]
    phones: list
    files: dict
    seconds: dict


def animate_audio(audio: np.ndarray, sample_rate: int, text: str | None = None, method: str = "rules",
                  fps: float = 30.0, seed: int = 0, weights: str | Path | None = None, idle: bool = True):
    """(SpeechAnimation, phones) for the audio; phones are ARPAbet (empty for "learned")."""
    duration = len(audio) / sample_rate
    n = frame_count(duration, fps)
    phones = []
    if method == "rules":
        from headcap.reconstruct.speech.align import align_transcript, recognize_phones

        phones = align_transcript(audio, sample_rate, text) if text else recognize_phones(audio, sample_rate)
        expr = phones_to_curves(phones, "arpabet", fps, n)
    elif method == "learned":
        from headcap.reconstruct.speech.model import load_model, predict_curves

        expr = predict_curves(load_model(weights), audio, sample_rate, fps, n)
    else:
        raise ValueError(f"--method {method!r}: expected 'rules' or 'learned'")
    if idle:
        return add_idle(expr, fps, seed), phones
    return SpeechAnimation(expr, fps, np.zeros((n, 3))), phones


def _sequence(puppet, expression: np.ndarray, head_rot: np.ndarray, fps: float):
    from headcap.avatar.export.sequence import HeadSequence

    model = puppet.model
    t = len(expression)
    joints = np.zeros((t, model.num_joints, 3))
    pose = np.tile(np.eye(4), (t, 1, 1))
    if "head" in model.joint_names:
        joints[:, model.joint_names.index("head")] = head_rot
    else:
        from scipy.spatial.transform import Rotation

        pose[:, :3, :3] = Rotation.from_rotvec(head_rot).as_matrix()
    ident = np.zeros(model.num_identity)
    if puppet.avatar is not None:
        ident = puppet.avatar.identity.double().numpy()
    return HeadSequence(ident, expression, list(model.expression_names), joints, list(model.joint_names), pose,
                        np.arange(t) / fps)


def write_speech_glb(puppet, path: Path, expression: np.ndarray, head_rot: np.ndarray, fps: float) -> Path:
    """A .glb of the head with the speech as an animation clip: a head model is exported by
    avatar.export.gltf.export_head_glb (clip "sequence"); an input .glb is copied with one clip
    "speech" added (morph weights of its mesh node, rotation of its "head" node when present)."""
    if puppet.model is not None:
        from headcap.avatar.export.gltf import export_head_glb

        export_head_glb(puppet.model, path, sequence=_sequence(puppet, expression, head_rot, fps), name="headcap_speech")
        return path
    from headcap.avatar.export.glb import GltfBuilder, read_glb, write_glb_bytes
    from headcap.avatar.export.gltf import _continuous, axis_angle_to_quat

    doc, binary = read_glb(puppet.glb_path)
    builder = GltfBuilder()
    # continue the file's own binary chunk: new accessors are appended after it
    builder.doc, builder._chunks, builder._length = doc, [bytes(binary)], len(binary)
    mesh_node = next(i for i, n in enumerate(doc["nodes"]) if n.get("mesh") == 0)
    times = builder.accessor((np.arange(len(expression)) / fps).astype(np.float32), min_max=True)
    samplers, channels = [], []
    num_targets = len(doc["meshes"][0]["primitives"][0].get("targets") or [])
    weights = np.zeros((len(expression), num_targets), np.float32)
    weights[:, :expression.shape[1]] = expression
    samplers.append({"input": times, "output": builder.accessor(weights.reshape(-1)), "interpolation": "LINEAR"})
    channels.append({"sampler": 0, "target": {"node": mesh_node, "path": "weights"}})
    head = [i for i, n in enumerate(doc["nodes"]) if n.get("name") == "head"]
    if head:
        quats = _continuous(axis_angle_to_quat(head_rot)).astype(np.float32)
        samplers.append({"input": times, "output": builder.accessor(quats), "interpolation": "LINEAR"})
        channels.append({"sampler": 1, "target": {"node": head[0], "path": "rotation"}})
    doc.setdefault("animations", []).append({"name": "speech", "samplers": samplers, "channels": channels})
    write_glb_bytes(path, builder.glb())
    return path


def speak(avatar: str, audio_path: str | Path, out: str | Path, text: str | None = None, method: str = "rules",
          fps: int = 30, size: int = 256, seed: int = 0, video: bool = True, weights: str | Path | None = None,
          log=print) -> SpeakResult:
    """Everything `headcap speak` writes (module docstring)."""
    from headcap.core.fileio import atomic_write_bytes, write_json
    from headcap.reconstruct.speech.audio import read_audio, write_wav
    from headcap.reconstruct.speech.render import load_puppet, render_frames
    from headcap.reconstruct.speech.video import write_mp4

    if not 1 <= fps <= 120:
        raise ValueError(f"--fps {fps}: expected 1..120")
    if size < 16 or size > 2048 or size % 2:
        raise ValueError(f"--size {size}: expected an even number of pixels in 16..2048")
    seconds = {}
    t0 = time.perf_counter()
    audio, rate = read_audio(audio_path)
    puppet = load_puppet(avatar)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    anim, phones = animate_audio(audio, rate, text, method, float(fps), seed, weights)
    seconds["animate"] = time.perf_counter() - t1
    expression, matched = retarget(anim, puppet.expression_names)
    files = {"expression": out / "expression.npz"}
    buf = io.BytesIO()  # plain arrays only (no pickle), written atomically
    np.savez(buf, expression=expression.astype(np.float32), expression_names=np.array(puppet.expression_names),
             fps=np.float64(fps), head_rotation=anim.head_rotation.astype(np.float32),
             arkit_expression=anim.expression.astype(np.float32), arkit_names=np.array(anim.expression_names))
    atomic_write_bytes(files["expression"], buf.getvalue())
    if phones:
        files["phones"] = out / "phones.json"
        write_json(files["phones"], {"alphabet": "arpabet", "source": "forced alignment" if text else "phone recognition",
                                     "phones": [{"symbol": p.symbol, "start": round(p.start, 4), "end": round(p.end, 4)}
                                                for p in phones]})
    files["glb"] = write_speech_glb(puppet, out / "speech.glb", expression, anim.head_rotation, fps)
    files["wav"] = out / "speech.wav"
    write_wav(files["wav"], audio, rate)
    if video:
        t2 = time.perf_counter()
        files["mp4"] = write_mp4(out / "speech.mp4", render_frames(puppet, expression, anim.head_rotation, size), fps,
                                 audio, rate)
        seconds["video"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return SpeakResult(anim, expression, list(puppet.expression_names), matched, phones, files, seconds)
