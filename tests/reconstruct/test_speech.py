"""Speech-driven animation (#17) against known truth: espeak's own phone timings on synthetic
speech, lip vertex error against the motion those timings define, mp4 sync, and `headcap speak`."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from headcap.reconstruct.speech.animate import add_idle, frame_count, idle_motion, phones_to_curves, retarget
from headcap.reconstruct.speech.corpus import HELD_OUT_SENTENCES, HELD_OUT_VOICES, training_sentences
from headcap.reconstruct.speech.espeak import Voice, synthesize
from headcap.reconstruct.speech.phonemes import ARKIT_NAMES, DRIVEN_NAMES, viseme_of

FPS = 30
J = ARKIT_NAMES.index


@functools.lru_cache(maxsize=1)
def _head():
    from headcap.reconstruct.head_loaders import load_head_model

    return load_head_model("default", dtype=torch.float64)


@functools.lru_cache(maxsize=1)
def _held_out():
    """Three held-out sentences, each in a different held-out voice: speech, forced alignment,
    phone recognition (computed once; alignment is the slow part)."""
    from headcap.reconstruct.speech.align import align_transcript, recognize_phones

    out = []
    for text, voice in zip(HELD_OUT_SENTENCES[:3], HELD_OUT_VOICES):
        speech = synthesize(text, voice)
        out.append((text, speech, align_transcript(speech.audio, speech.sample_rate, text),
                    recognize_phones(speech.audio, speech.sample_rate)))
    return out


def test_espeak_phone_timings_library_and_binary():
    speech = synthesize("Bob blew bubbles by the blue pool.", Voice(rate=170, pitch=40))
    assert speech.sample_rate == 22050 and 1.0 < speech.duration < 4.0
    starts = np.array([p.start for p in speech.phones])
    assert (np.diff(starts) > 0).all() and starts[-1] < speech.duration
    assert all(p.end > p.start for p in speech.phones)
    visemes = [viseme_of(p.symbol) for p in speech.phones]
    assert visemes.count("PP") == 8  # Bob, blew, bubbles, by, blue, pool
    # a phone is voiced where espeak says: the audio around a vowel's centre is louder than around the final pause
    vowel = next(p for p in speech.phones if viseme_of(p.symbol) == "ou")
    mid = int((vowel.start + vowel.end) / 2 * speech.sample_rate)
    assert np.abs(speech.audio[mid - 200:mid + 200]).mean() > 0.02
    # faster voice, shorter audio
    assert synthesize("Bob blew bubbles by the blue pool.", Voice(rate=260)).duration < 0.8 * speech.duration
    # Debian's espeak-ng binary (the fallback without the wheel): same phones, a wav
    cli = synthesize("Bob blew bubbles by the blue pool.", backend="cli")
    assert cli.sample_rate == 22050 and cli.duration > 1.0
    lib_vis = [v for v in visemes if v != "sil"]
    cli_vis = [viseme_of(p.symbol) for p in cli.phones]
    assert cli_vis.count("PP") == 8 and abs(len(cli_vis) - len(lib_vis)) <= 3
    with pytest.raises(ValueError, match="empty"):
        synthesize("  ")


def test_training_and_held_out_data_are_disjoint():
    train = training_sentences(200, seed=0)
    assert train == training_sentences(200, seed=0)
    assert not {s.lower() for s in train} & {s.lower() for s in HELD_OUT_SENTENCES}
    from headcap.reconstruct.speech.corpus import TRAIN_VOICES

    assert not set(TRAIN_VOICES) & set(HELD_OUT_VOICES)


def test_phone_boundaries_from_audio_match_espeak():
    """Median |start time error| of the phones found in the audio vs espeak's own (issue: <= 30 ms
    with a transcript); measured 14 ms aligned, 18 ms recognised (docs/speech.md)."""
    from headcap.reconstruct.speech.metrics import boundary_errors

    aligned, recognised, counts = [], [], []
    for _, speech, al, rec in _held_out():
        e = boundary_errors(speech.phones, "espeak", al, "arpabet")
        counts.append(len(e) / sum(viseme_of(p.symbol) != "sil" for p in speech.phones))
        aligned.append(e)
        recognised.append(boundary_errors(speech.phones, "espeak", rec, "arpabet"))
    assert min(counts) > 0.8  # nearly every phone is paired
    assert np.median(np.concatenate(aligned)) <= 0.030
    assert np.median(np.concatenate(recognised)) <= 0.040


def test_visemes_coarticulation_closure_and_idle():
    speech = synthesize("Bob met Pam, who moved.", Voice())
    n = frame_count(speech.duration, FPS)
    curves = phones_to_curves(speech.phones, "espeak", FPS, n)
    assert curves.shape == (n, 52) and curves.min() >= 0 and curves.max() <= 1
    t = np.arange(n) / FPS
    for p in speech.phones:
        k = int(np.argmin(np.abs(t - (p.start + p.end) / 2)))
        if viseme_of(p.symbol) == "PP":  # bilabials close the lips, even a short /p/ between frames
            assert curves[k, J("jawOpen")] <= 0.05 and curves[k, J("mouthPressLeft")] > 0.2
        if viseme_of(p.symbol) == "aa" and p.end - p.start > 0.06:
            assert curves[k, J("jawOpen")] > 0.3
    # anticipatory rounding: the lips pucker before the /u:/ of "who" starts
    u = next(p for p in speech.phones if viseme_of(p.symbol) == "ou")
    before = np.flatnonzero((t > u.start - 0.08) & (t < u.start))
    assert curves[before, J("mouthPucker")].max() > 0.15
    # silence relaxes the face (half a second after the last phone)
    assert phones_to_curves(speech.phones, "espeak", FPS, n + 15)[-1, J("jawOpen")] < 0.02
    # idle motion: seeded, blinks every few seconds, head moves a little
    blink, rot = idle_motion(300, FPS, seed=3)
    blink2, rot2 = idle_motion(300, FPS, seed=3)
    assert np.array_equal(blink, blink2) and np.array_equal(rot, rot2)
    onsets = np.flatnonzero((blink[1:] > 0.9) & (blink[:-1] <= 0.9))
    assert 1 <= len(onsets) <= 6
    assert 0.002 < np.abs(rot).max() < np.radians(4)
    anim = add_idle(curves, FPS, seed=0)
    assert np.array_equal(anim.expression[:, J("jawOpen")], curves[:, J("jawOpen")])
    # retargeting by name: unknown names stay 0, missing ones are dropped
    expr, matched = retarget(anim, ["jawOpen", "EyeBlink_L", "mouthClose", "browInnerUpLeft"])
    assert matched == ["jawOpen", "mouthClose", "browInnerUpLeft"] and np.array_equal(expr[:, 1], np.zeros(n))
    assert np.array_equal(expr[:, 0], anim.expression[:, J("jawOpen")])
    with pytest.raises(ValueError, match="ARKit"):
        retarget(anim, ["AU26", "AU12"])


def test_lip_vertex_error_rules_and_learned():
    """LVE (mm) on held-out sentences and voices against the motion espeak's timings define."""
    from headcap.reconstruct.speech.metrics import lip_vertex_error, lip_vertex_ids
    from headcap.reconstruct.speech.model import DEFAULT_WEIGHTS, load_model, predict_curves

    model = _head()
    ids = lip_vertex_ids(model)
    assert 100 < len(ids) < 2000
    net = load_model()
    assert DEFAULT_WEIGHTS.stat().st_size < 5e6 and net.info["held_out_curve_l1"] < 0.05
    rules, rules_no_text, learned, still = [], [], [], []
    for _, speech, aligned, recognised in _held_out():
        n = frame_count(speech.duration, FPS)
        truth = phones_to_curves(speech.phones, "espeak", FPS, n)
        rules.append(lip_vertex_error(model, phones_to_curves(aligned, "arpabet", FPS, n), truth, ids))
        rules_no_text.append(lip_vertex_error(model, phones_to_curves(recognised, "arpabet", FPS, n), truth, ids))
        learned.append(lip_vertex_error(model, predict_curves(net, speech.audio, speech.sample_rate, FPS, n), truth, ids))
        still.append(lip_vertex_error(model, np.zeros_like(truth), truth, ids))
    rules, rules_no_text, learned, still = map(np.mean, (rules, rules_no_text, learned, still))
    assert rules < 3.0 and rules < 0.4 * still
    assert rules_no_text < 5.0
    assert learned < 4.0 and learned < 0.45 * still


def test_mp4_audio_video_sync():
    """A click in the audio at frame 14's time and the jaw dropping at frame 14: decoded back,
    the two events are within one frame, and the video is as long as the audio."""
    from headcap.reconstruct.speech.render import load_puppet, render_frames
    from headcap.reconstruct.speech.video import read_mp4_info, write_mp4

    puppet = load_puppet("default")
    n, at, rate = 24, 14, 16000
    expr = np.zeros((n, len(puppet.expression_names)))
    expr[at:, puppet.expression_names.index("jawOpen")] = 0.9
    audio = np.random.default_rng(0).normal(0, 0.002, int(n / FPS * rate))
    audio[int(at / FPS * rate):int(at / FPS * rate) + 160] += 0.8
    path = write_mp4(__import__("tempfile").mkdtemp() + "/sync.mp4",
                     render_frames(puppet, expr, np.zeros((n, 3)), size=64), FPS, audio, rate)
    info = read_mp4_info(path)
    assert info["codecs"] == {"video": "h264", "audio": "aac"} and len(info["frames"]) == n
    frames = np.stack(info["frames"]).astype(float)
    change = np.abs(frames - frames[0]).mean(axis=(1, 2, 3))
    video_event = info["video_times"][np.flatnonzero(change > 0.5 * change.max())[0]]
    decoded = info["audio"]
    audio_event = info["audio_start"] + np.flatnonzero(np.abs(decoded) > 0.3)[0] / info["sample_rate"]
    assert abs(video_event - audio_event) <= 1.0 / FPS
    assert abs(video_event - at / FPS) < 1e-6
    assert abs(info["video_duration"] - len(audio) / rate) <= 1.0 / FPS
    assert abs(info["audio_duration"] - len(audio) / rate) <= 1024 / rate  # one AAC frame of padding at most


def test_headcap_speak_end_to_end(tmp_path):
    from headcap.avatar.export.glb import read_glb
    from headcap.avatar.export.gltf import vertex_layout
    from headcap.avatar.export.gltf_eval import evaluate_mesh_nodes
    from headcap.cli import main
    from headcap.core.fileio import read_json, read_npz
    from headcap.reconstruct.speech.audio import write_wav
    from headcap.reconstruct.speech.video import read_mp4_info

    text = "Bob ate a blue apple."
    speech = synthesize(text, HELD_OUT_VOICES[0])
    wav = tmp_path / "line.wav"
    write_wav(wav, speech.audio, speech.sample_rate)
    out = tmp_path / "out"
    assert main(["speak", "default", "--audio", str(wav), "--text", text, "--out", str(out), "--size", "64"]) == 0
    n = frame_count(len(speech.audio) / speech.sample_rate, FPS)
    data = read_npz(out / "expression.npz")
    model = _head()
    assert data["expression"].shape == (n, 52) and list(data["expression_names"]) == model.expression_names
    assert float(np.asarray(data["fps"]).reshape(-1)[0]) == FPS and data["head_rotation"].shape == (n, 3)
    phones = read_json(out / "phones.json")["phones"]
    assert [p["symbol"] for p in phones if p["symbol"] != "SIL"][:3] == ["B", "AA", "B"]
    # the glTF clip reproduces the head model's motion at a keyframe (spec-level reader)
    doc, binary = read_glb(out / "speech.glb")
    k = n // 2
    verts = evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0]
    rot = torch.zeros(1, model.num_joints, 3, dtype=torch.float64)
    rot[0, model.joint_names.index("head")] = torch.from_numpy(data["head_rotation"][k].astype(np.float64))
    want = model.forward(expression=torch.from_numpy(data["expression"][k:k + 1].astype(np.float64)),
                         joint_rotations=rot).vertices[0].numpy()[vertex_layout(model).vertex_map]
    assert np.abs(verts - want).max() < 1e-4
    info = read_mp4_info(out / "speech.mp4")
    assert len(info["frames"]) == n and info["codecs"]["audio"] == "aac"
    assert abs(info["video_duration"] - speech.duration) <= 1.0 / FPS
    # an exported .glb as AVATAR, learned route: the clip "speech" is added to a copy
    out2 = tmp_path / "out2"
    assert main(["speak", str(out / "speech.glb"), "--audio", str(wav), "--method", "learned", "--out", str(out2),
                 "--no-video"]) == 0
    doc2, binary2 = read_glb(out2 / "speech.glb")
    assert [a["name"] for a in doc2["animations"]] == ["sequence", "speech"]
    verts2 = evaluate_mesh_nodes(doc2, binary2, animation=1, key=k)[0]
    assert verts2.shape == verts.shape and np.isfinite(verts2).all()
    learned = read_npz(out2 / "expression.npz")["expression"]
    assert learned.shape[0] == n and learned[:, model.expression_names.index("jawOpen")].max() > 0.2
    # bad input: exit 2
    assert main(["speak", "default", "--audio", str(tmp_path / "missing.wav"), "--out", str(out)]) == 2
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    assert main(["speak", "default", "--audio", str(tmp_path / "bad.wav"), "--out", str(out)]) == 2


def test_driven_channels_are_arkit():
    assert len(ARKIT_NAMES) == 52 and set(DRIVEN_NAMES) <= set(ARKIT_NAMES)
    assert {"jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft"} <= set(DRIVEN_NAMES)


def test_speak_drives_a_gaussian_avatar_folder(tmp_path):
    """AVATAR may be a Gaussian avatar folder (avatar/ of `headcap run`, or `headcap avatar
    train`): the mp4 shows its Gaussians, and the mouth moves where the jaw opens."""
    from headcap.avatar.gaussian_avatar import GaussianAvatar, save_avatar
    from headcap.cli import main
    from headcap.core.fileio import read_npz
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.speech.audio import write_wav
    from headcap.reconstruct.speech.video import read_mp4_info

    model = load_head_model("default")
    avatar = GaussianAvatar.initialise(model, "default", sh_degree=0, scale=0.8)
    avatar_dir = tmp_path / "avatar"
    save_avatar(avatar_dir, avatar)
    text = "Papa, open up."
    speech = synthesize(text, HELD_OUT_VOICES[0])
    wav = tmp_path / "line.wav"
    write_wav(wav, speech.audio, speech.sample_rate)
    out = tmp_path / "out"
    assert main(["speak", str(avatar_dir), "--audio", str(wav), "--text", text, "--out", str(out),
                 "--size", "96"]) == 0
    n = frame_count(len(speech.audio) / speech.sample_rate, FPS)
    info = read_mp4_info(out / "speech.mp4")
    assert len(info["frames"]) == n and info["codecs"]["audio"] == "aac"
    import imageio.v3 as iio

    frames = iio.imread(out / "speech.mp4", plugin="pyav").astype(np.float64)
    jaw = read_npz(out / "expression.npz")["expression"][:, model.expression_names.index("jawOpen")]
    open_, shut = int(np.argmax(jaw)), int(np.argmin(jaw))
    assert jaw[open_] > 0.2 and frames[open_].std() > 5  # the avatar is drawn
    assert np.abs(frames[open_] - frames[shut]).mean() > 0.5, "the avatar's face does not move with the jaw"
