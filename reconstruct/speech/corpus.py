"""Paired speech/motion data we make ourselves: espeak speaks sentences in many voices, and the
face moves from espeak's own phone timings through the rule-based route (animate.phones_to_curves),
so audio and motion are known exactly.

Training sentences are random word strings from a vocabulary of common English words (seeded);
held-out sentences are Harvard sentences (IEEE 1969), none of which is a training string; held-out
voices use rates and pitches no training voice has.
"""
from __future__ import annotations

import numpy as np

from headcap.reconstruct.speech.espeak import Voice

__all__ = ["WORDS", "HELD_OUT_SENTENCES", "TRAIN_VOICES", "HELD_OUT_VOICES", "training_sentences"]

WORDS = """
the a of and to in is was he for it with as his on be at by had not are but from or have an they which
one you were her all she there would their we him been has when who will more no if out so said what up
its about into than them can only other new some could time these two may then do first any my now such
like our over man me even most made after also did many before must through back years where much your
way well down should because each just those people how too little state good very make world still own
see men work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three states himself few house use during
without again place around however home small found thought went say part once general high upon school
every does got united left number course war until always away something fact though water less public
put think almost hand enough far took head yet government system better set told nothing night end why
called didn't eyes find going look asked later knew point next program city business give group toward
young days let room president side social given present several order national possible rather second
face per among form important often things looked early white case john become large big need four within
felt along children saw best church ever least power development light thing seemed family interest want
members mind country area others done turned although open god service certain kind problem began
different door thus help sense means whole matter perhaps itself york it's times law human line above name
example action company hands local show whether five history gave today either act feet across taken past
quite anything seen having death week experience body word half really field am car words already themselves
i'm information tell together college shall money period held keep sure probably free seems political real
behind cannot miss question air office making brought whose special major heard problems ago became federal
study moment voice music banana purple zebra quiz jump vivid blue fish mouth pepper bubble beef puppy wave
judge shoe cheap chip thumb zoo vow mop bob pam poppy mumble fluffy shiver yellow orange rhythm whisper
""".split()

HELD_OUT_SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
]

TRAIN_VOICES = [Voice(lang, rate, pitch, rng) for lang in ("en-us", "en") for rate in (130, 150, 175, 200, 225)
                for pitch in (20, 35, 55, 80) for rng in (30, 70)]
HELD_OUT_VOICES = [Voice("en-us", 162, 45, 50), Voice("en", 188, 68, 50), Voice("en-us", 212, 28, 50)]


def training_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` random word strings (4-12 words, an occasional comma), seeded; never a held-out sentence."""
    rng = np.random.default_rng(seed)
    held = {s.lower() for s in HELD_OUT_SENTENCES}
    out = []
    while len(out) < count:
        words = list(rng.choice(WORDS, size=int(rng.integers(4, 13))))
        if len(words) > 6 and rng.random() < 0.4:
            words[int(rng.integers(2, len(words) - 2))] += ","
        text = " ".join(words).capitalize() + rng.choice([".", ".", "?", "!"])
        if text.lower() not in held:
            out.append(text)
    return out
