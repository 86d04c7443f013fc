"""Learned registration (issue #16, a small TEMPEH-like network): calibrated multi-view images
straight to the head model's template mesh, on any number and layout of cameras.

- model.py: the network (per-view 2D CNN, a feature volume filled through the calibration with
  view-aware fusion, a 3D CNN, a head predicting head-model parameters + a rigid pose), the
  volume's placement from the rig, safetensors save/load;
- data.py: random synthetic scenes from the studio (identity, expression, gaze, head pose,
  albedo, lighting, rig layout and camera count, image noise), rendered in memory;
- train.py: on-the-fly training with checkpoints, resume, progress and a loss curve;
- infer.py: a session's frames to template meshes (what `headcap register --method learned` runs).
"""
