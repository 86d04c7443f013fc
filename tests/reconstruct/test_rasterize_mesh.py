"""Mesh rasterizer: C++ kernel vs the torch reference vs brute-force/analytic ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from headcap.calib.camera import Camera
from headcap.reconstruct.rasterize_mesh import (Fragments, _eval_pixels, interpolate, rasterize, rasterize_reference,
                                        render_mesh)
from headcap.reconstruct.shading import sample_texture


def random_mesh(seed: int, height: int, width: int, num_verts: int = 40, num_faces: int = 30,
                dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(num_verts, 3, generator=g, dtype=dtype)
    v[:, 0] = v[:, 0] * (width + 16) - 8
    v[:, 1] = v[:, 1] * (height + 16) - 8
    v[:, 2] = v[:, 2] * 3 + 0.5
    f = torch.randint(0, num_verts, (num_faces, 3), generator=g)
    return v, f


def brute_force(v: torch.Tensor, f: torch.Tensor, height: int, width: int):
    """Independent ground truth: per pixel and triangle, solve the 2x2 barycentric system."""
    tid = -np.ones((height, width), np.int64)
    depth = np.full((height, width), np.inf)
    bary = np.zeros((height, width, 3))
    vn = v.numpy()
    for t, (a, b, c) in enumerate(f.numpy()):
        pa, pb, pc = vn[a], vn[b], vn[c]
        m = np.array([[pb[0] - pa[0], pc[0] - pa[0]], [pb[1] - pa[1], pc[1] - pa[1]]])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        ys, xs = np.mgrid[0:height, 0:width]
        rhs = np.stack([xs.ravel() - pa[0], ys.ravel() - pa[1]])
        l12 = np.linalg.solve(m, rhs)
        lam = np.stack([1 - l12[0] - l12[1], l12[0], l12[1]], 1)
        inside = (lam >= -1e-12).all(1)
        z = np.array([pa[2], pb[2], pc[2]])
        persp = lam / z
        d = 1.0 / persp.sum(1)
        for p in np.nonzero(inside)[0]:
            y, x = divmod(p, width)
            if d[p] < depth[y, x] - 1e-12:
                depth[y, x], tid[y, x], bary[y, x] = d[p], t, persp[p] * d[p]
    return tid, bary, depth


def assert_same_up_to_ties(a: Fragments, b: Fragments, v, f, bary_tol=1e-5):
    differ = (a.triangle_id != b.triangle_id).nonzero()
    for y, x in differ.tolist():
        ta, tb = int(a.triangle_id[y, x]), int(b.triangle_id[y, x])
        assert ta >= 0 and tb >= 0, f"coverage differs at ({x}, {y}): {ta} vs {tb}"
        ids = torch.tensor([ta, tb])
        inside, _, d = _eval_pixels(v.double()[f[ids]], torch.full((2,), float(x), dtype=torch.float64),
                                    torch.full((2,), float(y), dtype=torch.float64))
        assert inside.all() and abs(float(d[0] - d[1])) <= 1e-7 * float(d.abs().max()), \
            f"not a depth tie at ({x}, {y}): triangles {ta}, {tb}, depths {d.tolist()}"
    same = a.triangle_id == b.triangle_id
    assert float((a.bary.double() - b.bary.double())[same].abs().max()) <= bary_tol
    hit = same & (a.triangle_id >= 0)
    assert torch.allclose(a.depth.double()[hit], b.depth.double()[hit], rtol=1e-6, atol=0)
    assert torch.isinf(a.depth[a.triangle_id < 0]).all()
    return differ.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_matches_brute_force(seed):
    v, f = random_mesh(seed, 12, 16, num_verts=12, num_faces=8)
    ref = rasterize_reference(v, f, 12, 16, near=0.0)
    tid, bary, depth = brute_force(v, f, 12, 16)
    np.testing.assert_array_equal(ref.triangle_id.numpy(), tid)
    np.testing.assert_allclose(ref.bary.numpy(), bary, atol=1e-9)
    assert ref.mask.float().mean() > 0.3


@pytest.mark.parametrize("seed,height,width,cull", [(0, 48, 64, False), (1, 33, 17, False), (2, 64, 64, True),
                                                     (3, 40, 90, False)])
def test_cpp_matches_reference_random_meshes(seed, height, width, cull):
    v, f = random_mesh(seed, height, width, num_verts=80, num_faces=60)
    cpp = rasterize(v, f, height, width, "cpp", cull_backfaces=cull)
    ref = rasterize_reference(v, f, height, width, cull_backfaces=cull)
    assert cpp.backend == "cpp" and ref.backend == "torch"
    assert ref.mask.float().mean() > (0.3 if cull else 0.6)
    assert assert_same_up_to_ties(cpp, ref, v, f) <= 2
    chunked = rasterize_reference(v, f, height, width, cull_backfaces=cull, max_pairs=97)
    assert torch.equal(chunked.triangle_id, ref.triangle_id) and torch.equal(chunked.bary, ref.bary)


def test_float32_input_and_culling_rules():
    v, f = random_mesh(7, 40, 40, num_verts=60, num_faces=50, dtype=torch.float32)
    cpp = rasterize(v, f, 40, 40, "cpp")
    assert cpp.bary.dtype == torch.float32 and cpp.depth.dtype == torch.float32
    assert_same_up_to_ties(cpp, rasterize_reference(v.double(), f, 40, 40), v, f)
    # a triangle with one vertex behind the near plane is culled whole, not clipped
    tri = torch.tensor([[2.0, 2.0, 1.0], [30.0, 3.0, 1.0], [5.0, 30.0, 1.0]])
    assert rasterize(tri, torch.tensor([[0, 1, 2]]), 32, 32).mask.sum() > 300
    tri[2, 2] = 1e-4
    assert rasterize(tri, torch.tensor([[0, 1, 2]]), 32, 32).mask.sum() == 0
    assert rasterize_reference(tri, torch.tensor([[0, 1, 2]]), 32, 32).mask.sum() == 0


def test_front_faces_and_perspective_correct_barycentrics():
    """A tilted plane seen by a pinhole camera: interpolated 3D points must lie on each pixel's ray."""
    f_px, c = 40.0, 15.5
    corners = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=torch.float64)
    cam_pts = torch.cat([corners, (1.5 + 0.8 * corners[:, :1])], dim=1)  # z varies with x
    verts_screen = torch.cat([cam_pts[:, :2] / cam_pts[:, 2:] * f_px + c, cam_pts[:, 2:]], dim=1)
    # wound so that (v1 - v0) x (v2 - v0) points to -z (towards the camera)
    faces = torch.tensor([[0, 3, 2], [0, 2, 1]])
    normal = torch.linalg.cross(cam_pts[3] - cam_pts[0], cam_pts[2] - cam_pts[0])
    assert normal[2] < 0
    frags = rasterize(verts_screen, faces, 32, 32, cull_backfaces=True)
    assert frags.mask.sum() > 200
    assert rasterize(verts_screen, faces.flip(1), 32, 32, cull_backfaces=True).mask.sum() == 0
    p = interpolate(cam_pts, frags, faces)[frags.mask]
    ys, xs = frags.mask.nonzero().unbind(1)
    assert torch.allclose(p[:, 0] / p[:, 2] * f_px + c, xs.double(), atol=1e-9)
    assert torch.allclose(p[:, 1] / p[:, 2] * f_px + c, ys.double(), atol=1e-9)
    assert torch.allclose(p[:, 2], frags.depth[frags.mask], atol=1e-12)


def tiny_scene(dtype=torch.float64):
    verts = torch.tensor([[1.3, 1.2, 1.0], [9.6, 2.1, 2.0], [2.2, 8.7, 1.5], [9.1, 9.4, 3.0]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return verts, faces


def test_interpolate_gradients_match_reference_and_finite_differences():
    verts, faces = tiny_scene()
    g = torch.Generator().manual_seed(3)
    attrs = torch.randn(4, 2, generator=g, dtype=torch.float64)
    cpp, ref = rasterize(verts, faces, 11, 11, "cpp"), rasterize_reference(verts, faces, 11, 11)
    assert torch.equal(cpp.triangle_id, ref.triangle_id)
    weight = torch.randn(11, 11, 2, generator=g, dtype=torch.float64)
    grads = []
    for frags in (cpp, ref):
        a, v = attrs.clone().requires_grad_(), verts.clone().requires_grad_()
        (interpolate(a, frags, faces, v) * weight).sum().backward()
        grads.append((a.grad, v.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12) and torch.allclose(grads[0][1], grads[1][1], atol=1e-12)
    assert grads[0][1].abs().sum() > 0
    assert torch.autograd.gradcheck(lambda a, v: interpolate(a, cpp, faces, v), (attrs.clone().requires_grad_(),
                                    verts.clone().requires_grad_()), eps=1e-6, atol=1e-7)
    # without verts_screen the forward equals the geometry-differentiable one
    assert torch.allclose(interpolate(attrs, cpp, faces), interpolate(attrs, cpp, faces, verts), atol=1e-12)


def test_sample_texture_against_analytic_texture():
    ht, wt = 6, 9
    rows, cols = torch.meshgrid(torch.arange(ht, dtype=torch.float64), torch.arange(wt, dtype=torch.float64),
                                indexing="ij")
    tex = torch.stack([2.0 * cols + 0.5 * rows + 1.0, -cols + 3.0 * rows], dim=-1)
    g = torch.Generator().manual_seed(5)
    uv = torch.rand(7, 5, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    out = sample_texture(tex, uv)
    col, row = uv[..., 0] * wt - 0.5, (1.0 - uv[..., 1]) * ht - 0.5  # v up: v = 1 is texture row 0
    expected = torch.stack([2.0 * col + 0.5 * row + 1.0, -col + 3.0 * row], dim=-1)
    assert torch.allclose(out, expected, atol=1e-10)
    corner = sample_texture(tex, torch.tensor([[0.5 / wt, 1 - 0.5 / ht]], dtype=torch.float64), mode="nearest")
    assert torch.equal(corner[0], tex[0, 0])
    assert torch.autograd.gradcheck(lambda t, u: sample_texture(t, u), (tex.clone().requires_grad_(),
                                    uv[:2, :2].clone().requires_grad_()), eps=1e-6, atol=1e-6)


def test_render_mesh_textured_plane_matches_ray_plane_ground_truth():
    """Tilted textured quad: each pixel's colour = texture at the analytic ray/plane uv."""
    size, f_px = 40, 50.0
    cam = Camera("cam", size, size, np.array([[f_px, 0, 19.5], [0, f_px, 19.5], [0, 0, 1.0]]))
    xy = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=torch.float64)
    verts = torch.cat([xy, 1.2 + 0.6 * xy[:, :1]], dim=1)  # plane z = 1.2 + 0.6 x
    faces = torch.tensor([[0, 3, 2], [0, 2, 1]])
    uvs = torch.stack([xy[:, 0] + 0.5, 0.5 - xy[:, 1]], dim=1)  # v up, y down
    tex = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = render_mesh(verts, faces, cam, uvs=uvs, face_uvs=faces, texture=tex, background=0.25)
    mask = out["mask"] > 0
    assert 0.3 < mask.float().mean() < 0.9
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    xn, yn = (xs - 19.5) / f_px, (ys - 19.5) / f_px
    t = 1.2 / (1 - 0.6 * xn)
    uv_true = torch.stack([xn * t + 0.5, 0.5 - yn * t], dim=-1)
    inside = (uv_true > 0).all(-1) & (uv_true < 1).all(-1)
    assert (inside != mask).sum() <= 2  # centres within 1e-12 of the quad's border may go either way
    assert torch.allclose(out["rgb"][mask], sample_texture(tex, uv_true)[mask], atol=1e-9)
    assert torch.allclose(out["depth"][mask], t[mask], atol=1e-9)
    assert (out["rgb"][~mask] == 0.25).all()
    assert torch.allclose(out["normals"][mask], torch.tensor([0.6, 0.0, -1.0], dtype=torch.float64) / 1.16619037896906,
                          atol=1e-9)


def test_input_validation_names_the_argument():
    v, f = tiny_scene()
    with pytest.raises(ValueError, match="verts_screen"):
        rasterize(v[:, :2], f, 8, 8)
    with pytest.raises(ValueError, match="faces"):
        rasterize(v, torch.tensor([[0, 1, 7]]), 8, 8)
    with pytest.raises(TypeError, match="faces"):
        rasterize(v, f.float(), 8, 8)
    with pytest.raises(ValueError, match="height"):
        rasterize(v, f, 0, 8)
    with pytest.raises(ValueError, match="backend"):
        rasterize(v, f, 8, 8, backend="opengl")
    with pytest.raises(ValueError, match="texture"):
        render_mesh(v, f, Camera("c", 8, 8, np.eye(3)), texture=torch.zeros(2, 2, 3))
