"""The real-scan check: the Lee Perry-Smith head scan filmed through a 16-camera rig by an
outside renderer (a numpy ray caster, tests/reconstruct/scan_raycast.py), handed over as a
nerfstudio dataset, ingested with `headcap ingest` and reconstructed with `headcap reconstruct`.

    python benchmarks/bm_scan_mvs.py                          # 16 cameras, 512 px
    python benchmarks/bm_scan_mvs.py --cameras 8 --resolution 256 --out scan.json

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
    args = ap.parse_args(argv)
    data = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bm_scan_"))
    dataset, session = work / "nerfstudio", work / "session"
    rig = studio_rig(RigLayoutConfig(num_cameras=args.cameras, width=args.resolution, height=args.resolution),
                     np.random.default_rng(0))
    t0 = time.perf_counter()
    if not (dataset / "transforms.json").is_file():
        truth = write_nerfstudio_scan(dataset, data / "lee_perry_smith_head", rig)
        np.savez(dataset / "truth.npz", **truth)
    render_s = time.perf_counter() - t0
    truth = np.load(dataset / "truth.npz")
    verts, faces = truth["vertices"], truth["faces"]
    if not (session / "session.json").is_file():
        assert headcap(["ingest", str(dataset), "--out", str(session), "--no-progress"]) == 0
    t0 = time.perf_counter()
    assert headcap(["reconstruct", str(session)]) == 0
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
        "session": f"Lee Perry-Smith scan, {args.cameras} cameras x {args.resolution} px, numpy ray caster, nerfstudio",
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
