"""Phones with timings from audio, offline, with pocketsphinx's bundled en-us models.

    align_transcript(audio, sr, "the transcript")  forced alignment (the words are known)
    recognize_phones(audio, sr)                    phone recognition (phone n-gram, no words)

Both return `espeak.Phone`s in ARPAbet ("AH", "P", "SIL") on the input audio's clock. Audio is
resampled to 16 kHz, padded with 0.3 s of quiet at both ends (the aligner's grammar starts and
ends in silence, and synthetic speech often starts on its first sample) and dithered (pure digital
silence has no log energy). Words missing from the CMU dictionary are added with espeak's
pronunciation mapped to ARPAbet.
"""
from __future__ import annotations

import os
import re
import threading

import numpy as np

from headcap.reconstruct.speech.espeak import Phone

__all__ = ["align_transcript", "recognize_phones", "to_16k", "SAMPLE_RATE"]

SAMPLE_RATE = 16000
PAD_S = 0.3
_LOCK = threading.Lock()

# espeak mnemonic prefix -> ARPAbet (longest prefix wins), for words the CMU dictionary lacks
_ESPEAK_ARPA = {
    "p": "P", "b": "B", "m": "M", "f": "F", "v": "V", "T": "TH", "D": "DH", "t": "T", "d": "D", "k": "K", "g": "G",
    "N": "NG", "tS": "CH", "dZ": "JH", "S": "SH", "Z": "ZH", "s": "S", "z": "Z", "n": "N", "l": "L", "@L": "L",
    "r": "R", "w": "W", "j": "Y", "h": "HH", "a": "AE", "aa": "AA", "A": "AA", "V": "AH", "aI": "AY", "aU": "AW",
    "@": "AH", "e": "EH", "E": "EH", "eI": "EY", "i": "IY", "I": "IH", "0": "AA", "O": "AO", "o": "OW", "oU": "OW",
    "OI": "OY", "u": "UW", "U": "UH", "3": "ER", "x": "K", "?": "T",
}
_ESPEAK_ARPA_KEYS = sorted(_ESPEAK_ARPA, key=len, reverse=True)


def to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float audio at 16 kHz (polyphase resampling)."""
    from math import gcd

    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate == SAMPLE_RATE:
        return audio
    g = gcd(SAMPLE_RATE, int(sample_rate))
    return resample_poly(audio, SAMPLE_RATE // g, int(sample_rate) // g)


def _pcm(audio: np.ndarray, sample_rate: int) -> bytes:
    a = to_16k(audio, sample_rate)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE))
    a = np.concatenate([pad, a, pad])
    a = a + np.random.default_rng(0).normal(0.0, 1e-4, len(a))
    return (np.clip(a, -1, 1) * 32767).astype(np.int16).tobytes()


def _model_dir() -> str:
    import pocketsphinx

    return os.path.join(pocketsphinx.get_model_path(), "en-us")


_DECODERS: dict = {}


def _decoder(**kw):
    """One pocketsphinx decoder per setting, kept for the process (loading the models is the slow
    part); callers hold _LOCK."""
    from pocketsphinx import Decoder

    key = tuple(sorted(kw.items()))
    if key not in _DECODERS:
        _DECODERS[key] = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **kw)
    return _DECODERS[key]


def _words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split() if w.strip("'")]


def _espeak_arpabet(word: str) -> str:
    """ARPAbet for a word outside the dictionary ("" without espeak: the word is left out)."""
    from headcap.reconstruct.speech.espeak import espeak_available, text_to_phones

    if not espeak_available():
        return ""

    out = []
    for phone in text_to_phones(word):
        s = phone.symbol.lstrip("'%=,")
        for key in _ESPEAK_ARPA_KEYS:
            if s.startswith(key):
                out.append(_ESPEAK_ARPA[key])
                break
    return " ".join(out)


def _frames_to_phones(items, offset: float) -> list[Phone]:
    phones = []
    for name, start, duration in items:
        a = max(0.0, start / 100.0 - offset)
        b = max(a, (start + duration) / 100.0 - offset)
        if b > a:
            phones.append(Phone(name, a, b))
    return phones


def align_transcript(audio: np.ndarray, sample_rate: int, text: str) -> list[Phone]:
    """Forced alignment of `text` to the audio: ARPAbet phones with start/end seconds."""
    words = _words(text)
    if not words:
        raise ValueError(f"transcript {text!r}: no words to align")
    pcm = _pcm(audio, sample_rate)
    with _LOCK:
        for beams in ({}, {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}):
            decoder = _decoder(bestpath=False, **beams)
            for w in set(words):
                if decoder.lookup_word(w) is None:
                    pron = _espeak_arpabet(w)
                    if pron:
                        decoder.add_word(w, pron, True)
            known = [w for w in words if decoder.lookup_word(w) is not None]
            decoder.set_align_text(" ".join(known))
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            if decoder.hyp() is None:
                continue
            try:
                decoder.set_alignment()
            except RuntimeError:
                continue
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            items = [(p.name, p.start, p.duration) for w in decoder.get_alignment() for p in w]
            return _frames_to_phones(items, PAD_S)
    raise ValueError(f"transcript {text[:80]!r}: pocketsphinx could not align it to the audio "
                     "(is it the right transcript?); run without --text for phone recognition")


def recognize_phones(audio: np.ndarray, sample_rate: int) -> list[Phone]:
    """Phone recognition with the en-us phone language model: ARPAbet phones with start/end seconds."""
    pcm = _pcm(audio, sample_rate)
    with _LOCK:
        decoder = _decoder(allphone=os.path.join(_model_dir(), "en-us-phone.lm.bin"), lm=None, lw=2.0,
                           beam=1e-20, pbeam=1e-20)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        items = [(seg.word, seg.start_frame, seg.end_frame - seg.start_frame + 1) for seg in decoder.seg()]
    return _frames_to_phones(items, PAD_S)
