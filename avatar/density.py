"""Adaptive density control for a `GaussianAvatar`, per binding (GaussianAvatars' rules on top of
3DGS's): Gaussians whose view-space positional gradient is large get more company on *their own
triangle*: small ones are cloned, large ones split into two smaller ones sampled from the parent;
transparent and oversized ones are pruned, but never the last Gaussian of a triangle, so every
bound triangle keeps something that follows it. Children inherit the parent's binding.

The strategy works on the avatar's parameter tensors and an `Adam` (avatar.train) together: each
step returns the new parameter dict and tells the optimiser which rows survive (their moments
are kept) and how many fresh rows follow (zero moments).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DensityConfig", "DensityControl"]


@dataclass(frozen=True)
class DensityConfig:
    start: int = 300
    """Iteration of the first densification."""
    stop: int = 6000
    """No densification after this iteration (pruning of transparent Gaussians continues)."""
    interval: int = 300
    """Iterations between densification steps."""
    grad_threshold: float = 2e-4
    """Mean screen-space positional gradient (3DGS units) above which a Gaussian is densified."""
    split_size: float = 1.0
    """A Gaussian larger than this many triangle sizes (largest local scale) is split, a smaller one cloned."""
    min_opacity: float = 0.005
    """Gaussians more transparent than this are pruned (the last one of a triangle is kept)."""
    max_local_scale: float = 3.0
    """Gaussians larger than this many triangle sizes are pruned (the last one of a triangle is kept)."""
    max_gaussians: int = 150_000
    """No densification beyond this count."""


class DensityControl:
    """Statistics accumulation + densify / split / prune, per binding (module docstring)."""

    def __init__(self, config: DensityConfig, count: int):
        self.config = config
        self.grad_sum = torch.zeros(count, dtype=torch.float64)
        self.seen = torch.zeros(count, dtype=torch.float64)

    # ------------------------------------------------------------------ state (checkpoints)
    def state_dict(self) -> dict:
        return {"grad_sum": self.grad_sum.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.grad_sum = state["grad_sum"].clone()
        self.seen = state["seen"].clone()

    # ------------------------------------------------------------------ statistics
    def observe(self, grad_norm: Tensor, visible: Tensor) -> None:
        """After backward: screen-space gradient norms [N] and visibility [N] of one render."""
        vis = visible.to(torch.bool)
        self.grad_sum[vis] += grad_norm[vis].double()
        self.seen[vis] += 1

    def due(self, iteration: int) -> bool:
        c = self.config
        return iteration > 0 and iteration % c.interval == 0 and iteration >= c.start

    # ------------------------------------------------------------------ the step
    def step(self, iteration: int, params: dict[str, Tensor], face_index: Tensor,
             generator: torch.Generator) -> tuple[dict[str, Tensor], Tensor, Tensor, int]:
        """One densify + prune step. Returns (new params, new face_index, kept rows of the old
        tensors (index), number of appended rows). Resets the statistics."""
        c = self.config
        n = face_index.shape[0]
        with torch.no_grad():
            mean_grad = self.grad_sum / self.seen.clamp_min(1)
            size = params["local_log_scales"].exp().max(dim=1).values
            grow = (mean_grad >= c.grad_threshold) & (iteration <= c.stop)
            room = max(0, c.max_gaussians - n)
            if int(grow.sum()) > room:  # the largest gradients first
                order = torch.argsort(mean_grad.masked_fill(~grow, -1), descending=True, stable=True)
                grow = torch.zeros_like(grow)
                grow[order[:room]] = True
            clone = grow & (size <= c.split_size)
            split = grow & (size > c.split_size)
            new: dict[str, list[Tensor]] = {k: [] for k in params}
            new_faces: list[Tensor] = []
            if clone.any():
                for k, v in params.items():
                    new[k].append(v[clone].clone())
                new_faces.append(face_index[clone])
            if split.any():
                idx = split.nonzero()[:, 0]
                # two children sampled from the parent's Gaussian (local frame), scales / 1.6
                from headcap.avatar.gaussian_avatar import quat_to_matrix

                rot = quat_to_matrix(params["local_quats"][idx])
                std = params["local_log_scales"][idx].exp()
                for _ in range(2):
                    offset = torch.randn(idx.shape[0], 3, generator=generator) * std
                    for k, v in params.items():
                        if k == "local_means":
                            new[k].append(v[idx] + torch.einsum("nij,nj->ni", rot, offset))
                        elif k == "local_log_scales":
                            new[k].append(v[idx] - torch.log(torch.tensor(1.6)))
                        else:
                            new[k].append(v[idx].clone())
                    new_faces.append(face_index[idx])
            # prune: transparent / oversized Gaussians and split parents, never a triangle's last one
            opacity = torch.sigmoid(params["opacity_logits"])
            drop = (opacity < c.min_opacity) | (size > c.max_local_scale) | split
            drop = self._keep_last_per_face(drop, face_index, opacity, split)
            keep = (~drop).nonzero()[:, 0]
            out = {}
            for k, v in params.items():
                parts = [v[keep]] + new[k]
                out[k] = torch.cat(parts, 0).contiguous()
            appended = out["opacity_logits"].shape[0] - keep.shape[0]
            faces = torch.cat([face_index[keep]] + new_faces, 0)
        self.grad_sum = torch.zeros(faces.shape[0], dtype=torch.float64)
        self.seen = torch.zeros(faces.shape[0], dtype=torch.float64)
        return out, faces, keep, appended

    @staticmethod
    def _keep_last_per_face(drop: Tensor, face_index: Tensor, opacity: Tensor, split: Tensor) -> Tensor:
        """Un-drop the most opaque Gaussian of every triangle that would otherwise lose all of
        its Gaussians (split parents excepted: their children stay on the triangle)."""
        faces_total = int(face_index.max()) + 1 if face_index.numel() else 0
        survivors = torch.zeros(faces_total, dtype=torch.long)
        survivors.index_add_(0, face_index, (~drop | split).long())
        orphan = survivors[face_index] == 0  # every Gaussian of this triangle is dropped
        if orphan.any():
            idx = orphan.nonzero()[:, 0]
            # the most opaque of each such triangle: order by opacity, keep each face's first entry
            order = idx[torch.argsort(opacity[idx], descending=True, stable=True)]
            _, inverse = torch.unique(face_index[order], return_inverse=True)
            first = torch.full((int(inverse.max()) + 1,), order.shape[0], dtype=torch.long)
            first.scatter_reduce_(0, inverse, torch.arange(order.shape[0]), reduce="amin")
            drop = drop.clone()
            drop[order[first]] = False
        return drop
