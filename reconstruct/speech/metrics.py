"""Scores for speech animation against known truth.

- boundary_errors: phone start times of an alignment against reference phones (espeak's own), after
  matching the two phone strings on their visemes (edit-distance alignment; the alphabets differ).
- lip_vertex_error: FaceFormer/CodeTalker's LVE: per frame the largest L2 distance over the lip
  vertices between predicted and true meshes, averaged over frames (reported in mm).
"""
from __future__ import annotations

import numpy as np
import torch

from headcap.reconstruct.speech.phonemes import viseme_of

__all__ = ["boundary_errors", "lip_vertex_ids", "lip_vertex_error", "expression_vertices"]


def _speech(phones, alphabet):
    return [(viseme_of(p.symbol, alphabet), p.start) for p in phones if viseme_of(p.symbol, alphabet) != "sil"]


def boundary_errors(reference, ref_alphabet: str, hypothesis, hyp_alphabet: str) -> np.ndarray:
    """|start time differences| (s) of the phone pairs an edit-distance alignment of the viseme
    strings pairs up (matches and substitutions; pauses left out)."""
    a, b = _speech(reference, ref_alphabet), _speech(hypothesis, hyp_alphabet)
    n, m = len(a), len(b)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1, j - 1] + (0.0 if a[i - 1][0] == b[j - 1][0] else 1.0)
            cost[i, j] = min(sub, cost[i - 1, j] + 1.0, cost[i, j - 1] + 1.0)
    errors, i, j = [], n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (0.0 if a[i - 1][0] == b[j - 1][0] else 1.0):
            errors.append(abs(a[i - 1][1] - b[j - 1][1]))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1.0:
            i -= 1
        else:
            j -= 1
    return np.array(errors[::-1])


def lip_vertex_ids(model, share: float = 0.3) -> np.ndarray:
    """Vertices of the lips: skin vertices that the lip shapes (funnel, pucker, roll lower/upper)
    move by more than `share` of the largest such motion."""
    names = [n for n in ("mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper") if n in model.expression_names]
    if not names:
        raise ValueError(f"head model {model.name!r}: no ARKit lip expressions to find the lips with")
    basis = model.expression_basis.detach().double()
    motion = torch.stack([basis[model.expression_index(n)].norm(dim=-1) for n in names]).max(dim=0).values
    keep = motion > share * motion.max()
    for region in ("teeth", "teeth_upper", "teeth_lower", "tongue"):
        if region in model.region_masks:
            keep &= ~model.region_masks[region].bool()
    return torch.nonzero(keep).reshape(-1).numpy()


def expression_vertices(model, expression: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Head-frame vertices [T, V', 3] (metres) of expression weights [T, Ne] (neutral identity, rest pose)."""
    basis = model.expression_basis.detach().double().numpy()
    template = model.template.detach().double().numpy()
    if ids is not None:
        basis, template = basis[:, ids], template[ids]
    return template[None] + np.einsum("te,evc->tvc", np.asarray(expression, np.float64), basis)


def lip_vertex_error(model, predicted: np.ndarray, truth: np.ndarray, ids: np.ndarray | None = None) -> float:
    """LVE in millimetres between expression sequences [T, Ne] (same T)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"lip_vertex_error: shapes differ {predicted.shape} vs {truth.shape}")
    ids = lip_vertex_ids(model) if ids is None else ids
    diff = expression_vertices(model, predicted, ids) - expression_vertices(model, truth, ids)
    return float(np.linalg.norm(diff, axis=-1).max(axis=1).mean() * 1000.0)
