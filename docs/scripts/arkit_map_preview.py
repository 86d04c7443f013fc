"""Draw docs/img/export_arkit_map.png and print the per-shape residual table of docs/export.md.

    python docs/scripts/arkit_map_preview.py docs/img/export_arkit_map.png [ICT_NPZ]

The FLAME-format model is the one the tests build from ICT-FaceKit (tests/flame_like.py: FLAME's
layout, jaw by joint, 40 PCA expression modes; FLAME itself is never shipped). The map is fitted
from the default head's ARKit shapes, the model exported with `export_head_glb(arkit_map=...)`
and the .glb's targets read back. Top row: the default head (the source) with one ARKit shape at
weight 1; bottom row: the exported FLAME-format head with the same-named target at weight 1.
Also prints the map refitted on three other faces (identity modes at N(0, 2)).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ("neutral", "jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp", "jawLeft", "eyeLookOutLeft")


def _shade(verts: np.ndarray, faces: np.ndarray, camera) -> np.ndarray:
    from headcap.reconstruct.rasterize_mesh import render_mesh
    from headcap.reconstruct.registration_nonrigid import vertex_normals_np

    light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
    shade = 0.25 + 0.75 * np.clip(vertex_normals_np(verts, faces) @ light, 0, 1)
    colour = torch.from_numpy(shade[:, None] * np.array([0.85, 0.68, 0.58]))
    out = render_mesh(torch.from_numpy(verts), torch.from_numpy(faces), camera, vertex_colors=colour, background=1.0)
    return np.round(out["rgb"].numpy() * 255).astype(np.uint8)


def main(out: str, ict_npz: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from flame_like import NUM_SHAPE, write_ict_flame

    from headcap.avatar.export.arkit_map import fit_arkit_map, transfer_arkit_shapes
    from headcap.avatar.export.glb import read_accessor, read_glb
    from headcap.avatar.export.gltf import export_head_glb, vertex_layout
    from headcap.calib.camera import Camera, look_at
    from headcap.reconstruct.head_loaders import load_default_head, load_flame, load_ict_facekit

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_ict_flame(load_ict_facekit(ict_npz, dtype=torch.float64), tmp / "flame_like.npz")
        flame = load_flame(tmp / "flame_like.npz", num_shape=NUM_SHAPE)
        start = time.perf_counter()
        transfer = transfer_arkit_shapes(flame)
        middle = time.perf_counter()
        amap = fit_arkit_map(flame, transfer=transfer)
        done = time.perf_counter()
        export_head_glb(flame, tmp / "flame_arkit.glb", arkit_map=amap)
        doc, binary = read_glb(tmp / "flame_arkit.glb")
        ict = load_ict_facekit(ict_npz, dtype=torch.float64)
        other_faces(tmp / "flame_like.npz", ict)
    print(f"transfer {middle - start:.1f} s, fit {done - middle:.1f} s; {flame.num_vertices} vertices, "
          f"{flame.num_expression} modes; median match distance {amap.match_distance_mm:.2f} mm")
    prim = doc["meshes"][0]["primitives"][0]
    names = doc["meshes"][0]["extras"]["targetNames"]
    vmap = vertex_layout(flame).vertex_map
    base = read_accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    glb_faces = read_accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    assert np.array_equal(vmap, np.arange(flame.num_vertices))  # no UVs: one glTF vertex per model vertex

    head = load_default_head(dtype=torch.float64)
    head_faces = head.faces.numpy()
    camera = Camera("front", 256, 288, np.array([[900.0, 0, 128], [0, 900.0, 144], [0, 0, 1]]),
                    cam_from_world=look_at(np.array([0.0, -0.02, 0.55]), np.array([0.0, -0.02, 0.0]), up=(0, 1, 0)))
    # both heads centred on their eyes' midpoint (the models' origins differ)
    src_offset = -0.5 * (head.forward().joints[0, -2].numpy() + head.forward().joints[0, -1].numpy())
    eyes = [flame.joint_names.index("eye_left"), flame.joint_names.index("eye_right")]
    offset = -flame.to(dtype=torch.float64).forward().joints[0, eyes].numpy().mean(0)
    rows = [[], []]
    for shape in SHAPES:
        src = head.template.numpy().copy()
        dst = base.copy()
        if shape != "neutral":
            src += head.expression_basis[head.expression_index(shape)].numpy()
            dst += read_accessor(doc, binary, prim["targets"][names.index(shape)]["POSITION"])
        rows[0].append(_shade(src + src_offset, head_faces, camera))
        rows[1].append(_shade(dst + offset, glb_faces, camera))
        for tile in (rows[0][-1], rows[1][-1]):
            cv2.putText(tile, shape, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    cv2.imwrite(out, image[..., ::-1])

    print("| shape | transferred RMS (mm) | residual RMS (mm) | residual max (mm) | relative | joint rotation (rad) |")
    print("|---|---|---|---|---|---|")
    for k, name in enumerate(amap.names):
        rot = amap.joint_rotations[k]
        moved = [f"{amap.joint_names[j]} ({', '.join(f'{v:+.3f}' for v in rot[j])})"
                 for j in range(len(rot)) if np.abs(rot[j]).max() > 0]
        rel = "-" if not np.isfinite(amap.relative[k]) else f"{amap.relative[k]:.2f}"
        print(f"| {name} | {amap.transferred_rms_mm[k]:.2f} | {amap.residual_rms_mm[k]:.2f} | "
              f"{amap.residual_max_mm[k]:.2f} | {rel} | {', '.join(moved) or '-'} |")
    ok = np.isfinite(amap.relative)
    print(f"median residual RMS {np.median(amap.residual_rms_mm):.2f} mm, relative median "
          f"{np.median(amap.relative[ok]):.2f}, worst {amap.names[int(np.nanargmax(amap.relative))]} "
          f"{np.nanmax(amap.relative):.2f}")


def other_faces(flame_npz: Path, ict, seeds=(0, 1, 2)) -> None:
    """The registration on other faces: the test model's template shaped by its identity modes
    (coefficients N(0, 2)), the map refitted; cosine of each target to ICT's same-named shape."""
    from dataclasses import replace

    from flame_like import NUM_SHAPE

    from headcap.avatar.export.arkit_map import arkit_targets, fit_arkit_map
    from headcap.reconstruct.head_loaders import load_flame

    model = load_flame(flame_npz, num_shape=NUM_SHAPE, dtype=torch.float64)
    keep = (ict.region_masks["skin"] | ict.region_masks["eyes"]).numpy()

    def cos(a, b):
        return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))

    for seed in seeds:
        coeffs = torch.as_tensor(np.random.default_rng(seed).normal(scale=2.0, size=NUM_SHAPE))
        face = replace(model, template=model.template + torch.einsum("k,kvc->vc", coeffs, model.identity_basis))
        amap = fit_arkit_map(face)
        targets = arkit_targets(face, amap)
        sames, gap = [], np.inf
        for k, name in enumerate(amap.names):
            if name.startswith("eyeLook") or name not in ict.expression_names:
                continue
            same = cos(targets[k], ict.expression_basis[ict.expression_index(name)].numpy()[keep])
            sames.append(same)
            if name.endswith(("Left", "Right")):
                mirror = name[:-4] + "Right" if name.endswith("Left") else name[:-5] + "Left"
                gap = min(gap, same - cos(targets[k], ict.expression_basis[ict.expression_index(mirror)].numpy()[keep]))
        ok = np.isfinite(amap.relative)
        print(f"identity seed {seed}: match {amap.match_distance_mm:.2f} mm, relative median "
              f"{np.median(amap.relative[ok]):.2f} worst {amap.relative[ok].max():.2f}, cosine to ICT median "
              f"{np.median(sames):.2f} lowest {min(sames):.2f}, smallest same-minus-mirror {gap:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/export_arkit_map.png",
         sys.argv[2] if len(sys.argv) > 2 else str(ROOT.parent / "shared" / "data" / "ict_facekit" /
                                                    "ict_facekit_light_model.npz"))
