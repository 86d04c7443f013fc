"""Per-frame geometry at studio size: seconds per frame and millimetres against the truth.

    python benchmarks/bm_mvs.py                       # ICT head, 16 cameras, 512 px, 1 frame
    python benchmarks/bm_mvs.py --cameras 8 --resolution 256 --head default
    python benchmarks/bm_mvs.py --out bench.json      # also write the numbers as JSON

Renders a synthetic session (headcap.studio, OpenCV lens distortion, seeded), then runs
headcap.reconstruct.geometry.reconstruct_frame on frame 0 with the default settings and reports:
seconds per step and per frame (wall clock and process CPU; the machine's load average is
printed: other users' load inflates wall-clock numbers on a shared machine), the per-view
depth error, the fused points' and the TSDF surface's distance to the ground-truth mesh
(median and 95th percentile, mm), and the completeness (fraction of the truth's vertices seen by
at least two cameras that lie within 2 mm of the surface).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    from headcap.capture.session import read_session
    from headcap.reconstruct.fusion import backproject
    from headcap.reconstruct.geometry import GeometryConfig, reconstruct_frame
    from headcap.reconstruct.mvs import load_views
    from headcap.reconstruct.surface import distance_to_mesh
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--head", default="ict")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--session", type=Path, default=None, help="reuse a rendered session folder")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--previews", type=Path, default=None, help="write depth/normal/error PNGs into this folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
    head = f"ict:{data / 'ict_facekit' / 'ict_facekit_light_model.npz'}" if args.head == "ict" else args.head
    tmp = tempfile.mkdtemp(prefix="bm_mvs_")
    folder = args.session or Path(tmp) / "session"
    if not (folder / "session.json").is_file():
        synthesize_session(StudioConfig(cameras=args.cameras, frames=1, resolution=args.resolution, head=head,
                                        calib_frames=0, seed=0), folder)
    session = read_session(folder)
    rig = session.load_rig()
    gt = np.load(folder / "ground_truth" / "vertices.npz")
    verts = gt["vertices"][0].astype(np.float64)
    faces = gt["render_faces"].astype(np.int64)
    t0, c0 = time.perf_counter(), time.process_time()
    views = load_views(session, rig, 0)
    load_s = time.perf_counter() - t0
    geo = reconstruct_frame(views, GeometryConfig())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    per_view = []
    for v, m in zip(views, geo.maps):
        X, ok = backproject(m.depth, v.K, v.cam_from_world)
        if ok.any():
            per_view.append(float(np.median(distance_to_mesh(X[ok].numpy(), verts, faces)) * 1e3))
    d_pts = distance_to_mesh(geo.points, verts, faces)
    d_srf = distance_to_mesh(geo.surface_vertices, verts, faces)
    # completeness: truth vertices in front of >= 2 cameras (normal towards them) near the surface
    from headcap.reconstruct.surface import vertex_normals

    vn = vertex_normals(verts, faces)
    facing = sum(((np.stack([v.camera.centre for v in views])[c] - verts) * vn).sum(1) > 0 for c in range(len(views)))
    seen = facing >= 2
    back = distance_to_mesh(verts[seen], geo.surface_vertices, geo.surface_faces) if len(geo.surface_faces) else None
    result = {
        "session": f"{args.cameras} cameras x {args.resolution} px, head {args.head}, 1 frame",
        "threads": args.threads, "load_average": os.getloadavg()[0],
        "seconds_wall": wall, "seconds_cpu": cpu, "seconds_load_images": load_s,
        "seconds_steps": geo.seconds, "method": geo.method, "coverage": geo.coverage,
        "per_view_depth_median_mm": float(np.median(per_view)) if per_view else None,
        "points": len(geo.points), "points_median_mm": float(np.median(d_pts) * 1e3),
        "points_p95_mm": float(np.percentile(d_pts, 95) * 1e3),
        "surface_vertices": len(geo.surface_vertices), "surface_median_mm": float(np.median(d_srf) * 1e3),
        "surface_p95_mm": float(np.percentile(d_srf, 95) * 1e3),
        "completeness_2mm": float(np.mean(back < 0.002)) if back is not None else 0.0,
        "hull_contains_truth": float(geo.hull.contains(verts).mean()) if geo.hull is not None else None,
    }
    if args.previews:
        import cv2

        from headcap.pipeline.stages.reconstruct import error_heatmap, map_previews

        args.previews.mkdir(parents=True, exist_ok=True)
        depth_img, normal_img = map_previews(geo.maps)
        cv2.imwrite(str(args.previews / "000000_depth.png"), depth_img[..., ::-1])
        cv2.imwrite(str(args.previews / "000000_normal.png"), normal_img[..., ::-1])
        heat = error_heatmap(views, geo.surface_vertices, geo.surface_faces, d_srf)
        cv2.imwrite(str(args.previews / "000000_error.png"), heat[..., ::-1])
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
