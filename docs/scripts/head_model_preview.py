"""Flat-shaded matplotlib previews of head models: the pictures in docs/head_models.md.

    python docs/scripts/head_model_preview.py default docs/img/head_models_default.png
    python docs/scripts/head_model_preview.py ict:../shared/data/ict_facekit/ict_facekit_light_model.npz out.png
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from headcap.reconstruct.head_loaders import load_head_model
from headcap.reconstruct.head_model import HeadModel


def draw_mesh(ax, vertices: np.ndarray, faces: np.ndarray, yaw_deg: float = 0.0,
              landmarks: np.ndarray | None = None, color=(0.85, 0.72, 0.62)) -> None:
    """Orthographic flat-shaded drawing, painter's algorithm, viewed from +z (the face side).

    vertices [V, 3] head frame (metres), faces [F, 3].
    """
    from matplotlib.collections import PolyCollection

    yaw = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    v = vertices @ rot.T
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    front = normals[:, 2] > 0
    light = np.array([0.3, 0.4, 1.0])
    light /= np.linalg.norm(light)
    shade = np.clip(normals @ light, 0.0, 1.0) * 0.75 + 0.25
    order = np.argsort(tri[:, :, 2].mean(1))
    order = order[front[order]]
    colors = np.clip(np.asarray(color)[None] * shade[order, None], 0, 1)
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors, edgecolors="none"))
    if landmarks is not None:
        lm = landmarks @ rot.T
        ax.plot(lm[:, 0], lm[:, 1], ".", color="tab:blue", ms=2.5)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    pad = 0.05 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.axis("off")


def preview_grid(model: HeadModel, path: str | os.PathLike, seed: int = 0) -> None:
    """Neutral (front, side, landmarks), jawOpen / smile, two random identities; one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    model = model.to(dtype=torch.float64)
    names = model.expression_names
    panels: list[tuple[str, dict, float]] = [("neutral", {}, 0.0), ("neutral, side", {}, 90.0)]
    expr = torch.zeros(1, model.num_expression, dtype=torch.float64)
    for name in ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft"):
        if name in names:
            expr[0, names.index(name)] = 1.0 if name != "jawOpen" else 0.6
    if expr.abs().sum() > 0:
        panels.append(("jawOpen .6 + smile + blink L", {"expression": expr}, 20.0))
    for k in range(2):
        ident = torch.randn(1, model.num_identity, generator=gen, dtype=torch.float64)
        panels.append((f"identity ~ N(0, I) #{k}", {"identity": ident}, 30.0))
    if model.num_joints and "jaw" in model.joint_names:
        rot = torch.zeros(1, model.num_joints, 3, dtype=torch.float64)
        rot[0, model.joint_names.index("jaw"), 0] = 0.25
        if "neck" in model.joint_names:
            rot[0, model.joint_names.index("neck"), 1] = 0.6
        panels.append(("jaw joint 0.25 rad, neck yaw", {"joint_rotations": rot}, 0.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.8), dpi=90)
    faces = model.faces.numpy()
    if "skin" in model.region_masks:
        # inner geometry (mouth socket, teeth, eye occlusion shells) defeats painter's sorting
        visible = model.region_masks["skin"] | model.region_masks.get("eyes", model.region_masks["skin"])
        faces = faces[visible.numpy()[faces].all(1)]
    for ax, (title, kwargs, yaw) in zip(np.atleast_1d(axes), panels):
        out = model(**kwargs)
        lm = out.landmarks[0].numpy() if title == "neutral" and out.landmarks.shape[1] else None
        draw_mesh(ax, out.vertices[0].numpy(), faces, yaw, landmarks=lm)
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{model.name}: {model.num_vertices} vertices, {model.num_identity} identity, "
                 f"{model.num_expression} expression modes, joints {model.joint_names}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp)
        from PIL import Image

        with Image.open(tmp) as image:  # a 256-colour palette keeps doc pictures small
            image.convert("RGB").quantize(colors=128).save(tmp, optimize=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="head model spec: default, ict:PATH, flame:PATH, npz:PATH")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    preview_grid(load_head_model(args.spec), args.out, seed=args.seed)


if __name__ == "__main__":
    main()
