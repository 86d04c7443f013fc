"""Registration, step 3: per-vertex free-form offsets that the head model cannot express.

Given the model fit's vertices v (template topology) and a frame's cloud, solve for offsets d
[V, 3] minimising (scipy.sparse, one sparse linear solve per round)

    sum_i  c_i ( (m_i . (v_i + d_i - q_i))^2 + tangent |v_i + d_i - q_i|^2 )
  + smoothness * sum_edges |d_i - d_j|^2 + stiffness * |d|^2

where q_i, m_i are a local plane of the cloud around vertex i (confidence-weighted mean of its
nearest cloud points whose normals agree with the vertex normal, within a radius), c_i that
plane's weight; the edge term is d^T K d with K the mesh's graph Laplacian (a membrane: one
ring of fill per vertex, so the sparse factorisation stays cheap): the offsets are smooth, vertices
the cloud does not see follow their neighbours (a harmonic extension) and are held by the
stiffness term. Each vertex also gets a confidence in [0, 1]: observed (a plane was found) x
distance agreement x normal agreement.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from headcap.reconstruct.registration_rigid import PointCloud

__all__ = ["NonrigidConfig", "NonrigidResult", "uniform_laplacian", "vertex_normals_np", "nonrigid_refine",
           "local_planes"]


@dataclass(frozen=True)
class NonrigidConfig:
    rounds: int = 3
    """Correspondence updates (one sparse solve each)."""
    neighbours: int = 12
    """Cloud points per vertex for its local plane."""
    radius: float = 0.003
    """Farthest cloud point (m) that counts for a vertex's plane."""
    normal_cos: float = 0.5
    """Least cosine between a vertex normal and a cloud normal."""
    smoothness: float = 1.0
    """Weight of the Laplacian term sum_edges |d_i - d_j|^2, relative to a fully confident vertex."""
    stiffness: float = 1e-3
    """Weight of |d|^2 (keeps vertices nobody sees near the model fit)."""
    tangent: float = 0.05
    """Weight of the point-to-point part beside point-to-plane."""
    sigma: float = 0.001
    """Distance (m) at which a vertex's confidence falls to 1/e."""
    along_normal: bool = False
    """Offsets along the model fit's vertex normals only (one number per vertex): the fit fixes
    the correspondence, the offsets the shape; noisy clouds cannot slide the surface sideways."""


@dataclass
class NonrigidResult:
    vertices: np.ndarray     # [V, 3]
    offsets: np.ndarray      # [V, 3]
    confidence: np.ndarray   # [V] in [0, 1]
    observed: np.ndarray     # [V] bool: a cloud plane was found
    distance: np.ndarray     # [V] point-to-plane distance to the cloud (m), NaN when unobserved


def uniform_laplacian(faces: np.ndarray, num_vertices: int) -> sp.csr_matrix:
    """The graph Laplacian K = D - A of the mesh's edges ([V, V], symmetric positive
    semi-definite): d^T K d = sum over edges |d_i - d_j|^2."""
    f = np.asarray(faces, np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0
    return (sp.diags(np.asarray(adj.sum(1)).ravel()) - adj).tocsr()


def vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    acc = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(acc, faces[:, k], fn)
    return acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-20)


def local_planes(vertices: np.ndarray, normals: np.ndarray, active: np.ndarray, cloud: PointCloud,
                 config: NonrigidConfig):
    """Per active vertex: plane point q [V, 3], plane normal m [V, 3], weight c [V] (0: none)."""
    V = len(vertices)
    q = np.zeros((V, 3))
    m = np.zeros((V, 3))
    c = np.zeros(V)
    ids = np.flatnonzero(active)
    if len(ids) == 0 or len(cloud.points) == 0:
        return q, m, c
    k = min(config.neighbours, len(cloud.points))
    dist, idx = cloud.tree.query(vertices[ids], k=k, distance_upper_bound=config.radius)
    dist, idx = dist.reshape(len(ids), k), idx.reshape(len(ids), k)
    ok = np.isfinite(dist)
    idx = np.where(ok, idx, 0)
    pn = cloud.normals[idx]                                   # [n, k, 3]
    ok &= np.einsum("nkc,nc->nk", pn, normals[ids]) > config.normal_cos
    w = np.where(ok, cloud.confidence[idx], 0.0)
    wsum = w.sum(1)
    has = (ok.sum(1) >= 3) & (wsum > 0)
    wn = w[has] / wsum[has, None]
    q_has = np.einsum("nk,nkc->nc", wn, cloud.points[idx[has]])
    m_has = np.einsum("nk,nkc->nc", wn, pn[has])
    m_has /= np.maximum(np.linalg.norm(m_has, axis=1, keepdims=True), 1e-12)
    q[ids[has]], m[ids[has]] = q_has, m_has
    c[ids[has]] = np.minimum(ok[has].sum(1) / k * 2.0, 1.0) * np.clip(np.einsum("nc,nc->n", m_has, normals[ids[has]]), 0, 1)
    return q, m, c


def nonrigid_refine(vertices: np.ndarray, faces: np.ndarray, active: np.ndarray, cloud: PointCloud,
                    config: NonrigidConfig = NonrigidConfig(), laplacian: sp.csr_matrix | None = None) -> NonrigidResult:
    """Offsets for `vertices` [V, 3] (the model fit) towards `cloud`; `active` [V] bool marks the
    vertices that may take a plane (the outer surface); `faces` are all the mesh's triangles."""
    base = np.asarray(vertices, np.float64)
    V = len(base)
    lap = uniform_laplacian(faces, V) if laplacian is None else laplacian
    reg = config.smoothness * lap + config.stiffness * sp.identity(V)
    reg3 = sp.kron(reg, sp.identity(3), format="csr")
    offsets = np.zeros_like(base)
    base_normals = vertex_normals_np(base, faces)
    if config.along_normal:
        # d = N s: N [3V, V] puts each vertex's scalar offset along its normal
        basis = sp.csr_matrix((base_normals.ravel(), (np.arange(3 * V), np.repeat(np.arange(V), 3))), shape=(3 * V, V))
        reg1 = (basis.T @ reg3 @ basis).tocsr()
    for _ in range(config.rounds):
        cur = base + offsets
        normals = vertex_normals_np(cur, faces)
        q, m, c = local_planes(cur, normals, active, cloud, config)
        if config.along_normal:
            mn = np.einsum("vc,vc->v", m, base_normals)
            gap = base - q
            diag = c * (mn ** 2 + config.tangent)
            rhs = -c * (mn * np.einsum("vc,vc->v", m, gap) + config.tangent * np.einsum("vc,vc->v", base_normals, gap))
            scalar = spsolve((sp.diags(diag) + reg1).tocsc(), rhs)
            offsets = scalar[:, None] * base_normals
            continue
        # per-vertex 3x3 data blocks c (m m^T + tangent I)
        blocks = c[:, None, None] * (m[:, :, None] * m[:, None, :] + config.tangent * np.eye(3))
        rows = np.repeat(np.arange(3 * V).reshape(V, 3, 1), 3, axis=2)
        cols = np.repeat(np.arange(3 * V).reshape(V, 1, 3), 3, axis=1)
        data = sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * V, 3 * V))
        rhs = np.einsum("vij,vj->vi", blocks, q - base).ravel()
        offsets = spsolve((data + reg3).tocsc(), rhs).reshape(V, 3)
    cur = base + offsets
    normals = vertex_normals_np(cur, faces)
    q, m, c = local_planes(cur, normals, active, cloud, config)
    observed = c > 0
    distance = np.full(V, np.nan)
    distance[observed] = np.abs(np.einsum("vc,vc->v", m[observed], cur[observed] - q[observed]))
    confidence = np.where(observed, c * np.exp(-(np.nan_to_num(distance) / config.sigma) ** 2), 0.0)
    return NonrigidResult(cur, offsets, confidence.astype(np.float32), observed, distance)
