"""Tracking inputs from a session folder (images, masks, rig, optional landmarks and registered
meshes) and evaluation against a synthetic session's ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from headcap.reconstruct.tracking_terms import TrackingCamera, ViewObservation, make_view

__all__ = ["load_views", "read_landmarks", "read_registration", "read_registration_params", "evaluate_against_truth",
           "similarity_align"]


def _read_image(path: Path, grey: bool = False) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_landmarks(path: Path, model, cameras: list[str], frames: int) -> np.ndarray | None:
    """Landmarks [T, C, L, 2] px in the model's landmark order (NaN where missing) from the
    landmarks stage's landmarks2d.npz (MediaPipe 468 + its iBUG-68 table), or None when the
    model has no iBUG-68 landmarks."""
    from headcap.core.fileio import read_npz

    if model.landmark_convention != "ibug68" or len(model.landmark_ids) != 68:
        return None
    data = read_npz(path)
    for key in ("points", "found", "cameras", "ibug68"):
        if key not in data:
            raise ValueError(f"{path}: field '{key}' missing (a landmarks stage landmarks2d.npz has it)")
    points = np.asarray(data["points"], np.float32)
    found = np.asarray(data["found"], bool)
    names = [str(c) for c in data["cameras"]]
    if points.ndim != 4 or points.shape[0] != frames or points.shape[3] != 2:
        raise ValueError(f"{path}: field 'points': expected [T={frames}, C, 468, 2], got {points.shape}")
    out = np.full((frames, len(cameras), 68, 2), np.nan, np.float32)
    table = np.asarray(data["ibug68"], np.int64)
    for c, cam in enumerate(cameras):
        if cam not in names:
            continue
        k = names.index(cam)
        pts = points[:, k][:, table]
        pts[~found[:, k]] = np.nan
        out[:, c] = pts
    return out


def read_registration(path: Path, model, frames: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(vertices [T, V, 3], confidence [T, V] or None) from registration/meshes.npz when its
    topology is the model's; None otherwise."""
    from headcap.core.fileio import read_npz

    data = read_npz(path)
    if "vertices" not in data:
        raise ValueError(f"{path}: field 'vertices' missing (expected [T, V, 3] world metres)")
    verts = np.asarray(data["vertices"], np.float64)
    if verts.shape != (frames, model.num_vertices, 3):
        return None
    conf = data.get("confidence")
    if conf is not None:
        conf = np.broadcast_to(np.asarray(conf, np.float64).reshape(-1) if np.size(conf) == model.num_vertices
                               else np.asarray(conf, np.float64), (frames, model.num_vertices)).copy() \
            if np.size(conf) in (model.num_vertices, frames * model.num_vertices) else None
    return verts, conf


def read_registration_params(path: Path, model, frames: int) -> dict[str, np.ndarray] | None:
    """The registration's model fit (registration/params.npz: identity [Ni], expression [T, Ne]
    with expression_names, joint_rotations [T, J, 3] with joint_names, world_from_head [T, 4, 4])
    as the tracker's starting point, when it is the same head model (identity length, expression
    and joint names) and every frame is there; None otherwise."""
    from headcap.core.fileio import read_npz

    data = read_npz(path)
    for key in ("identity", "expression", "world_from_head"):
        if key not in data:
            raise ValueError(f"{path}: field '{key}' missing (a registration params.npz has it)")
    identity = np.asarray(data["identity"], np.float64).reshape(-1)
    expression = np.asarray(data["expression"], np.float64)
    pose = np.asarray(data["world_from_head"], np.float64)
    names = [str(n) for n in np.asarray(data.get("expression_names", np.array([]))).reshape(-1)]
    if (len(identity) != model.num_identity or expression.shape != (frames, model.num_expression)
            or pose.shape != (frames, 4, 4) or (names and names != list(model.expression_names))
            or not (np.isfinite(identity).all() and np.isfinite(expression).all() and np.isfinite(pose).all())):
        return None
    out = {"identity": identity, "expression": expression, "world_from_head": pose}
    joints = data.get("joint_rotations")
    joint_names = [str(n) for n in np.asarray(data.get("joint_names", np.array([]))).reshape(-1)]
    if joints is not None and np.shape(joints) == (frames, model.num_joints, 3) and \
            (not joint_names or joint_names == list(model.joint_names)) and np.isfinite(joints).all():
        out["joint_rotations"] = np.asarray(joints, np.float64)
    return out


def load_views(session, frames: list[int] | None = None, landmarks: np.ndarray | None = None,
               monocular: bool = False) -> tuple[list[list[ViewObservation]], list[str]]:
    """views[t][c] of a session (every camera; monocular: the first). Clear errors for a session
    without a rig or without masks."""
    if session.rig_path() is None:
        raise ValueError(f"track: {session.manifest_path}: field 'rig' missing: tracking needs calibrated cameras "
                         "(run `headcap calibrate`, or ingest with a calibration)")
    rig = session.load_rig()
    cameras = [c for c in session.cameras if c in rig.ids]
    if not cameras:
        raise ValueError(f"track: {session.rig_path()}: none of the session's cameras {session.cameras} is in the rig")
    if monocular:
        cameras = cameras[:1]
    frame_ids = list(range(session.frame_count)) if frames is None else list(frames)
    tracking_cams = {c: TrackingCamera.from_camera(rig[c]) for c in cameras}
    views = []
    for i, t in enumerate(frame_ids):
        per_frame = []
        for k, cam in enumerate(cameras):
            mask_path = session.mask_path(t, cam)
            if mask_path is None:
                raise ValueError(f"track: {session.manifest_path}: frame {t} camera {cam}: field 'masks' has no mask; "
                                 "tracking needs foreground masks (run `headcap ingest` with matting)")
            image = _read_image(session.image_path(t, cam))
            mask = _read_image(mask_path, grey=True)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"track: {mask_path}: mask size {mask.shape[::-1]} differs from the image's "
                                 f"{image.shape[1::-1]}")
            lm = None
            if landmarks is not None:
                c_index = session.cameras.index(cam) if landmarks.shape[1] == len(session.cameras) else k
                lm = landmarks[t, c_index]
            per_frame.append(make_view(tracking_cams[cam], image, mask, lm))
        views.append(per_frame)
    return views, cameras


def similarity_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """source [V, 3] moved by the similarity (Umeyama) that best maps it onto target [V, 3]."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    D = np.diag([1.0, 1.0, d])
    rot = u @ D @ vt
    scale = (s * np.diag(D)).sum() / (a ** 2).sum()
    return scale * a @ rot.T + mu_t


def evaluate_against_truth(result, session_root: Path, cameras: list[str], monocular: bool = False) -> dict:
    """Errors of a TrackingResult against SESSION/ground_truth (same head model): vertex error
    (median, mm; monocular: in the camera frame after per-frame similarity alignment), landmark
    reprojection (median px), skull rotation (max deg) and translation (max mm), jitter ratio."""
    import torch

    from headcap.core.fileio import read_npz
    from headcap.reconstruct.sequence_plots import jitter
    from headcap.reconstruct.stabilize import skull_pose_errors

    gt = Path(session_root) / "ground_truth"
    verts_gt = np.asarray(read_npz(gt / "vertices.npz")["vertices"], np.float64)
    params = read_npz(gt / "params.npz")
    cams = read_npz(gt / "cameras.npz")
    est = result.vertices
    if verts_gt.shape != est.shape:
        return {"note": f"ground truth has shape {verts_gt.shape}, the fit {est.shape}: another head model"}
    out: dict = {}
    if monocular:
        cfw = np.asarray(cams["cam_from_world"], np.float64)[:, 0]
        errs = []
        for t in range(len(est)):
            truth_cam = verts_gt[t] @ cfw[t, :3, :3].T + cfw[t, :3, 3]
            est_cam = est[t] @ cfw[0, :3, :3].T + cfw[0, :3, 3]
            errs.append(np.linalg.norm(similarity_align(est_cam, truth_cam) - truth_cam, axis=1))
        out["vertex_error_mm_median"] = float(1000 * np.median(errs))
        ja, jb = jitter(np.stack([v @ c[:3, :3].T + c[:3, 3] for v, c in zip(verts_gt, cfw)]))["acceleration"], \
            jitter(est @ cfw[0, :3, :3].T + cfw[0, :3, 3])["acceleration"]
        if len(ja):
            out["jitter_ratio"] = float(jb.mean() / max(ja.mean(), 1e-12))
        out["focal_scale"] = result.focal_scale
        return out
    err = np.linalg.norm(est - verts_gt, axis=2)
    out["vertex_error_mm_median"] = float(1000 * np.median(err))
    out["vertex_error_mm_p90"] = float(1000 * np.percentile(err, 90))
    pose = skull_pose_errors(result.world_from_head, np.asarray(params["world_from_head"], np.float64),
                             align=False, points=np.zeros((1, 3)))
    out["skull_rotation_deg_max"] = float(pose["rotation_deg"].max())
    out["skull_translation_mm_max"] = float(1000 * pose["translation_m"].max())
    lm_path = gt / "landmarks.npz"
    if lm_path.is_file():
        lm = read_npz(lm_path)
        ids = np.asarray(lm["landmark_ids"], np.int64)
        names = [str(c) for c in cams["camera_ids"]]
        K = np.asarray(cams["K"], np.float64)
        cfw = np.asarray(cams["cam_from_world"], np.float64)
        from headcap.calib.projection import project_points

        errors = []
        for cam in cameras:
            c = names.index(cam)
            a, _ = project_points(torch.as_tensor(est[:, ids]), torch.as_tensor(K[c]), torch.as_tensor(cfw[:, c]))
            b, _ = project_points(torch.as_tensor(verts_gt[:, ids]), torch.as_tensor(K[c]), torch.as_tensor(cfw[:, c]))
            errors.append((a - b).norm(dim=-1).numpy())
        out["landmark_px_median"] = float(np.median(errors))
    ja, jb = jitter(verts_gt)["acceleration"], jitter(est)["acceleration"]
    if len(ja):
        out["jitter_ratio"] = float(jb.mean() / max(ja.mean(), 1e-12))
    return out
