"""Mesh rasterizer: SH shading, normals, edge antialiasing gradients and the ICT head."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from headcap.calib.camera import Camera, look_at
from headcap.reconstruct.rasterize_mesh import antialias, project_vertices, rasterize, rasterize_reference, render_mesh
from headcap.reconstruct.shading import UNIFORM_WHITE_SH00, sh_basis_irradiance, sh_irradiance, shade_sh, vertex_normals


def random_unit(n: int, seed: int) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True)


def test_sh_irradiance_matches_ramamoorthi_hanrahan_closed_form():
    g = torch.Generator().manual_seed(11)
    coeffs = torch.randn(9, 3, generator=g, dtype=torch.float64)
    n = random_unit(50, 12)
    x, y, z = (n[:, i:i + 1] for i in range(3))
    L = coeffs  # rows: L00, L1-1, L10, L11, L2-2, L2-1, L20, L21, L22
    c1, c2, c3, c4, c5 = 0.429043, 0.511664, 0.743125, 0.886227, 0.247708  # paper, eq. 13
    e = (c1 * L[8] * (x * x - y * y) + c3 * L[6] * z * z + c4 * L[0] - c5 * L[6]
         + 2 * c1 * (L[4] * x * y + L[7] * x * z + L[5] * y * z) + 2 * c2 * (L[3] * x + L[1] * y + L[2] * z))
    assert torch.allclose(sh_irradiance(n, coeffs), e, rtol=0, atol=2e-5 * float(L.abs().max()) * 10)


def test_sh_irradiance_matches_cosine_integral_of_the_radiance():
    """E(n) = integral of L(w) max(0, n.w) dw, by quadrature on a fine latitude/longitude grid."""
    coeffs = torch.randn(9, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    nt, nph = 400, 800
    theta = (torch.arange(nt, dtype=torch.float64) + 0.5) * math.pi / nt
    phi = (torch.arange(nph, dtype=torch.float64) + 0.5) * 2 * math.pi / nph
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    w = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], dim=-1).reshape(-1, 3)
    d_omega = (th.sin() * (math.pi / nt) * (2 * math.pi / nph)).reshape(-1)
    radiance = sh_basis_irradiance(w) @ coeffs[:, 0]
    n = random_unit(6, 3)
    numeric = ((n @ w.T).clamp(min=0) * radiance * d_omega).sum(-1)
    assert torch.allclose(sh_irradiance(n, coeffs)[:, 0], numeric, atol=2e-4)


def test_shade_sh_uniform_white_light_returns_albedo_and_is_differentiable():
    albedo = torch.rand(4, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = random_unit(20, 4).reshape(4, 5, 3)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = UNIFORM_WHITE_SH00
    assert torch.allclose(shade_sh(albedo, n, sh), albedo, atol=1e-12)
    sh = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(shade_sh, (albedo[:2, :2].clone().requires_grad_(),
                                    n[:2, :2].clone().requires_grad_(), sh.clone().requires_grad_()))


def uv_sphere(rings: int = 24, segments: int = 48):
    th = torch.linspace(0, math.pi, rings + 1, dtype=torch.float64)[1:-1]
    ph = torch.arange(segments, dtype=torch.float64) * 2 * math.pi / segments
    t, p = torch.meshgrid(th, ph, indexing="ij")
    body = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0, 0, 1.0]], dtype=torch.float64), body,
                       torch.tensor([[0, 0, -1.0]], dtype=torch.float64)])
    faces = []
    ring = lambda r, s: 1 + r * segments + s % segments  # noqa: E731
    for s in range(segments):
        faces.append([0, ring(0, s), ring(0, s + 1)])
        faces.append([len(verts) - 1, ring(rings - 2, s + 1), ring(rings - 2, s)])
        for r in range(rings - 2):
            faces.append([ring(r, s), ring(r + 1, s), ring(r + 1, s + 1)])
            faces.append([ring(r, s), ring(r + 1, s + 1), ring(r, s + 1)])
    return verts, torch.tensor(faces)


def test_vertex_normals_of_a_sphere_point_outwards():
    verts, faces = uv_sphere()
    n = vertex_normals(verts, faces)
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(verts), dtype=torch.float64))
    assert float((n * verts).sum(-1).min()) > 0.999


def triangle_mask(verts_screen, faces, size, color=None):
    frags = rasterize(verts_screen, faces, size, size)
    c = frags.mask.to(verts_screen.dtype)[..., None] if color is None else color
    return antialias(c, frags, verts_screen, faces)[..., 0]


def test_antialias_gradient_matches_finite_differences():
    verts = torch.tensor([[2.3, 1.7, 1.0], [12.6, 4.2, 1.2], [4.1, 13.3, 1.4]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    weight = torch.rand(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frags = rasterize(verts, faces, 16, 16)
    img = frags.mask.double()[..., None]
    assert torch.autograd.gradcheck(lambda v: (antialias(img, frags, v, faces)[..., 0] * weight).sum(),
                                    (verts.clone().requires_grad_(),), eps=1e-6, atol=1e-6)
    # blended coverage tracks the (translation-invariant) area far better than the hard mask
    area = 0.5 * abs(float((verts[1, 0] - verts[0, 0]) * (verts[2, 1] - verts[0, 1])
                           - (verts[1, 1] - verts[0, 1]) * (verts[2, 0] - verts[0, 0])))
    hard_err, soft_err = [], []
    for k in range(25):
        v = verts.clone()
        v[:, 0] += 0.04 * k
        v[:, 1] += 0.037 * k
        fr = rasterize(v, faces, 18, 18)
        m = fr.mask.double()[..., None]
        hard_err.append(abs(float(m.sum()) - area))
        soft_err.append(abs(float(antialias(m, fr, v, faces).sum()) - area))
    assert max(soft_err) < 0.02 * area and max(soft_err) < 0.5 * max(hard_err), (soft_err, hard_err)


def test_silhouette_loss_moves_a_triangle_to_its_target():
    faces = torch.tensor([[0, 1, 2]])
    target_verts = torch.tensor([[6.2, 5.1, 1.0], [20.4, 8.3, 1.0], [9.7, 21.6, 1.0]], dtype=torch.float64)
    target = triangle_mask(target_verts, faces, 28).detach()
    verts = target_verts.clone()
    verts[:, :2] += torch.tensor([1.6, -1.2], dtype=torch.float64)
    verts.requires_grad_()
    start = float((verts.detach() - target_verts)[:, :2].norm(dim=-1).max())
    opt = torch.optim.Adam([verts], lr=0.1)
    for _ in range(60):
        opt.zero_grad()
        loss = ((triangle_mask(verts, faces, 28) - target) ** 2).sum()
        loss.backward()
        opt.step()
    end = float((verts.detach() - target_verts)[:, :2].norm(dim=-1).max())
    assert start > 1.9 and end < 0.35, (start, end)


def ict_triangles(test_data):
    data = np.load(test_data / "ict_facekit" / "ict_facekit_light_model.npz", allow_pickle=False)
    quads = data["faces"]
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[quads[:, 3] >= 0][:, [0, 2, 3]]])
    verts = torch.tensor(data["neutral_vertices"], dtype=torch.float64) / 100.0  # cm -> m
    return verts, torch.tensor(tris, dtype=torch.int64)


def ict_camera(size: int, distortion=None) -> Camera:
    k = np.array([[1.8 * size, 0, (size - 1) / 2], [0, 1.8 * size, (size - 1) / 2], [0, 0, 1.0]])
    kw = {} if distortion is None else {"distortion_model": "opencv", "distortion": np.asarray(distortion)}
    # ICT is y-up, facing +z
    return Camera("front", size, size, k, cam_from_world=look_at([0.15, 0.0, 0.55], [0, -0.02, 0], up=(0, 1, 0)),
                  **kw)


def test_ict_head_coverage_matches_projected_silhouette(test_data):
    verts, faces = ict_triangles(test_data)
    size = 96
    cam = ict_camera(size, distortion=[0.08, -0.03, 0.002, -0.001, 0.0])
    vs = project_vertices(verts, cam)
    pix, depth = cam.project(verts)
    assert torch.allclose(vs[:, :2], pix) and torch.allclose(vs[:, 2], depth)
    frags = rasterize(vs, faces, size, size)
    ref = rasterize_reference(vs, faces, size, size)
    assert torch.equal(frags.triangle_id, ref.triangle_id)
    assert float((frags.bary - ref.bary).abs().max()) < 1e-12
    # independent silhouette: union of every projected triangle filled by OpenCV (sub-pixel, 8 bits)
    shift = 8
    pts = np.round(vs[:, :2].numpy() * (1 << shift)).astype(np.int32)
    sil = np.zeros((size, size), np.uint8)
    for tri in faces.numpy():
        cv2.fillConvexPoly(sil, pts[tri], 1, lineType=cv2.LINE_8, shift=shift)
    ours, sil = frags.mask.numpy(), sil.astype(bool)
    # OpenCV also fills pixels an edge merely touches, so our centre-sampled mask lies inside it
    assert (ours & ~sil).sum() <= 0.002 * ours.sum()
    assert (ours & sil).sum() / (ours | sil).sum() > 0.96
    # disagreements are confined to the silhouette's one-pixel rim
    sil8 = sil.astype(np.uint8)
    rim = cv2.dilate(sil8, np.ones((3, 3), np.uint8)) != cv2.erode(sil8, np.ones((3, 3), np.uint8))
    assert np.all(rim[ours != sil])
    assert 0.25 < ours.mean() < 0.7
    # a closed head: culling back faces leaves the silhouette unchanged
    assert torch.equal(rasterize(vs, faces, size, size, cull_backfaces=True).mask, frags.mask)


def test_ict_head_render_is_lit_from_the_light_side(test_data):
    verts, faces = ict_triangles(test_data)
    cam = ict_camera(64)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0], sh[3] = UNIFORM_WHITE_SH00, 1.5  # brighter towards +x (the head's left, image right)
    out = render_mesh(verts.float(), faces, cam, sh_coeffs=sh.float(), background=0.0)
    m = out["mask"] > 0
    assert out["rgb"].dtype == torch.float32 and out["normals"].shape == (64, 64, 3)
    cols = torch.arange(64)[None, :].expand(64, 64)
    left, right = out["rgb"][m & (cols < 28)].mean(), out["rgb"][m & (cols > 36)].mean()
    assert right > left + 0.1, (left, right)
    # normals face the camera where the surface is visible
    cam_dir = torch.tensor(cam.centre, dtype=torch.float32) - verts.float().mean(0)
    assert float((out["normals"][m] @ (cam_dir / cam_dir.norm()) > 0).float().mean()) > 0.97
