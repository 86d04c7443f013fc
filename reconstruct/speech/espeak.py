"""Text to speech with phoneme timings through libespeak-ng (the `espeak-english` wheel's bundled
library, via ctypes), falling back to Debian's `espeak-ng` binary when the wheel is absent.

    synthesize("Hello there.", voice=Voice(rate=170, pitch=50)) -> Speech(audio, sample_rate, phones)

Phones come from espeak's own phoneme events (espeakEVENT_PHONEME, ASCII mnemonics such as
"h", "@", "l", "oU"), each with its start and end time in seconds on the audio's clock: this is the
ground truth that forced alignment and the learned model are scored against. espeak keeps its
state in globals, so one process-wide engine sits behind a lock. The library is the same one
`espeak_english.phonemes` uses; do not call both from different threads at once.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Voice", "Phone", "Speech", "synthesize", "text_to_phones", "espeak_available"]

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_PHONEME, EVENT_END, EVENT_MSG_TERMINATED = 0, 1, 7, 5, 6
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


@dataclass(frozen=True)
class Voice:
    """An espeak voice: language ("en-us" or "en"), words per minute, pitch and pitch range (0-100)."""

    language: str = "en-us"
    rate: int = 165
    pitch: int = 50
    range: int = 50

    @property
    def name(self) -> str:
        return f"{self.language}-r{self.rate}-p{self.pitch}-g{self.range}"


@dataclass(frozen=True)
class Phone:
    """One phone: symbol (espeak mnemonic or ARPAbet, see `phonemes`), start and end in seconds."""

    symbol: str
    start: float
    end: float


@dataclass
class Speech:
    audio: np.ndarray  # [N] float32 in [-1, 1]
    sample_rate: int
    phones: list[Phone]  # espeak mnemonics; pauses are "_"
    words: list[tuple[float, int, int]]  # (start s, text position, length) per word

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class _EspeakEvent(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_EspeakEvent))


class _Engine:
    """The one libespeak-ng instance, synchronous output, phoneme events on."""

    def __init__(self) -> None:
        from espeak_english import _espeak as bundle

        self.lock = threading.Lock()
        lib = ctypes.CDLL(str(bundle.library_path()))
        self._root = bundle._short_enough(bundle.data_path().parent)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._root).encode(), INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {bundle.data_path()}")
        self.sample_rate = int(rate)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        self.lib = lib
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str, int, int]] = []
        self._cb = _CALLBACK(self._collect)  # kept referenced
        lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            symbol = bytes(ev.id.string).split(b"\0")[0].decode("ascii", "replace") if ev.type == EVENT_PHONEME else ""
            self._events.append((ev.type, ev.sample, symbol, ev.text_position, ev.length))
            i += 1
        return 0

    def synth(self, text: str, voice: Voice):
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.language.encode()) != 0:
                raise ValueError(f"espeak voice: language {voice.language!r} not available (en-us, en)")
            for param, value in ((PARAM_RATE, voice.rate), (PARAM_PITCH, voice.pitch), (PARAM_RANGE, voice.range),
                                 (PARAM_VOLUME, 100)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data)
            err = self.lib.espeak_Synth(ctypes.cast(buf, ctypes.c_void_p), len(data), 0, 0, 0, CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed ({err}) for {text[:60]!r}")
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return audio, list(self._events)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine | None:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            try:
                _ENGINE = _Engine()
            except ImportError:
                return None
        return _ENGINE


def espeak_available() -> bool:
    return _engine() is not None or shutil.which("espeak-ng") is not None


def _phones_from_events(events, n_samples: int, sample_rate: int) -> tuple[list[Phone], list[tuple[float, int, int]]]:
    starts = [(s, sym) for kind, s, sym, _, _ in events if kind == EVENT_PHONEME and sym]
    words = [(s / sample_rate, pos, length) for kind, s, _, pos, length in events if kind == EVENT_WORD]
    phones = []
    for i, (s, sym) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else n_samples
        if end > s:
            phones.append(Phone(sym, s / sample_rate, end / sample_rate))
    return phones, words


def synthesize(text: str, voice: Voice = Voice(), backend: str = "auto") -> Speech:
    """Speak `text`; audio plus espeak's own phone timings (module docstring). backend: "library"
    (libespeak-ng from the espeak-english wheel), "cli" (Debian's espeak-ng binary) or "auto"."""
    if not text or not text.strip():
        raise ValueError("synthesize: field 'text' is empty")
    if backend not in ("auto", "library", "cli"):
        raise ValueError(f"synthesize: backend {backend!r}: expected auto, library or cli")
    engine = _engine() if backend != "cli" else None
    if engine is None and backend == "library":
        raise RuntimeError("synthesize: the espeak-english wheel is not installed (pip install espeak-english)")
    if engine is None:
        return _synthesize_cli(text, voice)
    raw, events = engine.synth(text, voice)
    phones, words = _phones_from_events(events, len(raw), engine.sample_rate)
    return Speech(raw.astype(np.float32) / 32768.0, engine.sample_rate, phones, words)


def _synthesize_cli(text: str, voice: Voice) -> Speech:
    """Debian's espeak-ng binary: the wav and the phone mnemonics (-x); the binary reports no
    times, so phones are spread over the audible part in equal shares (coarser than the library)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("speech synthesis needs the espeak-english wheel (pip install espeak-english) "
                           "or Debian's espeak-ng (apt-get install espeak-ng)")
    from headcap.reconstruct.speech.audio import read_wav
    from headcap.reconstruct.speech.phonemes import split_espeak_word

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        args = [exe, "-v", voice.language, "-s", str(voice.rate), "-p", str(voice.pitch), "-x", "-w", str(wav),
                "--", text]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
        audio, sr = read_wav(wav)
    seq = [p for w in out.split() for p in split_espeak_word(w)]
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    t0, t1 = (loud[0] / sr, loud[-1] / sr) if len(loud) else (0.0, len(audio) / sr)
    edges = np.linspace(t0, t1, len(seq) + 1)
    phones = [Phone(p, float(a), float(b)) for p, a, b in zip(seq, edges[:-1], edges[1:])]
    return Speech(audio.astype(np.float32), sr, phones, [])


def text_to_phones(text: str, voice: Voice = Voice()) -> list[Phone]:
    """espeak's phones for `text` with its nominal timings (the audio is made and dropped)."""
    return synthesize(text, voice).phones
