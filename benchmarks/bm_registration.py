"""Registration (issue #11) at full size: seconds per frame and accuracy against known
correspondence, on ICT-FaceKit meshes (26,719 vertices) with an open jaw and a smile, sampled
to clouds as dense as 16 views x 512 px would give (one point per pixel footprint of the studio
rig), partial (the surface facing the 16 cameras), 0.2 mm noise, holes and 1% outliers.

    .venv/bin/python benchmarks/bm_registration.py [--head ict:PATH] [--frames 3] [--session DIR]

--session DIR: instead, register SESSION/geometry/<t>.ply (the reconstruct stage's output) of a
synthetic session and compare with its ground truth (the head must be the session's).
Prints per frame: rigid method, fit error, final error (median / p95 mm over the observed outer
surface, eyeballs excluded), seconds; and the identity fit's seconds.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict_facekit" / "ict_facekit_light_model.npz"


def studio_cameras(count: int = 16, size: int = 512):
    from headcap.studio.rig_layout import RigLayoutConfig, studio_rig
    from headcap.studio.synthesize import stream

    rig = studio_rig(RigLayoutConfig(num_cameras=count, width=size, height=size), stream(0, "rig"))
    centres = np.stack([-c.cam_from_world[:3, :3].T @ c.cam_from_world[:3, 3] for c in rig])
    focal = float(np.mean([c.K[0, 0] for c in rig]))
    return rig, centres, focal


#: frame t's expression: recipes[t % 4]
RECIPES = [{"jawOpen": 0.5}, {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "jawOpen": 0.15},
           {"browInnerUp": 0.6, "mouthFunnel": 0.5, "jawOpen": 0.3}, {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}]


def main() -> None:
    from headcap.pipeline.stages.register import evaluation_mask
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.registration import Registrar, RegistrationConfig, load_geometry
    from headcap.reconstruct.registration_fit import fit_faces
    from headcap.reconstruct.registration_rigid import PointCloud
    from headcap.studio.scan_points import posed_frames, synthetic_scan

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", default=f"ict:{ICT}")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--session", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_head_model(args.head)
    if args.session is not None:
        gt = np.load(args.session / "ground_truth" / "vertices.npz")["vertices"].astype(np.float64)[:args.frames]
        clouds = [load_geometry(args.session / "geometry", t) for t in range(len(gt))]
        truth_points = [c.points for c in clouds]
        print(f"session {args.session}: {len(gt)} frames, clouds of {[len(c.points) for c in clouds]} points")
    else:
        _, centres, focal = studio_cameras()
        distance = float(np.median(np.linalg.norm(centres, axis=1)))
        spacing = distance / focal
        gt = posed_frames(model, [RECIPES[t % len(RECIPES)] for t in range(args.frames)])[0]
        clouds, truth_points = [], []
        for t in range(len(gt)):
            s = synthetic_scan(gt[t], fit_faces(model), centres, np.random.default_rng(100 + t), spacing=spacing,
                               noise=0.0002, holes=3, hole_radius=0.01, outliers=0.01)
            clouds.append(PointCloud(s.points, s.normals, s.confidence))
            truth_points.append(s.points[~s.outlier])
        print(f"{model.name}: {model.num_vertices} vertices; 16 x 512 px studio rig: cameras {distance:.2f} m away, "
              f"f = {focal:.0f} px -> {spacing * 1e3:.2f} mm point spacing; clouds of "
              f"{[len(c.points) for c in clouds]} points (0.2 mm noise, 3 holes, 1% outliers)", flush=True)
    reg = Registrar(model, RegistrationConfig())
    tic, cpu = time.perf_counter(), time.process_time()
    fit = reg.estimate_identity(clouds, [None] * len(clouds))
    print(f"identity fit on {len(clouds)} key frames: {time.perf_counter() - tic:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU", flush=True)
    previous = None
    rows = []
    for t, cloud in enumerate(clouds):
        tic, cpu = time.perf_counter(), time.process_time()
        previous = reg.register_frame(cloud, None, fit.identity, previous, fit.world_from_head[t])
        seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
        mask = evaluation_mask(model, gt[t], truth_points[t])
        e_fit = np.linalg.norm(previous.fit_vertices - gt[t], axis=1)[mask] * 1e3
        e = np.linalg.norm(previous.vertices - gt[t], axis=1)[mask] * 1e3
        rows.append((np.median(e), np.percentile(e, 95), seconds, cpu))
        print(f"frame {t}: {previous.stats['rigid']}; fit {np.median(e_fit):.3f} / {np.percentile(e_fit, 95):.3f} mm, "
              f"final {np.median(e):.3f} / {np.percentile(e, 95):.3f} mm (median / p95 over {mask.sum()} vertices), "
              f"{seconds:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    rows = np.array(rows)
    print(f"all frames: median {np.median(rows[:, 0]):.3f} mm, worst p95 {rows[:, 1].max():.3f} mm, "
          f"{rows[:, 2].mean():.1f} s wall / {rows[:, 3].mean():.1f} s CPU per frame (+ identity fit once); "
          f"torch threads {args.threads}")


if __name__ == "__main__":
    main()
