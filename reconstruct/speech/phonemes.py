"""Phone symbols to visemes, and visemes to ARKit-named expression targets.

Two phone alphabets meet here: espeak-ng's ASCII mnemonics (what `espeak.synthesize` reports:
"p", "@2", "aI", "_:") and CMU ARPAbet (what pocketsphinx and cmudict use: "P", "AH", "AY", "SIL").
Both map onto one set of visemes (the 15 of the MPEG-4 / Oculus lip-sync tradition plus a schwa
and an r-coloured vowel); a viseme is a mouth shape written as ARKit blendshape weights, with a
dominance (how strongly it resists its neighbours, Cohen & Massaro 1993) and a dominance decay.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Viseme", "VISEMES", "viseme_of", "split_espeak_word", "ARKIT_NAMES", "DRIVEN_NAMES"]

ARKIT_NAMES = [
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight", "tongueOut",
]
"""The 52 ARKit face blendshape names (Apple's ARFaceAnchor.BlendShapeLocation), alphabetical."""


@dataclass(frozen=True)
class Viseme:
    name: str
    targets: dict  # ARKit name (symmetric names without Left/Right get both sides) -> weight
    dominance: float  # alpha: how much the shape wins over its neighbours
    decay: float  # theta (1/s): how fast the dominance falls off outside the phone
    bilabial: bool = False  # the lips must meet (closure enforced at the phone's centre)


def _sym(**weights) -> dict:
    out = {}
    for name, w in weights.items():
        if name in ("mouthPress", "mouthStretch", "mouthSmile", "mouthUpperUp", "mouthLowerDown", "mouthDimple",
                    "cheekSquint", "mouthFrown", "noseSneer"):
            out[name + "Left"] = out[name + "Right"] = w
        else:
            out[name] = w
    return out


VISEMES: dict[str, Viseme] = {v.name: v for v in [
    Viseme("sil", {}, 0.45, 18.0),
    Viseme("PP", _sym(jawOpen=0.03, mouthPress=0.35, mouthRollLower=0.12, mouthRollUpper=0.08), 1.0, 45.0, True),
    Viseme("FF", _sym(jawOpen=0.08, mouthRollLower=0.55, mouthUpperUp=0.22, mouthShrugUpper=0.1), 0.9, 40.0),
    Viseme("TH", _sym(jawOpen=0.14, tongueOut=0.25, mouthStretch=0.1), 0.5, 35.0),
    Viseme("DD", _sym(jawOpen=0.16, mouthStretch=0.12), 0.35, 30.0),
    Viseme("kk", _sym(jawOpen=0.22, mouthStretch=0.1), 0.3, 30.0),
    Viseme("CH", _sym(jawOpen=0.14, mouthFunnel=0.5, mouthPucker=0.22, mouthUpperUp=0.15, mouthLowerDown=0.1), 0.8, 35.0),
    Viseme("SS", _sym(jawOpen=0.06, mouthStretch=0.25, mouthSmile=0.15), 0.55, 35.0),
    Viseme("nn", _sym(jawOpen=0.15, mouthStretch=0.06), 0.3, 30.0),
    Viseme("RR", _sym(jawOpen=0.12, mouthPucker=0.35, mouthFunnel=0.22), 0.6, 30.0),
    Viseme("HH", _sym(jawOpen=0.2), 0.08, 30.0),
    Viseme("aa", _sym(jawOpen=0.55, mouthLowerDown=0.25, mouthStretch=0.08), 0.6, 22.0),
    Viseme("ax", _sym(jawOpen=0.3, mouthLowerDown=0.1), 0.35, 25.0),
    Viseme("E", _sym(jawOpen=0.36, mouthStretch=0.25, mouthSmile=0.15, mouthLowerDown=0.15), 0.55, 22.0),
    Viseme("ih", _sym(jawOpen=0.18, mouthSmile=0.35, mouthStretch=0.3), 0.55, 22.0),
    Viseme("oh", _sym(jawOpen=0.42, mouthFunnel=0.45, mouthPucker=0.2), 0.65, 22.0),
    Viseme("ou", _sym(jawOpen=0.12, mouthPucker=0.65, mouthFunnel=0.35), 0.8, 25.0),
    Viseme("ER", _sym(jawOpen=0.2, mouthFunnel=0.3, mouthPucker=0.22), 0.55, 25.0),
]}

DRIVEN_NAMES = sorted({k for v in VISEMES.values() for k in v.targets} | {"mouthClose"},
                      key=ARKIT_NAMES.index)
"""The ARKit channels speech drives (the learned model predicts exactly these)."""

_ARPABET = {
    "AA": "aa", "AE": "aa", "AH": "ax", "AW": "aa", "AY": "aa", "EH": "E", "EY": "E", "IH": "ih", "IY": "ih",
    "Y": "ih", "AO": "oh", "OW": "oh", "OY": "oh", "UH": "ou", "UW": "ou", "W": "ou", "ER": "ER", "R": "RR",
    "B": "PP", "M": "PP", "P": "PP", "F": "FF", "V": "FF", "TH": "TH", "DH": "TH", "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH", "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn", "HH": "HH", "SIL": "sil",
}

# espeak-ng English mnemonics (phsource/ph_english): longest prefix wins
_ESPEAK = {
    "p": "PP", "b": "PP", "m": "PP", "f": "FF", "v": "FF", "T": "TH", "D": "TH", "t": "DD", "d": "DD", "?": "DD",
    "k": "kk", "g": "kk", "x": "kk", "N": "kk", "tS": "CH", "dZ": "CH", "S": "CH", "Z": "CH", "s": "SS", "z": "SS",
    "n": "nn", "l": "nn", "@L": "nn", "r": "RR", "w": "ou", "j": "ih", "h": "HH",
    "a": "aa", "A": "aa", "V": "aa", "aI": "aa", "aU": "aa", "@": "ax", "e": "E", "E": "E", "eI": "E",
    "i": "ih", "I": "ih", "0": "oh", "O": "oh", "o": "oh", "oU": "oh", "OI": "oh", "u": "ou", "U": "ou",
    "3": "ER", "_": "sil", "|": "sil", ";": "HH",
}
_ESPEAK_KEYS = sorted(_ESPEAK, key=len, reverse=True)


def viseme_of(symbol: str, alphabet: str = "espeak") -> str:
    """The viseme name of a phone: `alphabet` "espeak" (mnemonics; "D" is the th of "this") or
    "arpabet" (stress digits ignored; "D" is d). "sil" for pauses and noise; ValueError for a
    symbol the alphabet does not have."""
    s = symbol.strip()
    if alphabet == "arpabet":
        arpa = re.sub(r"[0-2]$", "", s.upper())
        if arpa in _ARPABET:
            return _ARPABET[arpa]
        if s.startswith("+") or s.startswith("<") or s.startswith("["):
            return "sil"
        raise ValueError(f"phone symbol {symbol!r}: not an ARPAbet phone")
    if alphabet != "espeak":
        raise ValueError(f"phone alphabet {alphabet!r}: expected 'espeak' or 'arpabet'")
    s = s.lstrip("'%=,")
    for key in _ESPEAK_KEYS:
        if s.startswith(key):
            return _ESPEAK[key]
    raise ValueError(f"phone symbol {symbol!r}: not an espeak-ng mnemonic")


def split_espeak_word(word: str) -> list[str]:
    """Split an `espeak-ng -x` word ("h@l'oU") into mnemonics by longest match."""
    out, i = [], 0
    word = word.replace("'", "").replace(",", "").replace("=", "")
    while i < len(word):
        for key in _ESPEAK_KEYS:
            if word.startswith(key, i):
                j = i + len(key)
                while j < len(word) and word[j] in ":#-0123456789" and not word.startswith("0", j) or (
                        j < len(word) and word[j] == ":"):
                    j += 1
                out.append(word[i:j])
                i = j
                break
        else:
            i += 1
    return out
