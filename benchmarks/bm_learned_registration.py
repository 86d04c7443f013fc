"""Learned registration (issue #16) on held-out synthetic heads: vertex error against ground truth
and seconds per frame, on a rig layout like those of training and on one never seen in training,
beside two trivial baselines and the classic registration on the same frames.

    .venv/bin/python benchmarks/bm_learned_registration.py [--weights PATH] [--frames 6] [--classic 3]

Frames: each a new head (identity, expression, gaze, pose within the studio's motion amplitudes,
albedo, lighting; seeds never drawn in training) rendered at 256 px through
  train layout:  the studio arc, 12 cameras ~1 m away (training draws 6-14 cameras, 0.85-1.2 m);
  unseen layout: 4 cameras 0.7-0.75 m away, two low (-20..-25 deg) wide (+-45..50 deg) and two high
                 (+30..35 deg) near the centre: fewer cameras than training ever keeps (5), closer,
                 and elevations outside its rows.
Errors: median / p95 over the outer surface (eyeballs excluded), mm, over all frames' vertices.
Baselines: "no images" (the network with its output layer zeroed except the mean-offset bias: the
mean head upright at the volume centre) and "mean head at the true pose" (zero identity and
expression, ground-truth pose: a bound no pose-only method beats).
Classic: headcap.reconstruct.registration on clouds made from the ground-truth meshes
(headcap.studio.scan_points.synthetic_scan: surface facing the cameras, 0.2 mm noise, holes, 1%
outliers), as benchmarks/bm_registration.py does: it does NOT include multi-view stereo, which it
would need on real images (minutes per frame), and it is evaluated on the vertices the cloud
observes. Seconds: wall and CPU per frame (the machine may be shared: CPU seconds are the
steadier figure).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def unseen_rig(size: int, rng: np.random.Generator):
    from headcap.calib.camera import Camera, Rig, look_at

    cams = []
    for i, (az, el, dist) in enumerate(((-50, -25, 0.70), (45, -20, 0.70), (-20, 35, 0.75), (25, 30, 0.70))):
        a, e = math.radians(az), math.radians(el)
        centre = dist * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        f = size * dist / 0.34
        K = np.array([[f, 0, (size - 1) / 2 + rng.uniform(-3, 3)], [0, f, (size - 1) / 2 + rng.uniform(-3, 3)], [0, 0, 1]])
        dist_coeffs = np.array([rng.uniform(-0.12, 0.12), rng.uniform(-0.2, 0.2), 0.0, 0.0, 0.0])
        cams.append(Camera(f"u{i}", size, size, K, "opencv", dist_coeffs, look_at(centre, (0, 0, 0), up=(0, 1, 0))))
    return Rig.from_list(cams)


def main() -> None:
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.learned_registration.data import SceneConfig, sample_scene
    from headcap.reconstruct.learned_registration.infer import LearnedRegistrar
    from headcap.reconstruct.learned_registration.model import locate_head, predict_vertices, prepare_views
    from headcap.reconstruct.learned_registration.train import surface_mask
    from headcap.studio.rig_layout import RigLayoutConfig, studio_rig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--classic", type=int, default=3, help="frames per layout also registered by the classic route")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_head_model("default")
    reg = LearnedRegistrar(model, args.weights, "default", threads=args.threads)
    mask = surface_mask(model)
    baseline_net = type(reg.net)(reg.net.config)
    baseline_net.load_state_dict(reg.net.state_dict())
    with torch.no_grad():
        baseline_net.out.weight.zero_()
        keep = baseline_net.out.bias[3:6].clone()
        baseline_net.out.bias.zero_()
        baseline_net.out.bias[3:6] = keep
    baseline_net.eval()
    motion = SceneConfig(yaw_deg=12.0, pitch_deg=6.0, roll_deg=3.0, translation_m=0.01, noise=(0.0, 0.01))
    layouts = {"train": studio_rig(RigLayoutConfig(num_cameras=12, width=256, height=256), np.random.default_rng(777)),
               "unseen": unseen_rig(256, np.random.default_rng(778))}
    results = {}
    for name, rig in layouts.items():
        errs, base, bound, secs, cpus, classic = [], [], [], [], [], []
        for k in range(args.frames):
            scene = sample_scene(model, np.random.default_rng(10_000 + k), motion, rig=rig)
            gt = scene["vertices"].astype(np.float64)
            tic, cpu = time.perf_counter(), time.process_time()
            out = reg.predict(scene["images"], scene["cameras"], scene["masks"])
            secs.append(time.perf_counter() - tic)
            cpus.append(time.process_time() - cpu)
            errs.append(np.linalg.norm(out.vertices - gt, axis=1)[mask] * 1e3)
            with torch.no_grad():
                views = prepare_views(scene["images"], scene["cameras"], reg.net.config,
                                      locate_head(scene["cameras"], scene["masks"]))
                v, _ = predict_vertices(baseline_net, model, [views], reg.centre_head)
                base.append(np.linalg.norm(v[0].double().numpy() - gt, axis=1)[mask] * 1e3)
                mean_head = model.forward(world_from_head=torch.from_numpy(scene["world_from_head"]).to(model.dtype)[None])
                bound.append(np.linalg.norm(mean_head.vertices[0].double().numpy() - gt, axis=1)[mask] * 1e3)
            line = (f"{name} frame {k}: learned {np.median(errs[-1]):.2f} / {np.percentile(errs[-1], 95):.2f} mm, "
                    f"{secs[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU; no-images {np.median(base[-1]):.2f} mm; "
                    f"mean head at true pose {np.median(bound[-1]):.2f} mm")
            if k < args.classic:
                classic.append(_classic(model, scene, rig))
                line += (f"; classic {classic[-1]['median']:.2f} / {classic[-1]['p95']:.2f} mm, "
                         f"{classic[-1]['seconds']:.1f} s wall, {classic[-1]['cpu']:.1f} s CPU")
            print(line, flush=True)
        e, b, m = np.concatenate(errs), np.concatenate(base), np.concatenate(bound)
        r = {"cameras": len(rig), "frames": args.frames,
             "learned_median_mm": float(np.median(e)), "learned_p95_mm": float(np.percentile(e, 95)),
             "no_images_median_mm": float(np.median(b)), "no_images_p95_mm": float(np.percentile(b, 95)),
             "mean_head_true_pose_median_mm": float(np.median(m)),
             "mean_head_true_pose_p95_mm": float(np.percentile(m, 95)),
             "learned_seconds_per_frame": float(np.mean(secs)), "learned_cpu_seconds_per_frame": float(np.mean(cpus))}
        if classic:
            r.update(classic_frames=len(classic), classic_median_mm=float(np.median([c["median"] for c in classic])),
                     classic_p95_mm=float(np.max([c["p95"] for c in classic])),
                     classic_seconds_per_frame=float(np.mean([c["seconds"] for c in classic])),
                     classic_cpu_seconds_per_frame=float(np.mean([c["cpu"] for c in classic])),
                     learned_median_mm_same_frames=float(np.median(np.concatenate(errs[:len(classic)]))))
        results[name] = r
        print(f"== {name} layout ({len(rig)} cameras, {args.frames} frames): learned median {r['learned_median_mm']:.2f} mm, "
              f"p95 {r['learned_p95_mm']:.2f} mm; no-images {r['no_images_median_mm']:.2f} / {r['no_images_p95_mm']:.2f}; "
              f"mean head at true pose {r['mean_head_true_pose_median_mm']:.2f} / {r['mean_head_true_pose_p95_mm']:.2f}; "
              f"{r['learned_seconds_per_frame']:.2f} s/frame wall, {r['learned_cpu_seconds_per_frame']:.2f} s CPU"
              + (f"; classic (GT-derived clouds) {r['classic_median_mm']:.2f} mm, worst p95 {r['classic_p95_mm']:.2f}, "
                 f"{r['classic_seconds_per_frame']:.1f} s/frame wall, {r['classic_cpu_seconds_per_frame']:.1f} s CPU"
                 if classic else ""), flush=True)
    results["weights"] = str(args.weights or "shipped")
    results["trained"] = reg.info
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _classic(model, scene, rig) -> dict:
    from headcap.pipeline.stages.register import evaluation_mask
    from headcap.reconstruct.registration import Registrar, RegistrationConfig
    from headcap.reconstruct.registration_fit import fit_faces
    from headcap.reconstruct.registration_rigid import PointCloud
    from headcap.studio.scan_points import synthetic_scan

    gt = scene["vertices"].astype(np.float64)
    centres = np.stack([np.asarray(c.centre) for c in rig])
    focal = float(np.mean([c.K[0, 0] for c in rig]))
    spacing = float(np.median(np.linalg.norm(centres, axis=1))) / focal
    s = synthetic_scan(gt, fit_faces(model), centres, np.random.default_rng(5), spacing=spacing, noise=0.0002,
                       holes=3, hole_radius=0.01, outliers=0.01)
    cloud = PointCloud(s.points, s.normals, s.confidence)
    registrar = Registrar(model, RegistrationConfig())
    tic, cpu = time.perf_counter(), time.process_time()
    fit = registrar.estimate_identity([cloud], [None])
    out = registrar.register_frame(cloud, None, fit.identity, None, fit.world_from_head[0])
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    m = evaluation_mask(model, gt, s.points[~s.outlier])
    e = np.linalg.norm(out.vertices - gt, axis=1)[m] * 1e3
    return {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "seconds": seconds, "cpu": cpu}


if __name__ == "__main__":
    main()
