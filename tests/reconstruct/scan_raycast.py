"""An outside renderer for the real-scan check: a plain numpy ray caster (Moller-Trumbore, no
code of headcap's rasterizer or projection) that films the Lee Perry-Smith scan through a rig and
hands the images over as a nerfstudio dataset (transforms.json: OpenGL camera-to-world, pixel
centres at +0.5, OPENCV distortion k1 k2 p1 p2), the way another tool would.

Rays come from OpenCV (cv2.undistortPoints of each pixel centre); each triangle is tested only
against the pixels inside its projected box (cv2.projectPoints), the nearest hit wins; colour =
the scan's texture (bilinear, v up) times a fixed Lambert light; the mask is the hit map.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def _rays(K: np.ndarray, dist: np.ndarray, width: int, height: int) -> np.ndarray:
    """Unit directions (camera frame) through every pixel centre [H*W, 3], row-major."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    pix = np.stack([xs.ravel(), ys.ravel()], 1)[:, None]
    xy = cv2.undistortPoints(pix, K, dist, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))[:, 0]
    d = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def raycast(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, dist: np.ndarray, cam_from_world: np.ndarray,
            width: int, height: int, chunk: int = 1 << 21):
    """(triangle id [H, W] (-1 = miss), barycentrics (u, v) [H, W, 2], hit distance [H, W])."""
    R, t = cam_from_world[:3, :3], cam_from_world[:3, 3]
    cam_v = vertices @ R.T + t
    rvec, _ = cv2.Rodrigues(R)
    pix, _ = cv2.projectPoints(vertices.reshape(-1, 1, 3), rvec, t, K, dist)
    pix = pix[:, 0]
    tri_pix = pix[faces]
    in_front = (cam_v[faces][:, :, 2] > 1e-3).all(1)
    x0 = np.floor(tri_pix[:, :, 0].min(1)).astype(np.int64) - 1
    x1 = np.ceil(tri_pix[:, :, 0].max(1)).astype(np.int64) + 1
    y0 = np.floor(tri_pix[:, :, 1].min(1)).astype(np.int64) - 1
    y1 = np.ceil(tri_pix[:, :, 1].max(1)).astype(np.int64) + 1
    x0, y0 = np.clip(x0, 0, width - 1), np.clip(y0, 0, height - 1)
    x1, y1 = np.clip(x1, 0, width - 1), np.clip(y1, 0, height - 1)
    keep = in_front & (x1 >= x0) & (y1 >= y0)
    tri = np.nonzero(keep)[0]
    bw, bh = (x1 - x0 + 1)[tri], (y1 - y0 + 1)[tri]
    dirs = _rays(K, dist, width, height)
    best_t = np.full(width * height, np.inf)
    best_f = np.full(width * height, -1, np.int64)
    best_uv = np.zeros((width * height, 2))
    a, b, c = cam_v[faces[:, 0]], cam_v[faces[:, 1]], cam_v[faces[:, 2]]
    counts = bw * bh
    starts = np.concatenate([[0], np.cumsum(counts)])
    # triangles in groups whose candidate pixels fit in one chunk
    g0 = 0
    while g0 < len(tri):
        g1 = int(np.searchsorted(starts, starts[g0] + chunk, side="right")) - 1
        g1 = max(g1, g0 + 1)
        sel = tri[g0:g1]
        cnt = counts[g0:g1]
        owner = np.repeat(np.arange(len(sel)), cnt)
        local = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        px = x0[sel][owner] + local % bw[g0:g1][owner]
        py = y0[sel][owner] + local // bw[g0:g1][owner]
        pid = py * width + px
        f = sel[owner]
        d = dirs[pid]
        e1, e2 = b[f] - a[f], c[f] - a[f]
        pvec = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, pvec)
        ok = np.abs(det) > 1e-18
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = -a[f]  # ray origin is the camera centre (0, 0, 0)
        u = np.einsum("ij,ij->i", tvec, pvec) * inv
        qvec = np.cross(tvec, e1)
        v = np.einsum("ij,ij->i", d, qvec) * inv
        dist_t = np.einsum("ij,ij->i", e2, qvec) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (dist_t > 1e-6)
        pid, f, u, v, dist_t = pid[hit], f[hit], u[hit], v[hit], dist_t[hit]
        order = np.lexsort((dist_t, pid))
        pid, f, u, v, dist_t = pid[order], f[order], u[order], v[order], dist_t[order]
        first = np.ones(len(pid), bool)
        first[1:] = pid[1:] != pid[:-1]
        pid, f, u, v, dist_t = pid[first], f[first], u[first], v[first], dist_t[first]
        closer = dist_t < best_t[pid]
        pid, f, u, v, dist_t = pid[closer], f[closer], u[closer], v[closer], dist_t[closer]
        best_t[pid] = dist_t
        best_f[pid] = f
        best_uv[pid] = np.stack([u, v], 1)
        g0 = g1
    return best_f.reshape(height, width), best_uv.reshape(height, width, 2), best_t.reshape(height, width)


def shade(vertices, faces, uvs, face_uvs, texture: np.ndarray, tri, bary, background=0.35) -> np.ndarray:
    """RGB uint8 [H, W, 3]: texture (bilinear, v up) x Lambert(fixed world light) + ambient."""
    H, W = tri.shape
    hit = tri >= 0
    img = np.full((H, W, 3), background, np.float64)
    f = tri[hit]
    u, v = bary[hit, 0], bary[hit, 1]
    w0 = 1 - u - v
    uv = w0[:, None] * uvs[face_uvs[f, 0]] + u[:, None] * uvs[face_uvs[f, 1]] + v[:, None] * uvs[face_uvs[f, 2]]
    th, tw = texture.shape[:2]
    mx = (uv[:, 0] * tw - 0.5).astype(np.float32)
    my = ((1 - uv[:, 1]) * th - 0.5).astype(np.float32)
    n = len(mx)
    rows = -(-n // 1024)  # cv2.remap takes maps under 32767 rows: sample in 1024-wide blocks
    pad = rows * 1024 - n
    mx, my = np.pad(mx, (0, pad)).reshape(rows, 1024), np.pad(my, (0, pad)).reshape(rows, 1024)
    col = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:n]
    fn = np.cross(vertices[faces[f, 1]] - vertices[faces[f, 0]], vertices[faces[f, 2]] - vertices[faces[f, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    lambert = np.abs(fn @ light)
    img[hit] = col.astype(np.float64) / 255.0 * (0.45 + 0.6 * lambert)[:, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_nerfstudio_scan(out: Path, scan_folder: Path, rig, progress=None, caster=None) -> dict:
    """Render the scan through `rig` (headcap Cameras: K, OpenCV distortion, cam_from_world) into
    a nerfstudio dataset at `out`; returns the scan's (vertices, faces) in the world frame.
    `caster` replaces `raycast` (same arguments and results; e.g. Open3D's, in bm_scan_mvs.py)."""
    from headcap.studio.scan import load_scan

    model, texture = load_scan(scan_folder)
    verts = model.template.double().numpy()
    faces = model.faces.numpy()
    uvs, face_uvs = model.uvs.double().numpy(), model.face_uvs.numpy()
    tex = (texture.numpy() * 255).astype(np.uint8)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    frames = []
    caster = caster or raycast
    for i, cam in enumerate(rig.cameras.values()):
        dist = np.zeros(5) if cam.distortion_model == "none" else np.asarray(cam.distortion)
        tri, bary, _ = caster(verts, faces, cam.K, dist, cam.cam_from_world, cam.width, cam.height)
        img = shade(verts, faces, uvs, face_uvs, tex, tri, bary)
        cv2.imwrite(str(out / "images" / f"{cam.id}.png"), img[..., ::-1])
        cv2.imwrite(str(out / "masks" / f"{cam.id}.png"), ((tri >= 0) * 255).astype(np.uint8))
        world_from_cam = np.linalg.inv(cam.cam_from_world)
        world_from_glcam = world_from_cam @ np.diag([1.0, -1.0, -1.0, 1.0])
        k1, k2, p1, p2 = (float(x) for x in dist[:4])
        frames.append({"file_path": f"images/{cam.id}.png", "mask_path": f"masks/{cam.id}.png",
                       "camera_id": cam.id, "w": cam.width, "h": cam.height,
                       "fl_x": float(cam.K[0, 0]), "fl_y": float(cam.K[1, 1]),
                       "cx": float(cam.K[0, 2]) + 0.5, "cy": float(cam.K[1, 2]) + 0.5,
                       "k1": k1, "k2": k2, "p1": p1, "p2": p2,
                       "transform_matrix": world_from_glcam.tolist()})
        if progress is not None:
            progress(i + 1, len(rig.cameras))
    (out / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "frames": frames}, indent=1))
    return {"vertices": verts, "faces": faces}
