"""Train the learned registration on the fly from the synthetic studio (what `headcap
train-registration` runs).

A pool of rendered scenes (data.sample_scene) is refreshed by `new_per_step` scenes every step;
each batch item is a pool scene seen by a random subset of its cameras (at least `min_views`),
so one render serves several layouts. Step s draws from the generator of (seed, "step/s"): a
resumed run makes the same draws as an uninterrupted one from that step on (its pool is refilled
first, so its first batches differ).

Loss: mean vertex distance (mm) over the outer surface (eyeballs included: they move with the
head) + normalised squared errors of the identity and expression coefficients. Adam, cosine
learning rate, gradient clipping. Every `checkpoint_every` steps: OUT.ckpt.pt (network, optimiser,
step, history; read back with torch.load(weights_only=True)), the loss curve OUT.loss.png, and
the median vertex error on fixed held-out scenes.
"""
from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from headcap.reconstruct.learned_registration.data import SceneConfig, sample_scene
from headcap.reconstruct.learned_registration.model import (LearnedRegNet, NetConfig, locate_head, predict_vertices,
                                                            prepare_views, rotation_centre, save_weights)

__all__ = ["TrainConfig", "train", "surface_mask", "stream"]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 800
    """Optimisation steps."""
    batch: int = 4
    """Scenes per step."""
    pool: int = 48
    """Rendered scenes kept for reuse."""
    new_per_step: int = 1
    """Scenes rendered into the pool per step."""
    min_views: int = 5
    """Fewest cameras a training sample keeps of its scene's rig."""
    max_views: int = 7
    """Most cameras a training sample keeps of its scene's rig."""
    lr: float = 1e-3
    """Peak learning rate (Adam, cosine decay to 1% of it)."""
    seed: int = 0
    """Seed of every random draw."""
    head: str = "default"
    """Head model spec (default | ict:PATH | flame:PATH | npz:PATH)."""
    threads: int = 1
    """Torch threads (1: on a shared machine more threads mostly spin)."""
    checkpoint_every: int = 100
    """Steps between checkpoints, loss-curve updates and held-out evaluations."""
    validation: int = 8
    """Held-out scenes evaluated at every checkpoint."""
    resolution: int = 12
    """Points per side of the feature volume."""

    def __post_init__(self):
        for name in ("steps", "batch", "pool", "new_per_step", "min_views", "max_views", "threads", "checkpoint_every",
                     "validation", "resolution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"train-registration: field '{name}' must be an integer >= 1, got {v!r}")
        if self.resolution % 4:
            raise ValueError(f"train-registration: field 'resolution' must be a multiple of 4, got {self.resolution}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"train-registration: field 'lr' must be a positive number, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"train-registration: field 'seed' must be a non-negative integer, got {self.seed!r}")


def stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


def surface_mask(model) -> np.ndarray:
    """[V] bool: the outer surface (registration_fit.fit_vertex_mask) without the eyeballs: the
    vertices every error in this package is measured on."""
    from headcap.reconstruct.registration_fit import fit_vertex_mask

    mask = fit_vertex_mask(model)
    for name in ("eyeball_left", "eyeball_right"):
        if name in model.region_masks:
            mask &= ~model.region_masks[name].cpu().numpy().astype(bool)
    return mask


def sample_input(scene: dict, net_config: NetConfig, rng: np.random.Generator, min_views: int,
                 max_views: int = 1000, jitter: float = 0.01):
    """A ViewBatch from a random camera subset of `scene` (head placed from the masks, jittered)."""
    n = len(scene["cameras"])
    k = int(rng.integers(min(min_views, n), min(max_views, n) + 1))
    pick = np.sort(rng.choice(n, size=k, replace=False))
    cams = [scene["cameras"][i] for i in pick]
    centre = locate_head(cams, [scene["masks"][i] for i in pick]) + rng.uniform(-jitter, jitter, size=3)
    return prepare_views([scene["images"][i] for i in pick], cams, net_config, centre)


def _loss(verts, params, scenes, mask_t, num_id, num_expr):
    gt = torch.stack([torch.from_numpy(s["vertices"]) for s in scenes])
    dist = (verts.float() - gt).norm(dim=-1)[:, mask_t] * 1e3  # mm
    vertex = dist.mean()
    terms = {"vertex_mm": vertex}
    total = vertex
    if num_id:
        gid = torch.stack([torch.from_numpy(s["identity"]) for s in scenes])
        terms["identity"] = ((params["identity"] - gid) ** 2).mean() / 0.25
        total = total + terms["identity"]
    if num_expr:
        gex = torch.stack([torch.from_numpy(s["expression"]) for s in scenes])
        terms["expression"] = ((params["expression"] - gex) ** 2).mean() / 0.09
        total = total + terms["expression"]
    return total, terms, dist.detach()


def _plot(history: list[list[float]], val: list[list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headcap.core.fileio import atomic_write_bytes
    import io

    h = np.asarray(history)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if len(h):
        k = max(1, len(h) // 60)
        smooth = np.convolve(h[:, 1], np.ones(k) / k, mode="valid")
        ax.plot(h[:, 0], h[:, 1], color="0.8", lw=0.6, label="train (batch)")
        ax.plot(h[k - 1:, 0], smooth, color="C0", label=f"train ({k}-step mean)")
    if val:
        v = np.asarray(val)
        ax.plot(v[:, 0], v[:, 1], "o-", color="C3", label="held-out median")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("vertex error (mm)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def _init_translation(net, scenes, inputs, centre_head) -> None:
    """Start the translation output at the mean offset of the head's rotation centre from the
    volume origin (the masks' centroid sits above and in front of it)."""
    offsets = []
    for sc, vb in zip(scenes, inputs):
        wfh = sc["world_from_head"]
        centre_world = wfh[:3, :3] @ centre_head + wfh[:3, 3]
        offsets.append(np.linalg.inv(vb.world_from_volume)[:3, :3] @ (centre_world - vb.world_from_volume[:3, 3]))
    net.out.bias[3:6] = torch.from_numpy(np.mean(offsets, 0) / 0.03).float()


@torch.no_grad()
def evaluate(net, model, inputs, scenes, centre_head, mask) -> np.ndarray:
    """[n] median vertex error (mm) per held-out scene."""
    net.eval()
    out = []
    for vb, sc in zip(inputs, scenes):
        verts, _ = predict_vertices(net, model, [vb], centre_head)
        err = np.linalg.norm(verts[0].double().numpy() - sc["vertices"], axis=1)[mask] * 1e3
        out.append(float(np.median(err)))
    net.train()
    return np.asarray(out)


def train(config: TrainConfig, out: Path, resume: bool = True, log: Callable[[str], None] = print,
          progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Train and write OUT (safetensors), OUT.ckpt.pt (resumable state), OUT.loss.png,
    OUT.log.json. Returns the summary."""
    from headcap.core.fileio import atomic_write_bytes, write_json
    from headcap.core.threads import torch_threads
    from headcap.reconstruct.head_loaders import load_head_model
    import io

    out = Path(out)
    ckpt_path = out.with_name(out.name + ".ckpt.pt")
    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model = load_head_model(config.head)
        for p in model.parameters() if hasattr(model, "parameters") else ():
            p.requires_grad_(False)
        net_config = NetConfig(resolution=config.resolution, num_identity=model.num_identity,
                               num_expression=model.num_expression, num_joints=model.num_joints)
        net = LearnedRegNet(net_config)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        centre_head = torch.from_numpy(rotation_centre(model))
        mask = surface_mask(model)
        mask_t = torch.from_numpy(mask)
        start, history, val = 0, [], []
        if resume and ckpt_path.is_file():
            state = torch.load(ckpt_path, weights_only=True)
            if state.get("config") != json.dumps(asdict(config), sort_keys=True):
                log(f"{ckpt_path}: written for other settings; starting afresh")
            else:
                net.load_state_dict(state["net"])
                opt.load_state_dict(state["opt"])
                start = int(state["step"])
                history = state["history"].tolist()
                val = state["val"].tolist()
                log(f"resumed from {ckpt_path} at step {start}")
        scene_cfg = SceneConfig()
        val_rng = stream(config.seed, "validation")
        val_scenes = [sample_scene(model, val_rng, scene_cfg, centre_head.numpy()) for _ in range(config.validation)]
        val_inputs = [sample_input(s, net_config, val_rng, config.min_views, config.max_views, 0.0) for s in val_scenes]
        if start == 0:
            _init_translation(net, val_scenes, val_inputs, centre_head.numpy())
        fill_rng = stream(config.seed, f"pool/{start}")
        pool = [sample_scene(model, fill_rng, scene_cfg, centre_head.numpy()) for _ in range(config.pool)]
        tic = time.perf_counter()
        net.train()
        for step in range(start, config.steps):
            rng = stream(config.seed, f"step/{step}")
            for _ in range(config.new_per_step):
                pool[int(rng.integers(len(pool)))] = sample_scene(model, rng, scene_cfg, centre_head.numpy())
            picks = rng.choice(len(pool), size=min(config.batch, len(pool)), replace=False)
            scenes = [pool[i] for i in picks]
            inputs = [sample_input(s, net_config, rng, config.min_views, config.max_views) for s in scenes]
            lr = config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
            if step < 50:
                lr *= (step + 1) / 50
            for g in opt.param_groups:
                g["lr"] = lr
            verts, params = predict_vertices(net, model, inputs, centre_head)
            total, terms, dist = _loss(verts, params, scenes, mask_t, model.num_identity, model.num_expression)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            history.append([step + 1, float(terms["vertex_mm"].detach()), float(dist.median())])
            if progress:
                progress(step + 1, config.steps, f"train {terms['vertex_mm']:.2f} mm")
            last = step + 1 == config.steps
            if (step + 1) % config.checkpoint_every == 0 or last:
                errs = evaluate(net, model, val_inputs, val_scenes, centre_head, mask)
                val.append([step + 1, float(np.median(errs))])
                elapsed = time.perf_counter() - tic
                log(f"step {step + 1}/{config.steps}: train {np.mean([h[1] for h in history[-config.checkpoint_every:]]):.2f} mm, "
                    f"held-out median {val[-1][1]:.2f} mm, {elapsed:.0f} s this run")
                buf = io.BytesIO()
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                            "history": torch.tensor(history), "val": torch.tensor(val),
                            "config": json.dumps(asdict(config), sort_keys=True)}, buf)
                atomic_write_bytes(ckpt_path, buf.getvalue())
                _plot(history, val, out.with_name(out.name + ".loss.png"))
        seconds = time.perf_counter() - tic
        info = {"steps": config.steps, "seed": config.seed, "batch": config.batch, "head": config.head,
                "held_out_median_mm": val[-1][1] if val else None, "train_config": asdict(config),
                "seconds_last_run": round(seconds, 1)}
        save_weights(net, out, config.head, info)
        write_json(out.with_name(out.name + ".log.json"), {"info": info, "history": history, "validation": val})
    return info
