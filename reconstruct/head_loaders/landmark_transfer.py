"""Transfer landmark vertex ids between head models of different topology.

Used once to give the MakeHuman default head its iBUG-68 ids from ICT-FaceKit's Multi-PIE 68
(the ids are then fixed in makehuman.py; tests re-derive and compare). Steps: a similarity from
eye centres and nose tip, similarity ICP of the source face onto the target skin, the nearest
target vertex for every landmark, then left/right pairs made mirror images and midline points
put on the midline (iBUG-68 is symmetric; both heads are symmetric about x = 0).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from headcap.core.align import similarity_fit

__all__ = ["similarity_fit", "transfer_landmarks", "IBUG68_MIRROR"]

# iBUG-68 index of each point's mirror image (midline points map to themselves)
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)


def transfer_landmarks(
    source_vertices: np.ndarray,
    source_face: np.ndarray,
    source_landmarks: np.ndarray,
    source_anchors: np.ndarray,
    target_vertices: np.ndarray,
    target_candidates: np.ndarray,
    target_anchors: np.ndarray,
    iterations: int = 30,
    allowed: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """Vertex ids on the target for the source's iBUG-68 landmarks.

    source_vertices [Vs, 3]; source_face: ids of the source face region used for ICP;
    source_landmarks [68] ids; *_anchors [K, 3] corresponding points (eye centres, nose tip)
    for the initial similarity; target_candidates: target vertex ids a landmark may land on;
    allowed: optional narrower candidate ids per landmark index (e.g. the inner lip points of
    a closed mouth, which must land on the upper or the lower lip).
    """
    scale, rot, trans = similarity_fit(source_anchors, target_anchors)
    candidates = target_vertices[target_candidates]
    tree = cKDTree(candidates)
    face = source_vertices[source_face]
    for _ in range(iterations):
        moved = scale * face @ rot.T + trans
        dist, nearest = tree.query(moved)
        keep = dist < np.quantile(dist, 0.9)  # trim the worst matches (ears, boundary)
        scale, rot, trans = similarity_fit(face[keep], candidates[nearest[keep]])
    points = scale * source_vertices[source_landmarks] @ rot.T + trans
    # symmetrise: average each point with its mirror's reflection, then snap pairs mirror-wise
    mirrored = points[IBUG68_MIRROR] * np.array([-1.0, 1.0, 1.0])
    points = 0.5 * (points + mirrored)
    ids = np.empty(len(points), dtype=np.int64)
    for i, point in enumerate(points):
        if IBUG68_MIRROR[i] == i:
            point = point * np.array([0.0, 1.0, 1.0])
        if allowed is not None and i in allowed:
            pool = np.asarray(allowed[i])
            ids[i] = pool[np.argmin(((target_vertices[pool] - point) ** 2).sum(1))]
        else:
            ids[i] = target_candidates[tree.query(point)[1]]
    return ids
