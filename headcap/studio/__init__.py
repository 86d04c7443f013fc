"""The synthetic studio: renders a complete rig (or monocular) session of a head model with
known identity, expressions, head motion, texture and lighting, and writes its ground truth.

Entry point: `headcap.studio.synthesize.synthesize_session` (the `headcap synth` command).
`headcap.studio.synthetic_recording` makes the raw input of ingest instead (per-camera videos or
image folders with known offsets, drops and colour casts) for the capture tests and benchmarks.
"""
