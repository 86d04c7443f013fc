"""The pipeline's stages, each defined once and used by the demo, the single-stage commands and
(later) `headcap run`: synth (synthetic studio session), calibration (rig from board frames),
splats (static Gaussians on calibrated cameras)."""
