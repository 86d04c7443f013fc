"""Benchmark: `headcap synth` at a realistic size (16 cameras, 256 px, 30 frames, 10 ChArUco
poses). Target: under 120 s on the 2-core CPU machine. Also times one frame's 16 views through
the pure-torch reference rasterizer, in the same run, to report the C++ path's speed ratio.

    python benchmarks/bm_studio.py [--head default|ict:PATH] [--docs-image docs/img/studio_contact_sheet.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from headcap.studio.synthesize import StudioConfig, _build_scene, _load_head, synthesize_session  # noqa: E402
from headcap.studio.render import frame_normals, render_view  # noqa: E402

TARGET_S = 120.0


def _time_views(scene: dict, backend: str) -> float:
    verts = scene["vertices"][0]
    normals = frame_normals(verts, scene["appearance"].render_faces)
    start = time.perf_counter()
    for cam in scene["rig"]:
        render_view(verts, normals, cam, scene["appearance"], scene["backgrounds"][cam.id], backend=backend)
    return (time.perf_counter() - start) / len(scene["rig"])


def _docs_image(root: Path, path: Path) -> None:
    """The middle frame of every camera with the ground-truth landmarks projected (green)."""
    import cv2

    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.studio.writer import contact_sheet

    session = read_session(root)
    rig = read_rig(root / "rig.json")
    with np.load(root / "ground_truth" / "landmarks.npz", allow_pickle=False) as data:
        landmarks = data["landmarks"]
    t = session.frame_count // 2
    images, points = [], []
    for cam_id in session.cameras:
        images.append(cv2.imread(str(session.image_path(t, cam_id)))[..., ::-1])
        points.append(rig[cam_id].project(landmarks[t].astype(np.float64))[0].numpy())
    sheet = contact_sheet(images, session.cameras, tile=144, points=points)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(sheet[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    path.write_bytes(buf.tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="default")
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--docs-image", type=Path, default=None, help="write the middle frame of every view with its ground-truth landmarks here")
    args = parser.parse_args()
    config = StudioConfig(cameras=args.cameras, frames=args.frames, resolution=args.resolution, head=args.head)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "session"
        start = time.perf_counter()
        result = synthesize_session(config, out)
        wall = time.perf_counter() - start
        files = [p for p in out.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        if args.docs_image:
            _docs_image(out, args.docs_image)
    views = args.cameras * args.frames
    print(f"headcap synth: {args.cameras} cameras x {args.frames} frames at {args.resolution} px, head {args.head!r}, "
          f"{config.calib_frames} calibration poses")
    print(f"  wall time        {wall:7.1f} s   (target < {TARGET_S:.0f} s: {'PASS' if wall < TARGET_S else 'FAIL'})")
    for stage, seconds in result.timings.items():
        print(f"  {stage:<16} {seconds:7.1f} s")
    print(f"  per view         {1000 * result.timings['render'] / views:7.1f} ms (render + noise + 2 PNGs)")
    print(f"  output           {len(files)} files, {size_mb:.1f} MB")

    saved = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        model, texture, _ = _load_head(config)
        scene = _build_scene(StudioConfig(cameras=args.cameras, frames=1, resolution=args.resolution, head=args.head),
                             model, texture)
        fast = _time_views(scene, "auto")
        reference = _time_views(scene, "torch")
    finally:
        torch.set_num_threads(saved)
    print(f"  one view, C++ rasterizer       {1000 * fast:7.1f} ms")
    print(f"  one view, torch reference      {1000 * reference:7.1f} ms   (speed ratio {reference / fast:.1f}x)")
    return 0 if wall < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
