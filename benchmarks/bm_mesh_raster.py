"""Mesh rasterizer speed on the ICT-FaceKit head: C++ kernel vs the torch reference.

    python benchmarks/bm_mesh_raster.py                      # 512 and 1024 px, ratios printed
    python benchmarks/bm_mesh_raster.py --sizes 256 512 --repeats 10
    python benchmarks/bm_mesh_raster.py --figure docs/img/mesh_raster_ict.png

Mesh: ICT Face Model Light neutral (26,719 vertices, 52,220 triangles after splitting quads),
from ../shared/data (or $HEADCAP_TEST_DATA), seen by a 1.8*size focal-length camera 0.58 m
away with OpenCV distortion, so the head fills about half the image. Times are medians over
`--repeats` runs after a warm-up; the C++ kernel is built (once) before timing. Both
rasterizers are checked to return identical triangle ids in the same run. Also timed: a full
`render_mesh` (projection, rasterization, normals, SH shading) and interpolate forward+backward
w.r.t. vertex positions. The machine's load average is printed: other users' load inflates
wall-clock numbers on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headcap.calib.camera import Camera, look_at  # noqa: E402
from headcap.reconstruct.rasterize_mesh import (interpolate, project_vertices, rasterize, rasterize_reference,  # noqa: E402
                                        render_mesh)
from headcap.reconstruct.shading import UNIFORM_WHITE_SH00, vertex_normals  # noqa: E402

# ICT materials that are see-through overlays in the upstream renders; hidden in the figure
OVERLAY_MATERIALS = ("M_EyeBlend", "M_EyeOcclusion", "M_LacrimalFluid", "M_EyeLashes")


def load_ict(data_root: Path, dtype=torch.float32):
    path = data_root / "ict_facekit" / "ict_facekit_light_model.npz"
    if not path.is_file():
        raise SystemExit(f"ICT model not found at {path}; set HEADCAP_TEST_DATA to the shared data folder")
    data = np.load(path, allow_pickle=False)
    quads = data["faces"]
    is_quad = quads[:, 3] >= 0
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[is_quad][:, [0, 2, 3]]])
    material = np.concatenate([data["face_material"], data["face_material"][is_quad]])
    names = [str(n) for n in data["material_names"]]
    verts = torch.tensor(data["neutral_vertices"], dtype=dtype) / 100.0  # cm -> m
    return verts, torch.tensor(tris, dtype=torch.int64), material, names


def camera(size: int) -> Camera:
    k = np.array([[1.8 * size, 0, (size - 1) / 2], [0, 1.8 * size, (size - 1) / 2], [0, 0, 1.0]])
    return Camera("bench", size, size, k, distortion_model="opencv",
                  distortion=np.array([0.06, -0.02, 0.001, -0.001, 0.0]),
                  cam_from_world=look_at([0.12, 0.03, 0.56], [0, -0.02, 0], up=(0, 1, 0)))


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def benchmark(sizes, repeats: int, ref_repeats: int, data_root: Path) -> None:
    verts, faces, _, _ = load_ict(data_root)
    rasterize(torch.zeros(3, 3) + 1, torch.tensor([[0, 1, 2]]), 4, 4, "cpp")  # build before timing
    print(f"ICT head: {verts.shape[0]} vertices, {faces.shape[0]} triangles; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"{'size':>6} {'cpp ms':>9} {'torch ms':>9} {'ratio':>7} {'ids equal':>9} {'coverage':>9} "
          f"{'render ms':>10} {'interp f+b ms':>14}")
    for size in sizes:
        cam = camera(size)
        vs = project_vertices(verts, cam)
        t_cpp = timed(lambda: rasterize(vs, faces, size, size, "cpp"), repeats)
        t_ref = timed(lambda: rasterize_reference(vs, faces, size, size), ref_repeats)
        a, b = rasterize(vs, faces, size, size, "cpp"), rasterize_reference(vs, faces, size, size)
        same = bool(torch.equal(a.triangle_id, b.triangle_id))
        sh = torch.zeros(9, 3)
        sh[0], sh[2] = UNIFORM_WHITE_SH00, -1.0
        t_render = timed(lambda: render_mesh(verts, faces, cam, sh_coeffs=sh), repeats)
        normals = vertex_normals(verts, faces)

        def interp_fb():
            v = vs.detach().requires_grad_()
            attr = normals.detach().requires_grad_()
            interpolate(attr, a, faces, v).square().sum().backward()

        t_interp = timed(interp_fb, repeats)
        print(f"{size:>6} {t_cpp * 1e3:>9.2f} {t_ref * 1e3:>9.1f} {t_ref / t_cpp:>6.1f}x {str(same):>9} "
              f"{float(a.mask.float().mean()):>9.3f} {t_render * 1e3:>10.1f} {t_interp * 1e3:>14.1f}")


def figure(path: Path, data_root: Path, size: int = 384) -> None:
    """Shaded render (per-material albedo, SH light) beside the world-space normals."""
    verts, faces, material, names = load_ict(data_root)
    keep = ~np.isin(np.array(names)[material], OVERLAY_MATERIALS)
    faces, material = faces[torch.from_numpy(keep)], material[keep]
    colours = {"M_Face": (0.82, 0.62, 0.52), "M_BackHead": (0.82, 0.62, 0.52), "M_Teeth": (0.9, 0.88, 0.8),
               "M_GumsTongue": (0.7, 0.35, 0.35), "M_ScleraLeft": (0.92, 0.92, 0.9),
               "M_ScleraRight": (0.92, 0.92, 0.9), "M_IrisLeft": (0.25, 0.35, 0.5), "M_IrisRight": (0.25, 0.35, 0.5)}
    face_rgb = torch.tensor([colours.get(names[m], (0.8, 0.8, 0.8)) for m in material], dtype=torch.float32)
    cam = camera(size)
    sh = torch.zeros(9, 3)
    # ambient 0.45 + a key light from the front, above and image-left (world: y up, +x = image right)
    sh[0], sh[1], sh[2], sh[3] = UNIFORM_WHITE_SH00 * 0.45, 0.9, 1.45, -0.7
    out = render_mesh(verts, faces, cam, sh_coeffs=sh, background=1.0, antialias_edges=True)
    frags = out["fragments"]
    corner_faces = torch.arange(3 * faces.shape[0]).view(-1, 3)
    albedo = interpolate(face_rgb.repeat_interleave(3, 0), frags, corner_faces)
    from headcap.reconstruct.shading import shade_sh

    rgb = shade_sh(albedo, out["normals"], sh)
    rgb = torch.where(frags.mask[..., None], rgb, torch.ones_like(rgb))
    normals = torch.where(frags.mask[..., None], out["normals"] * 0.5 + 0.5, torch.ones_like(rgb))
    panel = torch.cat([rgb, normals], dim=1).clamp(0, 1)
    import cv2

    img = (panel.numpy()[..., ::-1] * 255 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    print(f"wrote {path} ({len(buf) // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--figure", type=Path, default=None, help="write the docs figure to this PNG instead")
    args = parser.parse_args()
    if args.figure is not None:
        figure(args.figure, args.data)
    else:
        benchmark(args.sizes, args.repeats, args.ref_repeats, args.data)


if __name__ == "__main__":
    main()
