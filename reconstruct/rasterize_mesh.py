"""Triangle-mesh rasterizer: four small primitives in the manner of nvdiffrast.

- `rasterize`: z-buffer rasterization to triangle id + perspective-correct barycentrics + depth
  (C++/OpenMP kernel `reconstruct/csrc/mesh_raster/mesh_raster.cpp`, or the pure-torch reference
  `rasterize_reference`, which is the specification and also runs on CUDA tensors).
- `interpolate`: per-vertex (or per-corner) attributes -> pixels, differentiable w.r.t. the
  attributes and, when `verts_screen` is passed, w.r.t. the vertex positions.
- `shading.sample_texture`: UV texture lookup.
- `antialias`: analytic edge antialiasing that gives geometry gradients from silhouettes.

Screen convention (headcap/OpenCV): `verts_screen[:, :2]` are pixel coordinates with pixel
centres at INTEGER coordinates, so pixel column i / row j is sampled at (x=i, y=j);
`verts_screen[:, 2]` is the camera-frame depth z (> 0 in front of the camera). Barycentrics and
depth are perspective-correct w.r.t. that z. A triangle with ANY vertex at depth <= `near` is
culled whole (no near-plane clipping): it is meant for cameras that see the whole head.
Front faces: a triangle whose normal (v1 - v0) x (v2 - v0) points towards the camera has a
negative signed area in the y-down pixel frame; `cull_backfaces=True` drops the others.
Pixel centres exactly on an edge belong to every triangle sharing it; the nearest wins and an
exact depth tie goes to the lower triangle id.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from headcap.reconstruct.shading import sample_texture, shade_sh, vertex_normals

_LOG = logging.getLogger(__name__)
_CSRC = Path(__file__).resolve().parent / "csrc" / "mesh_raster" / "mesh_raster.cpp"
_CORE_CSRC = Path(__file__).resolve().parents[1] / "core" / "csrc"
BACKENDS = ("auto", "cpp", "torch")


@dataclass
class Fragments:
    """Per-pixel rasterization result for an H x W image.

    triangle_id: LongTensor[H, W], -1 where no triangle covers the pixel centre.
    bary: Tensor[H, W, 3] perspective-correct barycentrics (0 where empty); NOT differentiable
      (use `interpolate(..., verts_screen=...)` for gradients w.r.t. geometry).
    depth: Tensor[H, W] camera-frame z of the visible surface, inf where empty.
    backend: "cpp" or "torch", the rasterizer that produced it.
    """

    triangle_id: Tensor
    bary: Tensor
    depth: Tensor
    backend: str = "torch"

    @property
    def mask(self) -> Tensor:
        """BoolTensor[H, W]: pixels covered by a triangle."""
        return self.triangle_id >= 0


def _extension():
    from headcap.core.extension import load_extension

    return load_extension("mesh_raster", [_CSRC], extra_cflags=(f"-I{_CORE_CSRC}",),
                          headers=(_CORE_CSRC / "hc_parallel.h",))


def _check_mesh(verts_screen, faces, height, width) -> None:
    if not isinstance(verts_screen, Tensor) or not verts_screen.is_floating_point():
        raise TypeError(f"verts_screen: expected a floating-point Tensor, got {type(verts_screen).__name__}"
                        + (f" of dtype {verts_screen.dtype}" if isinstance(verts_screen, Tensor) else ""))
    if verts_screen.ndim != 2 or verts_screen.shape[1] != 3:
        raise ValueError(f"verts_screen: expected shape [V, 3], got {tuple(verts_screen.shape)}")
    if not isinstance(faces, Tensor) or faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected an integer LongTensor [F, 3], got "
                        f"{faces.dtype if isinstance(faces, Tensor) else type(faces).__name__}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected shape [F, 3], got {tuple(faces.shape)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_screen.shape[0]):
        raise ValueError(f"faces: vertex ids must lie in [0, {verts_screen.shape[0] - 1}], "
                         f"got range [{int(faces.min())}, {int(faces.max())}]")
    if faces.shape[0] >= 2**31:
        raise ValueError(f"faces: at most 2^31 - 1 triangles, got {faces.shape[0]}")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _edge(ax, ay, bx, by, px, py):
    # same operation order as edge_fn in mesh_raster.cpp (bitwise agreement in float64)
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _eval_pixels(tri: Tensor, px: Tensor, py: Tensor):
    """tri [N, 3, 3] screen triangles, pixel centres px, py [N] -> (inside [N], bary [N, 3], depth [N])."""
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    w0 = _edge(x[:, 1], y[:, 1], x[:, 2], y[:, 2], px, py)
    w1 = _edge(x[:, 2], y[:, 2], x[:, 0], y[:, 0], px, py)
    w2 = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], px, py)
    pos = area > 0
    inside = torch.where(pos, (w0 >= 0) & (w1 >= 0) & (w2 >= 0), (w0 <= 0) & (w1 <= 0) & (w2 <= 0))
    q = torch.stack([(w0 / area) / z[:, 0], (w1 / area) / z[:, 1], (w2 / area) / z[:, 2]], dim=-1)
    s = q[:, 0] + q[:, 1] + q[:, 2]
    return inside, q / s[:, None], 1.0 / s


def rasterize_reference(verts_screen: Tensor, faces: Tensor, height: int, width: int, *,
                        near: float = 1e-3, cull_backfaces: bool = False,
                        max_pairs: int = 1 << 22) -> Fragments:
    """Pure-torch z-buffer rasterizer (the specification of `rasterize`).

    Enumerates every (triangle, pixel centre inside its bounding box) pair, tests it with exact
    edge functions in the dtype of `verts_screen` (pass float64 for an exact reference), and
    resolves visibility with a scatter-min. Work is chunked to <= `max_pairs` pairs so that
    large images stay within memory. Runs on any device.
    """
    _check_mesh(verts_screen, faces, height, width)
    v = verts_screen.detach()
    dev, dtype = v.device, v.dtype
    faces = faces.to(device=dev, dtype=torch.int64)
    num_pix = height * width
    tri = v[faces]
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
    valid = torch.isfinite(tri).all(dim=(1, 2)) & (z > near).all(dim=1) & (area != 0) & torch.isfinite(area)
    if cull_backfaces:
        valid &= area < 0
    x0 = torch.ceil(x.amin(1)).clamp(min=0)
    x1 = torch.floor(x.amax(1)).clamp(max=width - 1)
    y0 = torch.ceil(y.amin(1)).clamp(min=0)
    y1 = torch.floor(y.amax(1)).clamp(max=height - 1)
    valid &= (x0 <= x1) & (y0 <= y1)
    ids = valid.nonzero().squeeze(1)
    x0, x1, y0, y1 = (t[ids].long() for t in (x0, x1, y0, y1))
    bw = x1 - x0 + 1
    counts = bw * (y1 - y0 + 1)

    zbuf = torch.full((num_pix,), float("inf"), dtype=dtype, device=dev)
    tbuf = torch.full((num_pix,), -1, dtype=torch.int64, device=dev)
    sentinel = faces.shape[0]
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < ids.numel():
        # a single triangle larger than max_pairs still forms its own chunk
        limit = (ends[start - 1] if start else 0) + max_pairs
        stop = max(start + 1, int(torch.searchsorted(ends, limit, right=True)))
        sl = slice(start, stop)
        start = stop
        cnt = counts[sl]
        owner = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)
        local = torch.arange(owner.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt)[owner]
        px = (x0[sl][owner] + local % bw[sl][owner]).to(dtype)
        py = (y0[sl][owner] + local // bw[sl][owner]).to(dtype)
        fid = ids[sl][owner]
        inside, _, depth = _eval_pixels(tri[fid], px, py)
        pix = (py.long() * width + px.long())[inside]
        depth, fid = depth[inside], fid[inside]
        chunk_z = torch.full((num_pix,), float("inf"), dtype=dtype, device=dev)
        chunk_z.scatter_reduce_(0, pix, depth, "amin")
        winner = depth == chunk_z[pix]
        chunk_t = torch.full((num_pix,), sentinel, dtype=torch.int64, device=dev)
        chunk_t.scatter_reduce_(0, pix[winner], fid[winner], "amin")
        # chunks come in increasing triangle id, so an exact tie keeps the earlier (lower) id
        better = chunk_z < zbuf
        zbuf = torch.where(better, chunk_z, zbuf)
        tbuf = torch.where(better, chunk_t, tbuf)

    hit = (tbuf >= 0).nonzero().squeeze(1)
    bary = torch.zeros((num_pix, 3), dtype=dtype, device=dev)
    depth = torch.full((num_pix,), float("inf"), dtype=dtype, device=dev)
    _, b, d = _eval_pixels(tri[tbuf[hit]], (hit % width).to(dtype), (hit // width).to(dtype))
    bary[hit] = b
    depth[hit] = d
    return Fragments(tbuf.view(height, width), bary.view(height, width, 3), depth.view(height, width), "torch")


# The C++ kernel has two parallel regions per call (triangle set-up, bands of rows). From this
# many pixels on, a call at 1 thread beside a busy process takes ~80 ms or more, and its second
# thread wins more CPU share than the two joins lose waiting for a descheduled helper: at
# 1024 x 1024 (160k triangles), 2 threads beside our busy process ran 1.26-1.32x faster than 1
# (docs/performance.md, "Dynamic thread count"). Smaller calls take the dynamic count.
_KEEP_THREADS_PIXELS = 1 << 19


def kernel_thread_count(height: int, width: int) -> int:
    """Threads for one C++ rasterizer call: `core.threads.kernel_threads`, which keeps its count
    beside busy processes for images of at least `_KEEP_THREADS_PIXELS` pixels."""
    from headcap.core.threads import kernel_threads

    return kernel_threads(keep_under_load=int(height) * int(width) >= _KEEP_THREADS_PIXELS)


def rasterize(verts_screen: Tensor, faces: Tensor, height: int, width: int, backend: str = "auto", *,
              near: float = 1e-3, cull_backfaces: bool = False) -> Fragments:
    """Rasterize screen-space triangles with a z-buffer (nearest surface wins).

    verts_screen: [V, 3] (x_pix, y_pix, z_cam); faces: LongTensor [F, 3].
    backend: "cpp" (C++/OpenMP, CPU; built on first use), "torch" (`rasterize_reference`),
      "auto" (cpp for CPU tensors, torch for other devices or if the C++ build fails).
    Returns `Fragments` with bary/depth in the dtype of `verts_screen`; nothing here is
    differentiable (see `interpolate`). The C++ kernel evaluates in float64 whatever the input.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    _check_mesh(verts_screen, faces, height, width)
    if backend == "auto":
        backend = "cpp" if verts_screen.device.type == "cpu" else "torch"
        if backend == "cpp":
            try:
                _extension()
            except RuntimeError as exc:
                _LOG.warning("rasterize: C++ kernel unavailable (%s); using the torch reference", exc)
                backend = "torch"
    _LOG.debug("rasterize: backend=%s, %d triangles, %dx%d", backend, faces.shape[0], width, height)
    if backend == "torch":
        return rasterize_reference(verts_screen, faces, height, width, near=near, cull_backfaces=cull_backfaces)
    if verts_screen.device.type != "cpu":
        raise ValueError(f"backend: 'cpp' needs CPU tensors, verts_screen is on {verts_screen.device}")
    v = verts_screen.detach().to(torch.float64).contiguous()
    f = faces.detach().to(torch.int64).contiguous()
    from headcap.core.threads import kernel_torch_threads

    threads = kernel_thread_count(height, width)
    with kernel_torch_threads(threads):
        tid, bary, depth = _extension().rasterize_forward(v, f, height, width, float(near), bool(cull_backfaces),
                                                          verts_screen.dtype == torch.float64, threads)
    if verts_screen.dtype not in (torch.float32, torch.float64):
        bary, depth = bary.to(verts_screen.dtype), depth.to(verts_screen.dtype)
    return Fragments(tid, bary, depth, "cpp")


def rasterize_batch(verts_screen: Tensor, faces: Tensor, height: int, width: int, backend: str = "auto", *,
                    near: float = 1e-3, cull_backfaces: bool = False) -> list[Fragments]:
    """`rasterize` for B meshes/cameras sharing one topology: verts_screen [B, V, 3] -> B Fragments.

    Loops in Python: each image is already parallel over row bands inside the C++ kernel.
    """
    if not isinstance(verts_screen, Tensor) or verts_screen.ndim != 3:
        raise ValueError(f"verts_screen: expected shape [B, V, 3], got "
                         f"{tuple(verts_screen.shape) if isinstance(verts_screen, Tensor) else type(verts_screen)}")
    return [rasterize(v, faces, height, width, backend, near=near, cull_backfaces=cull_backfaces)
            for v in verts_screen]


def visible_barycentrics(fragments: Fragments, verts_screen: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiable perspective-correct barycentrics of the visible pixels.

    Returns (pixel index [N] into the flattened H*W image, bary [N, 3]) recomputed from
    `verts_screen` for the triangle ids in `fragments`, so gradients reach the vertices.
    """
    height, width = fragments.triangle_id.shape
    pix = (fragments.triangle_id.reshape(-1) >= 0).nonzero().squeeze(1)
    tid = fragments.triangle_id.reshape(-1)[pix]
    tri = verts_screen[faces[tid].to(verts_screen.device)]
    dtype = verts_screen.dtype
    _, bary, _ = _eval_pixels(tri, (pix % width).to(dtype), (pix // width).to(dtype))
    return pix, bary


def interpolate(attributes: Tensor, fragments: Fragments, faces: Tensor, verts_screen: Tensor | None = None, *,
                geometry_faces: Tensor | None = None) -> Tensor:
    """Interpolate attributes over the visible triangles.

    attributes: [A, C]; faces: LongTensor [F, 3] indexing `attributes` (e.g. face_uvs for UVs);
    verts_screen: [V, 3] optional; when given, barycentrics are recomputed from it (gradients
    w.r.t. vertex positions), with `geometry_faces` [F, 3] indexing it (default: `faces`).
    Returns [H, W, C], zero where no triangle is visible.
    """
    if attributes.ndim != 2:
        raise ValueError(f"attributes: expected shape [A, C], got {tuple(attributes.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected shape [F, 3], got {tuple(faces.shape)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= attributes.shape[0]):
        raise ValueError(f"faces: ids must index the {attributes.shape[0]} attribute rows, "
                         f"got range [{int(faces.min())}, {int(faces.max())}]")
    height, width = fragments.triangle_id.shape
    top_id = int(fragments.triangle_id.max())
    if top_id >= faces.shape[0]:
        raise ValueError(f"faces: {faces.shape[0]} triangles, but the fragments reference triangle id "
                         f"{top_id}; pass the faces that were rasterized")
    if verts_screen is not None:
        pix, bary = visible_barycentrics(fragments, verts_screen, faces if geometry_faces is None else geometry_faces)
    else:
        pix = (fragments.triangle_id.reshape(-1) >= 0).nonzero().squeeze(1)
        bary = fragments.bary.reshape(-1, 3)[pix]
    tid = fragments.triangle_id.reshape(-1)[pix]
    dtype = torch.promote_types(attributes.dtype, bary.dtype)
    corner = attributes[faces[tid]].to(dtype)
    values = (corner * bary.to(dtype)[:, :, None]).sum(dim=1)
    out = torch.zeros((height * width, attributes.shape[1]), dtype=dtype, device=attributes.device)
    return out.index_put((pix,), values).view(height, width, -1)


def antialias(color: Tensor, fragments: Fragments, verts_screen: Tensor, faces: Tensor) -> Tensor:
    """Analytic edge antialiasing with gradients w.r.t. vertex positions (nvdiffrast-style).

    color: [H, W, C] rendered with `fragments`; verts_screen: [V, 3]; faces: [F, 3].
    For every pair of horizontally/vertically adjacent pixels covered by different triangles,
    the front triangle's edge between the two centres is located at a fraction t of the way
    (from the edge functions, so differentiable w.r.t. the vertices) and the colour on the far
    side of the edge is blended towards the triangle's by the area the triangle covers in that
    pixel's 1-pixel-wide box: max(t - 1/2, 0) for the far pixel, max(1/2 - t, 0) for the near
    one. Only the pass (horizontal or vertical) more perpendicular to the edge handles it, and
    edges shared with the neighbouring pixel's triangle (mesh-interior edges) are skipped.
    Returns [H, W, C].
    """
    height, width = fragments.triangle_id.shape
    if color.shape[:2] != (height, width):
        raise ValueError(f"color: expected shape [{height}, {width}, C], got {tuple(color.shape)}")
    tid = fragments.triangle_id.reshape(-1)
    depth = fragments.depth.reshape(-1)
    flat = color.reshape(height * width, -1)
    faces = faces.to(torch.int64)
    grid = torch.arange(height * width, device=tid.device).view(height, width)
    delta = torch.zeros_like(flat)
    dtype = verts_screen.dtype
    for horizontal in (True, False):
        a = (grid[:, :-1] if horizontal else grid[:-1, :]).reshape(-1)
        b = (grid[:, 1:] if horizontal else grid[1:, :]).reshape(-1)
        diff = tid[a] != tid[b]
        a, b = a[diff], b[diff]
        front_a = depth[a] <= depth[b]
        # candidate 0: the nearer pixel's triangle; candidate 1: the other one (it may be the occluder)
        best = None
        for cand in range(2):
            s = torch.where(front_a, a, b) if cand == 0 else torch.where(front_a, b, a)
            r = torch.where(front_a, b, a) if cand == 0 else torch.where(front_a, a, b)
            t_id = tid[s]
            ok = t_id >= 0
            fv = faces[t_id.clamp(min=0)]
            tri = verts_screen[fv]
            x, y = tri[..., 0], tri[..., 1]
            sx, sy = (s % width).to(dtype), (s // width).to(dtype)
            rx, ry = (r % width).to(dtype), (r // width).to(dtype)
            area = _edge(x[:, 0], y[:, 0], x[:, 1], y[:, 1], x[:, 2], y[:, 2])
            sign = torch.where(area > 0, 1.0, -1.0).to(dtype)
            ws, wr = [], []
            for i, j in ((1, 2), (2, 0), (0, 1)):
                ws.append(sign * _edge(x[:, i], y[:, i], x[:, j], y[:, j], sx, sy))
                wr.append(sign * _edge(x[:, i], y[:, i], x[:, j], y[:, j], rx, ry))
            ws, wr = torch.stack(ws, 1), torch.stack(wr, 1)
            crossing = wr.detach() < 0
            denom = torch.where(crossing, ws - wr, torch.ones_like(ws))
            t_all = torch.where(crossing, ws / denom, torch.full_like(ws, 2.0))
            t, e = t_all.min(dim=1)
            ok &= crossing.any(dim=1)
            # the crossed edge's endpoints, to test the pass direction and shared (interior) edges
            ei, ej = (e + 1) % 3, (e + 2) % 3
            vi = fv.gather(1, ei[:, None]).squeeze(1)
            vj = fv.gather(1, ej[:, None]).squeeze(1)
            pi, pj = verts_screen[vi].detach(), verts_screen[vj].detach()
            dx, dy = (pj[:, 0] - pi[:, 0]).abs(), (pj[:, 1] - pi[:, 1]).abs()
            ok &= (dy >= dx) if horizontal else (dx > dy)
            other = faces[tid[r].clamp(min=0)]
            shared = (tid[r] >= 0) & (other == vi[:, None]).any(1) & (other == vj[:, None]).any(1)
            ok &= ~shared
            if best is None:
                best = (s, r, t, ok)
            else:
                take = ~best[3] & ok
                best = (torch.where(take, s, best[0]), torch.where(take, r, best[1]),
                        torch.where(take, t, best[2]), best[3] | ok)
        s, r, t, ok = best
        s, r, t = s[ok], r[ok], t[ok].clamp(0.0, 1.0).to(flat.dtype)
        cs, cr = flat[s], flat[r]
        delta = delta.index_add(0, r, (t - 0.5).clamp(min=0)[:, None] * (cs - cr))
        delta = delta.index_add(0, s, (0.5 - t).clamp(min=0)[:, None] * (cr - cs))
    return (flat + delta).view(color.shape)


def project_vertices(vertices_world: Tensor, camera) -> Tensor:
    """World vertices [V, 3] -> verts_screen [V, 3] = (x_pix, y_pix, z_cam) for `camera`.

    Lens distortion (calib.projection.project_points) is applied per vertex: exact at the
    vertices, approximate inside triangles (edges stay straight in the distorted image).
    Use triangles small compared with the distortion's curvature.
    """
    from headcap.calib.projection import project_points

    dtype, dev = vertices_world.dtype, vertices_world.device
    K = torch.as_tensor(camera.K, dtype=dtype, device=dev)
    cam_from_world = torch.as_tensor(camera.cam_from_world, dtype=dtype, device=dev)
    dist = torch.as_tensor(camera.distortion, dtype=dtype, device=dev)
    pix, depth = project_points(vertices_world, K, cam_from_world, camera.distortion_model, dist)
    return torch.cat([pix, depth[..., None]], dim=-1)


def render_mesh(vertices_world: Tensor, faces: Tensor, camera, *, vertex_colors: Tensor | None = None,
                uvs: Tensor | None = None, face_uvs: Tensor | None = None, texture: Tensor | None = None,
                sh_coeffs: Tensor | None = None, background=0.0, antialias_edges: bool = False,
                cull_backfaces: bool = False, backend: str = "auto") -> dict:
    """Render a mesh into `camera` (calib.camera.Camera, or anything with width/height/K/
    distortion_model/distortion/cam_from_world).

    vertices_world: [V, 3]; faces: [F, 3]; vertex_colors: [V, 3] albedo, or a texture
    [Ht, Wt, 3] with uvs [T, 2] and face_uvs [F, 3] (default albedo: 1); sh_coeffs: [9, 3]
    radiance SH in the world frame (`shading.shade_sh`; without it rgb = albedo).
    background: float or [3] or [H, W, 3]. antialias_edges: blend silhouette edges so that
    rgb and mask carry gradients w.r.t. the vertices from image edges.
    Returns dict: rgb [H, W, 3], mask [H, W] float, depth [H, W] (inf off the mesh),
    triangle_id [H, W], normals [H, W, 3] (unit, world frame, 0 off the mesh), fragments.
    """
    if vertices_world.ndim != 2 or vertices_world.shape[1] != 3:
        raise ValueError(f"vertices_world: expected shape [V, 3], got {tuple(vertices_world.shape)}")
    if texture is not None and (uvs is None or face_uvs is None):
        raise ValueError("texture: needs both uvs [T, 2] and face_uvs [F, 3]")
    if texture is not None and face_uvs.shape != faces.shape:
        raise ValueError(f"face_uvs: expected one uv triangle per face, shape {tuple(faces.shape)}, "
                         f"got {tuple(face_uvs.shape)}")
    if vertex_colors is not None and (vertex_colors.ndim != 2 or vertex_colors.shape[0] != vertices_world.shape[0]):
        raise ValueError(f"vertex_colors: expected shape [{vertices_world.shape[0]}, C], "
                         f"got {tuple(vertex_colors.shape)}")
    faces = faces.to(device=vertices_world.device, dtype=torch.int64)
    verts_screen = project_vertices(vertices_world, camera)
    frags = rasterize(verts_screen, faces, int(camera.height), int(camera.width), backend,
                      cull_backfaces=cull_backfaces)
    hit = frags.mask
    normals = interpolate(vertex_normals(vertices_world, faces), frags, faces, verts_screen)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    if texture is not None:
        uv = interpolate(uvs.to(vertices_world.dtype), frags, face_uvs.to(torch.int64), verts_screen,
                         geometry_faces=faces)
        albedo = sample_texture(texture.to(vertices_world.dtype), uv)
    elif vertex_colors is not None:
        albedo = interpolate(vertex_colors, frags, faces, verts_screen)
    else:
        albedo = torch.ones_like(normals)
    rgb = shade_sh(albedo, normals, sh_coeffs) if sh_coeffs is not None else albedo
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    rgb = torch.where(hit[..., None], rgb, bg.expand_as(rgb))
    mask = hit.to(rgb.dtype)
    if antialias_edges:
        both = antialias(torch.cat([rgb, mask[..., None]], dim=-1), frags, verts_screen, faces)
        rgb, mask = both[..., :3], both[..., 3]
    return {"rgb": rgb, "mask": mask, "depth": frags.depth, "triangle_id": frags.triangle_id,
            "normals": normals, "fragments": frags}
