"""The real-scan check: the Lee Perry-Smith head scan filmed through a 16-camera rig by an
outside renderer (a numpy ray caster, tests/reconstruct/scan_raycast.py, or Open3D's ray caster
with --renderer open3d), handed over as a nerfstudio dataset, ingested with `headcap ingest` and
reconstructed with `headcap reconstruct`.

    python benchmarks/bm_scan_mvs.py                          # 16 cameras, 512 px
    python benchmarks/bm_scan_mvs.py --cameras 8 --resolution 256 --out scan.json
    python benchmarks/bm_scan_mvs.py --resolution 384 --renderer open3d

--renderer open3d needs `pip install open3d-cpu` (or `open3d`; ~630 MB, a benchmark-only optional
dependency, not in setup.py; 0.20's import needs Debian's libusb-1.0-0). Its rays are the numpy
caster's (OpenCV undistortPoints of the integer pixel centres, so the lens distortion is the
same); `open3d.t.geometry.RaycastingScene.cast_rays` finds the triangle and its barycentrics, and
the shading (texture, Lambert light) and masks are the numpy path's. It prints the agreement of
the two casters on the first camera: mask pixels that differ, depth difference where both hit.

Reports the scan-to-surface distance (every scan vertex facing at least two cameras and lying in
the reconstructed region's reach: median and 95th percentile, mm), the surface-to-scan distance
(accuracy), the completeness (scan vertices facing two cameras within 2 mm of the surface) and
seconds per frame. The scan includes neck and shoulders, cut by the image border.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reconstruct"))


def open3d_raycast(vertices, faces, K, dist, cam_from_world, width, height):
    """scan_raycast.raycast's contract (triangle id [H, W] (-1 = miss), barycentrics (u, v) of
    vertices 1 and 2 [H, W, 2], hit distance [H, W], inf = miss) from Open3D's RaycastingScene."""
    import open3d as o3d
    from scan_raycast import _rays

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)))
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    dirs = _rays(K, dist, width, height) @ R  # camera-frame unit rays turned into the world frame
    origin = np.broadcast_to(-R.T @ t, dirs.shape)
    rays = np.concatenate([origin, dirs], 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy().astype(np.float64)
    ids = hit["primitive_ids"].numpy().astype(np.int64)
    uv = hit["primitive_uvs"].numpy().astype(np.float64)
    miss = ~np.isfinite(t_hit) | (ids == o3d.t.geometry.RaycastingScene.INVALID_ID)
    ids[miss], t_hit[miss], uv[miss] = -1, np.inf, 0.0
    return ids.reshape(height, width), uv.reshape(height, width, 2), t_hit.reshape(height, width)


def caster_agreement(verts, faces, cam) -> dict:
    """Open3D's and the numpy caster's hit masks and depths on one camera."""
    from scan_raycast import raycast

    dist = np.zeros(5) if cam.distortion_model == "none" else np.asarray(cam.distortion)
    args = (verts, faces, cam.K, dist, cam.cam_from_world, cam.width, cam.height)
    tri_n, bary_n, t_n = raycast(*args)
    tri_o, bary_o, t_o = open3d_raycast(*args)
    both = (tri_n >= 0) & (tri_o >= 0)
    return {"camera": cam.id, "mask_pixels": int((tri_n >= 0).sum()),
            "mask_differ_fraction": float(((tri_n >= 0) != (tri_o >= 0)).mean()),
            "mask_differ_pixels": int(((tri_n >= 0) != (tri_o >= 0)).sum()),
            "same_triangle_fraction": float((tri_n[both] == tri_o[both]).mean()),
            "depth_abs_diff_median_mm": float(np.median(np.abs(t_n[both] - t_o[both])) * 1e3),
            "depth_abs_diff_max_mm": float(np.abs(t_n[both] - t_o[both]).max() * 1e3),
            "barycentric_abs_diff_max_same_triangle": float(
                np.abs(bary_n[both & (tri_n == tri_o)] - bary_o[both & (tri_n == tri_o)]).max())}


def main(argv=None) -> dict:
    from headcap.cli import main as headcap
    from headcap.core.ply import read_points
    from headcap.reconstruct.surface import distance_to_mesh, vertex_normals
    from headcap.studio.rig_layout import RigLayoutConfig, studio_rig
    from scan_raycast import write_nerfstudio_scan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--renderer", choices=("numpy", "open3d"), default="numpy",
                    help="the outside renderer: our numpy ray caster or Open3D's RaycastingScene")
    ap.add_argument("--tsdf-min-weight", type=float, default=None, help="passed to headcap reconstruct")
    args = ap.parse_args(argv)
    data = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bm_scan_"))
    dataset, session = work / "nerfstudio", work / "session"
    rig = studio_rig(RigLayoutConfig(num_cameras=args.cameras, width=args.resolution, height=args.resolution),
                     np.random.default_rng(0))
    t0 = time.perf_counter()
    caster, renderer = None, "numpy ray caster"
    if args.renderer == "open3d":
        import open3d
        caster, renderer = open3d_raycast, f"Open3D {open3d.__version__} RaycastingScene"
    if not (dataset / "transforms.json").is_file():
        truth = write_nerfstudio_scan(dataset, data / "lee_perry_smith_head", rig, caster=caster)
        np.savez(dataset / "truth.npz", **truth)
    render_s = time.perf_counter() - t0
    truth = np.load(dataset / "truth.npz")
    verts, faces = truth["vertices"], truth["faces"]
    agreement = None
    if args.renderer == "open3d":
        agreement = caster_agreement(verts, faces, next(iter(rig.cameras.values())))
        print("Open3D vs numpy caster:", json.dumps(agreement), flush=True)
    if not (session / "session.json").is_file():
        assert headcap(["ingest", str(dataset), "--out", str(session), "--no-progress"]) == 0
    t0 = time.perf_counter()
    extra = [] if args.tsdf_min_weight is None else ["--tsdf-min-weight", str(args.tsdf_min_weight)]
    assert headcap(["reconstruct", str(session), *extra]) == 0
    recon_s = time.perf_counter() - t0
    surface = read_points(session / "geometry" / "000000_surface.ply")
    sv, sf = surface["points"], surface["faces"]
    acc = distance_to_mesh(sv, verts, faces)
    vn = vertex_normals(verts, faces)
    centres = np.stack([c.centre for c in rig.cameras.values()])
    facing = sum(((centres[c] - verts) * vn).sum(1) > 0 for c in range(len(centres)))
    # inside the images: the scan's shoulders leave the frame
    from headcap.calib.camera import Camera  # noqa: F401  (rig cameras project with the lens model)
    seen = np.zeros(len(verts), int)
    for cam in rig.cameras.values():
        pix, depth = cam.project(verts)
        pix = pix.numpy()
        seen += ((depth.numpy() > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < cam.width) & (pix[:, 1] >= 0)
                 & (pix[:, 1] < cam.height))
    visible = (facing >= 2) & (seen >= 2)
    comp = distance_to_mesh(verts[visible], sv, sf)
    head = visible & (verts[:, 1] > -0.08)  # above the chin line: the head without neck and shoulders
    comp_head = distance_to_mesh(verts[head], sv, sf)
    result = {
        "session": f"Lee Perry-Smith scan, {args.cameras} cameras x {args.resolution} px, {renderer}, nerfstudio",
        "tsdf_min_weight": args.tsdf_min_weight,
        "renderer_agreement": agreement,
        "load_average": os.getloadavg()[0], "seconds_render": render_s, "seconds_reconstruct": recon_s,
        "surface_to_scan_median_mm": float(np.median(acc) * 1e3),
        "surface_to_scan_p95_mm": float(np.percentile(acc, 95) * 1e3),
        "scan_to_surface_median_mm": float(np.median(comp) * 1e3),
        "scan_to_surface_p95_mm": float(np.percentile(comp, 95) * 1e3),
        "scan_to_surface_head_median_mm": float(np.median(comp_head) * 1e3),
        "scan_to_surface_head_p95_mm": float(np.percentile(comp_head, 95) * 1e3),
        "completeness_2mm": float(np.mean(comp < 0.002)),
        "summary": json.loads((session / "geometry" / "summary.json").read_text())["frames"][0]["seconds"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
