"""Speech-driven face animation (issue #17): audio (+ transcript) -> phones -> visemes ->
ARKit-named expression curves, or audio -> curves with a small learned network; see docs/speech.md.

    espeak.py    text -> speech + espeak's own phone timings (libespeak-ng via ctypes)
    align.py     audio -> timed phones (pocketsphinx forced alignment / phone recognition)
    phonemes.py  phone alphabets -> visemes -> ARKit weights
    animate.py   coarticulation (dominance blending), lip closure, idle motion, retargeting
    features.py  log-mel; model.py the network; corpus.py + train.py its data and training
    render.py    heads to draw; video.py mp4 with audio; speak.py what `headcap speak` writes
    metrics.py   boundary error, lip vertex error
"""
