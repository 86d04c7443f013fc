"""A FLAME-format head model with a real face, for tests (FLAME itself is never shipped).

Built from ICT-FaceKit (MIT, ../shared/data/ict_facekit) the way FLAME is organised: its skin and
eyeballs only, FLAME's five joints (global, neck, jaw, eye_left, eye_right) regressed from
vertices, the jaw opened by the jaw joint (ICT's jawOpen, jawLeft, jawRight are left out of the
expression space; the jaw joint's pivot and skin weights are fitted to ICT's jawOpen), eyes moved
by the eye joints (ICT's eyeLook* and pupil shapes left out), and the remaining 44 expression
shapes compressed to 40 PCA modes named exp000... (scaled by their standard deviation, as FLAME's
are). Written as a FLAME .npz (the keys of generic_model.pkl) and read by `load_flame`, so the
model is FLAME-format end to end; ICT's landmark ids (iBUG-68) come back separately for tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

NUM_SHAPE = 10
NUM_EXPRESSION = 40
JAW_SHAPES = ("jawOpen", "jawLeft", "jawRight")


def _affine_weights(points: np.ndarray, target: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the k vertices nearest `target` and weights w (sum 1, min |w|) with w @ points[ids] = target."""
    ids = np.argsort(np.linalg.norm(points - target, axis=1))[:k]
    a = np.vstack([points[ids].T, np.ones(k)])  # [4, k]
    w = a.T @ np.linalg.solve(a @ a.T, np.append(target, 1.0))
    return ids, w


def ict_flame_arrays(ict) -> tuple[dict, np.ndarray]:
    """(FLAME-format arrays, iBUG-68 landmark ids into them) from ICT-FaceKit (a HeadModel from
    load_ict_facekit)."""
    import torch

    from headcap.core.threads import torch_threads

    masks = {k: v.numpy() for k, v in ict.region_masks.items()}
    keep = masks["skin"] | masks["eyes"]
    new_id = np.full(ict.num_vertices, -1)
    new_id[keep] = np.arange(int(keep.sum()))
    faces = ict.faces.numpy()
    faces = new_id[faces[keep[faces].all(1)]]
    template = ict.template.numpy()[keep]
    basis = ict.expression_basis.numpy()[:, keep]
    names = list(ict.expression_names)
    eyes = masks["eyes"][keep]
    left, right = masks["eyeball_left"][keep], masks["eyeball_right"][keep]
    num_v = len(template)

    # expression PCA without the jaw, gaze and pupil shapes (FLAME does those with joints)
    rest = [i for i, n in enumerate(names) if n not in JAW_SHAPES and not n.startswith(("eyeLook", "pupil"))]
    flat = basis[rest].reshape(len(rest), -1)
    with torch_threads(1):  # numpy's threaded BLAS crawls on a busy machine
        _, sigma, vt = (t.numpy() for t in torch.linalg.svd(torch.from_numpy(flat), full_matrices=False))
    expr = (vt[:NUM_EXPRESSION] * (sigma[:NUM_EXPRESSION, None] / np.sqrt(len(rest)))).reshape(-1, num_v, 3)
    # PCA signs are arbitrary: make each mode's largest displacement positive (deterministic)
    for e in range(len(expr)):
        flat_e = expr[e].reshape(-1)
        expr[e] *= np.sign(flat_e[np.argmax(np.abs(flat_e))])
    ident = ict.identity_basis.numpy()[:NUM_SHAPE, keep]

    # jaw: a rigid rotation d = w x (x - p) fitted to ICT's jawOpen on the vertices that move most
    jaw = basis[names.index("jawOpen")]
    moving = np.linalg.norm(jaw, axis=1) > 0.7 * np.linalg.norm(jaw, axis=1).max()
    x = template[moving]
    # d = w x x + t, linear in (w, t): [x]_x^T w ... written as -[x]_x w + t
    rows = np.zeros((3 * len(x), 6))
    for i, (px, py, pz) in enumerate(x):
        rows[3 * i:3 * i + 3, :3] = -np.array([[0, -pz, py], [pz, 0, -px], [-py, px, 0]])
        rows[3 * i:3 * i + 3, 3:] = np.eye(3)
    sol = np.linalg.lstsq(rows, jaw[moving].reshape(-1), rcond=None)[0]
    omega, t = sol[:3], sol[3:]
    pivot = np.cross(omega, t) / (omega @ omega)
    rigid = np.cross(omega, template - pivot)
    jaw_w = np.clip(np.einsum("vc,vc->v", jaw, rigid) / np.maximum((rigid ** 2).sum(1), 1e-12), 0.0, 1.0)
    jaw_w[np.linalg.norm(jaw, axis=1) < 2e-4] = 0.0
    jaw_w[eyes] = 0.0
    # smooth the weights over the mesh (a few Jacobi steps of the graph Laplacian)
    adj = sp.coo_matrix((np.ones(faces.size), (faces.ravel(), np.roll(faces, 1, 1).ravel())), shape=(num_v, num_v))
    adj = ((adj + adj.T) > 0).astype(float).tocsr()
    deg = np.maximum(np.asarray(adj.sum(1)).ravel(), 1)
    for _ in range(4):
        jaw_w = np.where(eyes, 0.0, 0.5 * jaw_w + 0.5 * (adj @ jaw_w) / deg)

    joints = np.array([[0.0, -0.13, -0.03], [0.0, -0.07, -0.03], pivot,
                       template[left].mean(0), template[right].mean(0)])
    regressor = np.zeros((5, num_v))
    for j in range(3):
        ids, w = _affine_weights(template, joints[j])
        regressor[j, ids] = w
    regressor[3, left] = 1.0 / left.sum()
    regressor[4, right] = 1.0 / right.sum()

    weights = np.zeros((num_v, 5))
    neck_blend = np.clip((-0.09 - template[:, 1]) / 0.06, 0.0, 1.0)
    weights[:, 2] = jaw_w
    weights[:, 0] = (1 - jaw_w) * neck_blend
    weights[:, 1] = (1 - jaw_w) * (1 - neck_blend)
    weights[eyes] = 0.0
    weights[left, 3] = 1.0
    weights[right, 4] = 1.0

    # pose correctives: small smooth fields on the vertices each joint moves (FLAME's are learnt)
    rng = np.random.default_rng(0)
    posedirs = np.zeros((num_v, 3, 36))
    centred = template - template.mean(0)
    for p in range(36):
        field = centred @ rng.normal(scale=0.02, size=(3, 3))
        posedirs[:, :, p] = field * weights[:, 1 + p // 9, None]

    arrays = {
        "v_template": template,
        "f": faces.astype(np.uint32),
        "shapedirs": np.concatenate([ident, expr], 0).transpose(1, 2, 0),
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
    }
    return arrays, new_id[ict.landmark_ids.numpy()]


def write_ict_flame(ict, out: Path) -> np.ndarray:
    """Write the FLAME-format npz of ICT-FaceKit (a HeadModel); returns its iBUG-68 landmark ids."""
    arrays, landmarks = ict_flame_arrays(ict)
    np.savez(out, **arrays)
    return landmarks
