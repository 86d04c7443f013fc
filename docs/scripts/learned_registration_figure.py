"""docs/img/learned_registration.png: the shipped learned-registration weights on a held-out head
seen by the 4-camera layout never used in training (benchmarks/bm_learned_registration.py's
"unseen" rig): the four input views with the predicted mesh's outline shaded over them, the
per-vertex error (0-10 mm) from the most frontal camera, and the training loss curve.

    .venv/bin/python docs/scripts/learned_registration_figure.py [--weights PATH] [--log PATH.log.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.learned_registration.data import SceneConfig, sample_scene
    from headcap.reconstruct.learned_registration.infer import LearnedRegistrar
    from headcap.reconstruct.learned_registration.train import surface_mask
    from headcap.reconstruct.rasterize_mesh import render_mesh

    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--log", type=Path, default=ROOT / "docs" / "img" / "learned_registration_log.json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "learned_registration.png")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("bm", ROOT / "benchmarks" / "bm_learned_registration.py")
    bm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bm)
    model = load_head_model("default")
    reg = LearnedRegistrar(model, args.weights)
    rig = bm.unseen_rig(256, np.random.default_rng(778))
    motion = SceneConfig(yaw_deg=12.0, pitch_deg=6.0, roll_deg=3.0, translation_m=0.01, noise=(0.0, 0.01))
    scene = sample_scene(model, np.random.default_rng(10_001), motion, rig=rig)
    out = reg.predict(scene["images"], scene["cameras"], scene["masks"])
    mask = surface_mask(model)
    err = np.linalg.norm(out.vertices - scene["vertices"], axis=1) * 1e3
    faces = torch.from_numpy(reg.faces)
    verts = torch.from_numpy(out.vertices)
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4), dpi=100, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1, 1.5]})
    for ax, cam, image in zip(axes[:4], scene["cameras"], scene["images"]):
        r = render_mesh(verts, faces, cam)
        m = r["mask"].numpy() > 0
        shade = (r["normals"].numpy() @ -np.asarray(cam.cam_from_world[2, :3])).clip(0.2, 1.0)
        blend = image.astype(np.float64) / 255
        blend[m] = 0.45 * blend[m] + 0.55 * np.stack([0.3 * shade, 0.9 * shade, 0.4 * shade], -1)[m]
        ax.imshow(blend)
        ax.set_title(f"{cam.id}: input + prediction", fontsize=9)
        ax.axis("off")
    cam = scene["cameras"][int(np.argmax([np.asarray(c.centre)[2] for c in scene["cameras"]]))]
    level = np.clip(err / 10.0, 0, 1)
    colours = torch.from_numpy(plt.get_cmap("jet")(level)[:, :3])
    r = render_mesh(torch.from_numpy(scene["vertices"].astype(np.float64)), faces, cam, vertex_colors=colours)
    heat = np.where(r["mask"].numpy()[..., None] > 0, r["rgb"].numpy(), 1.0)
    axes[4].imshow(heat)
    axes[4].set_title(f"error 0-10 mm (median {np.median(err[mask]):.1f} mm)", fontsize=9)
    axes[4].axis("off")
    if args.log.is_file():
        log = json.loads(args.log.read_text())
        h = np.asarray(log["history"])
        k = max(1, len(h) // 50)
        axes[5].plot(h[k - 1:, 0], np.convolve(h[:, 1], np.ones(k) / k, mode="valid"), label="train (batch mean)")
        v = np.asarray(log["validation"])
        axes[5].plot(v[:, 0], v[:, 1], "o-", ms=3, label="held-out median")
        axes[5].set_yscale("log")
        axes[5].set_xlabel("step")
        axes[5].set_ylabel("vertex error (mm)")
        axes[5].grid(alpha=0.3, which="both")
        axes[5].legend(fontsize=8)
        axes[5].set_title("training (CPU, on the fly)", fontsize=9)
    else:
        axes[5].axis("off")
    fig.suptitle("learned registration, shipped weights: a held-out head through a 4-camera layout never seen in training",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
