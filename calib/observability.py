"""What the calibration data cannot determine, and what to do about it.

- Priors: weak, physically plausible priors (distortion beyond k1 towards zero, the principal
  point towards the image centre, fx = fy) applied where the data alone leaves a parameter less
  certain than half the prior's own sigma, i.e. where the prior actually carries information
  (`choose_priors`, mode 'auto'); 'always' and 'never' force either way. They enter the bundle
  adjustment as extra residuals in pixel units (`prior_rows`), so the covariance that follows is
  the posterior one.
- Warnings a studio can act on (`uncertainty_warnings`): per camera, which 1-sigma uncertainty
  misses its threshold, and which board poses to add (tilted views for focal length, the empty
  image regions for principal point and distortion, views shared with named neighbours for pose).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headcap.calib.bundle import BundleProblem

__all__ = ["Prior", "choose_priors", "prior_rows", "uncertainty_warnings", "PRIOR_SIGMAS"]

# prior sigma per distortion coefficient (None: never regularised): k1 is always observable
# with a board that reaches the image edge and varies too much between lenses for a prior
PRIOR_SIGMAS = {"opencv": (None, 0.1, 0.005, 0.005, 0.1), "fisheye": (None, 0.1, 0.1, 0.1), "none": ()}
DISTORTION_NAMES = {"opencv": ("k1", "k2", "p1", "p2", "k3"), "fisheye": ("k1", "k2", "k3", "k4"), "none": ()}
PRINCIPAL_POINT_PRIOR = 0.05
"""Principal point prior sigma, as a fraction of the image's larger side."""
ASPECT_PRIOR = 0.002
"""fx = fy prior sigma, as a fraction of fx."""


@dataclass(frozen=True)
class Prior:
    """One linear prior on a camera: sum(coef * x[index]) ~ N(target, sigma^2)."""

    camera: str
    name: str
    index: tuple[int, ...]
    coef: tuple[float, ...]
    target: float
    sigma: float
    data_sigma: float
    """The combination's 1-sigma uncertainty from the data alone."""


def _candidates(prob: BundleProblem, x: np.ndarray, sizes: dict[str, tuple[int, int]]) -> list[Prior]:
    intr, _, _ = prob.unpack(x)
    out = []
    for i, c in enumerate(prob.cams):
        base = i * prob.ni
        w, h = sizes[c]
        for k, (name, sig) in enumerate(zip(DISTORTION_NAMES[prob.model], PRIOR_SIGMAS[prob.model])):
            if sig is not None:
                out.append(Prior(c, name, (base + 4 + k,), (1.0,), 0.0, sig, 0.0))
        s = PRINCIPAL_POINT_PRIOR * max(w, h)
        out.append(Prior(c, "cx", (base + 2,), (1.0,), (w - 1) / 2, s, 0.0))
        out.append(Prior(c, "cy", (base + 3,), (1.0,), (h - 1) / 2, s, 0.0))
        out.append(Prior(c, "fx=fy", (base, base + 1), (1.0, -1.0), 0.0, ASPECT_PRIOR * intr[i, 0], 0.0))
    return out


def choose_priors(prob: BundleProblem, x: np.ndarray, cov: np.ndarray, free: np.ndarray,
                  sizes: dict[str, tuple[int, int]], mode: str) -> list[Prior]:
    """The priors to apply: mode 'never' none, 'always' all, 'auto' those whose combination the
    data (covariance `cov` of the unregularised solve, calib.uncertainty.camera_covariance)
    leaves with sigma > half the prior's sigma. Held parameters get none."""
    if mode == "never":
        return []
    chosen = []
    for p in _candidates(prob, x, sizes):
        if not all(free[j] for j in p.index):
            continue
        a = np.zeros(len(cov))
        a[list(p.index)] = p.coef
        data_sigma = float(np.sqrt(max(a @ cov @ a, 0.0)))
        if mode == "always" or data_sigma > 0.5 * p.sigma:
            chosen.append(Prior(p.camera, p.name, p.index, p.coef, p.target, p.sigma, data_sigma))
    return chosen


def prior_rows(priors: list[Prior], n_params: int, noise_sigma: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(P [m, n_params], b [m]) with residual P x - b in pixel units: the prior's
    (value - target) / sigma times the corners' per-axis noise sigma, so that it weighs against
    the reprojection residuals as the Bayesian posterior does."""
    if not priors:
        return None
    P = np.zeros((len(priors), n_params))
    b = np.zeros(len(priors))
    for k, p in enumerate(priors):
        scale = noise_sigma / p.sigma
        P[k, list(p.index)] = np.asarray(p.coef) * scale
        b[k] = p.target * scale
    return P, b


def prior_notes(priors: list[Prior]) -> list[str]:
    """One line per camera naming what was regularised and why."""
    by_cam: dict[str, list[Prior]] = {}
    for p in priors:
        by_cam.setdefault(p.camera, []).append(p)
    notes = []
    for c, ps in by_cam.items():
        parts = ", ".join(f"{p.name} (data alone: +-{p.data_sigma:.3g}, prior +-{p.sigma:.3g})" for p in ps)
        notes.append(f"camera {c!r}: regularised {parts}; the data cannot determine them on their own "
                     "(--priors never/always forces either way)")
    return notes


_REGIONS = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))


def empty_regions(pixels: np.ndarray, size: tuple[int, int]) -> list[str]:
    """Which cells of a 3x3 grid over the image no corner fell in."""
    w, h = size
    gx = np.clip((pixels[:, 0] / w * 3).astype(int), 0, 2)
    gy = np.clip((pixels[:, 1] / h * 3).astype(int), 0, 2)
    seen = set(zip(gy.tolist(), gx.tolist()))
    return [_REGIONS[r][c] for r in range(3) for c in range(3) if (r, c) not in seen]


@dataclass(frozen=True)
class Thresholds:
    focal_pct: float
    principal_point_px: float
    distortion_px: float
    centre_mm: float
    rotation_deg: float


def uncertainty_warnings(uncertainty: dict[str, dict], thresholds: Thresholds, pixels: dict[str, np.ndarray],
                         sizes: dict[str, tuple[int, int]], frames_of: dict[str, set[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """(warnings, {camera: names of the uncertainties that miss their thresholds}). pixels: every
    detected corner of a camera [N, 2]; frames_of: the frames each camera saw."""
    warnings, failing = [], {}
    for c, u in uncertainty.items():
        bad, what, advice = [], [], []
        if u["focal_pct"] > thresholds.focal_pct:
            bad.append("focal")
            what.append(f"focal length to {u['focal_pct']:.2f}%")
            advice.append("board poses tilted 30-45 degrees towards it (square-on views confound focal length "
                          "with distance)")
        lens = []
        if u["principal_point_px"] > thresholds.principal_point_px:
            bad.append("principal_point")
            lens.append(f"principal point to {u['principal_point_px']:.1f} px")
        if u["distortion_px"] > thresholds.distortion_px:
            bad.append("distortion")
            lens.append(f"lens distortion to {u['distortion_px']:.1f} px at the image corner")
        if lens:
            what += lens
            empty = empty_regions(pixels[c], sizes[c])
            advice.append("board poses near the image corners and edges"
                          + (f" (no corners yet in the {', '.join(empty)} of its image)" if empty else ""))
        pose = []
        if u["centre_mm"] > thresholds.centre_mm:
            bad.append("centre")
            pose.append(f"centre to {u['centre_mm']:.1f} mm")
        if u["rotation_deg"] > thresholds.rotation_deg:
            bad.append("rotation")
            pose.append(f"rotation to {u['rotation_deg']:.2f} deg")
        if pose:
            what += pose
            shared = {o: len(frames_of[c] & frames_of[o]) for o in frames_of if o != c}
            best = sorted(shared, key=lambda o: -shared[o])[:2]
            advice.append(f"board poses it sees together with {' and '.join(best)} (shared frames so far: "
                          f"{', '.join(f'{shared[o]} with {o}' for o in best)}), closer to it")
        if bad:
            failing[c] = bad
            warnings.append(f"camera {c!r}: {', '.join(what)} uncertain (1 sigma); add {'; '.join(advice)}")
    return warnings, failing
