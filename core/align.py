"""Best-fit rigid or similarity transform between two point sets (Umeyama 1991)."""
from __future__ import annotations

import numpy as np


def similarity_fit(source: np.ndarray, target: np.ndarray,
                   with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R, translation t minimising |s R source + t - target|^2.

    source, target: [N, 3]. With `with_scale=False`, s is held at 1 (a rigid fit).
    Returns (s, R [3, 3], t [3]).
    """
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (a ** 2).sum(1).mean()) if with_scale else 1.0
    return scale, rot, mu_t - scale * rot @ mu_s
