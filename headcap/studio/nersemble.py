"""A studio session rewritten as a NeRSemble v1 dataset, and tracking scored against its truth.

`write_nersemble(session, out)` writes what the NeRSemble v1 release (and the GaussianAvatars /
nersemble-data loaders that read it) lays out, for one participant and one sequence:

    OUT/<participant>/calibration/camera_params.json
        {"world_2_cam": {serial: 4x4}, "intrinsics": 3x3 (shared) or {serial: 3x3},
         "width": W * scale, "height": H * scale}
    OUT/<participant>/sequences/<sequence>/timesteps/frame_<t:05d>/images-<scale>x/cam_<serial>.png
    OUT/<participant>/sequences/<sequence>/timesteps/frame_<t:05d>/alpha_map/cam_<serial>.png
    OUT/studio_cameras.json   (outside the NeRSemble layout) serial -> studio camera id, the
                              studio session, scale: what `score_tracking` needs to compare

Convention (calib/formats/nersemble.py, docs/foundation.md): `world_2_cam` is cam_from_world
with OpenCV axes in metres; `intrinsics` refers to the full-resolution images, which the
`images-2x` folder holds at half size, so K is written for images `scale` times larger than the
studio's (x_full = scale (x + 0.5) - 0.5, integer pixel centres) and `width`/`height` name that
full size; ingest rescales it back. NeRSemble ships undistorted images and stores no distortion:
a studio session with lens distortion is undistorted here (bilinear images, nearest masks, same
K); one made with `StudioConfig(lens_distortion=False)` is copied pixel for pixel. Camera serials
are NeRSemble's 16 (then made-up 2222001xx ones), assigned in studio order. scale 1 writes
`images/` (the folder name the full-resolution release uses).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NERSEMBLE_SERIALS", "NersembleDataset", "write_nersemble", "score_tracking"]

#: the serials of NeRSemble's 16 cameras (the order of nersemble's constants.SERIALS)
NERSEMBLE_SERIALS = ("220700191", "221501007", "222200036", "222200037", "222200038", "222200039", "222200040",
                     "222200041", "222200042", "222200043", "222200044", "222200045", "222200046", "222200047",
                     "222200048", "222200049")


@dataclass
class NersembleDataset:
    root: Path            # OUT
    participant: Path     # OUT/<participant>: what `headcap ingest --sequence` takes
    sequence: Path        # OUT/<participant>/sequences/<sequence>: what `headcap ingest` takes directly
    serials: dict         # studio camera id -> serial
    scale: int


def serial_for(index: int) -> str:
    return NERSEMBLE_SERIALS[index] if index < len(NERSEMBLE_SERIALS) else f"2222001{index - len(NERSEMBLE_SERIALS):02d}"


def image_folder(scale: int) -> str:
    return "images" if scale == 1 else f"images-{scale}x"


def full_resolution_K(K: np.ndarray, scale: int) -> np.ndarray:
    """K of an image `scale` times larger (integer pixel centres): the inverse of ingest's rescale."""
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= scale
    K[0, 1] *= scale
    K[1, 1] *= scale
    K[0, 2] = scale * (K[0, 2] + 0.5) - 0.5
    K[1, 2] = scale * (K[1, 2] + 0.5) - 0.5
    return K


def write_nersemble(session_root, out, participant: str = "000", sequence: str = "EXP-1-head", scale: int = 2,
                    image_format: str = "png") -> NersembleDataset:
    """Rewrite a (rig, not monocular) studio session as a NeRSemble v1 dataset under `out`."""
    import cv2

    from headcap.capture.session import check_camera_id, read_session
    from headcap.capture.video import read_image, write_image
    from headcap.core.fileio import write_json

    session_root, out = Path(session_root), Path(out)
    session = read_session(session_root)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 16:
        raise ValueError(f"write_nersemble: scale must be an integer from 1 to 16, got {scale!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"write_nersemble: image_format must be 'png' or 'jpg', got {image_format!r}")
    for name, value in (("participant", participant), ("sequence", sequence)):
        check_camera_id(value, "write_nersemble", name)  # a plain folder name
        if value in (".", "..") or any(ch in value for ch in "/\\"):
            raise ValueError(f"write_nersemble: {name} must be a folder name, got {value!r}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"write_nersemble: {out} exists and is not empty")
    if (session.extra or {}).get("monocular"):
        raise ValueError(f"write_nersemble: {session.manifest_path} is a monocular session (NeRSemble is a rig)")
    rig = session.load_rig()
    cams = [c for c in session.cameras if c in rig.ids]
    sizes = {(rig[c].width, rig[c].height) for c in cams}
    if len(sizes) != 1:
        raise ValueError(f"write_nersemble: {session.manifest_path}: cameras of several sizes {sorted(sizes)}; "
                         "NeRSemble has one image size")
    serials = {c: serial_for(i) for i, c in enumerate(cams)}
    (width, height), = sizes
    Ks = {serials[c]: full_resolution_K(rig[c].K, scale) for c in cams}
    first = next(iter(Ks.values()))
    shared = all(np.array_equal(first, K) for K in Ks.values())
    params = {"world_2_cam": {serials[c]: rig[c].cam_from_world.tolist() for c in cams},
              "intrinsics": first.tolist() if shared else {s: K.tolist() for s, K in Ks.items()},
              "width": width * scale, "height": height * scale}
    pdir = out / participant
    write_json(pdir / "calibration" / "camera_params.json", params)
    seq = pdir / "sequences" / sequence
    distorted = {c: rig[c].distortion_model != "none" and np.any(rig[c].distortion != 0) for c in cams}
    maps = {c: rig[c].undistort_maps() for c in cams if distorted[c]}
    folder = image_folder(scale)
    for t in range(session.frame_count):
        frame = seq / "timesteps" / f"frame_{t:05d}"
        for c in cams:
            image = read_image(session.image_path(t, c))
            mask_path = session.mask_path(t, c)
            mask = read_image(mask_path, cv2.IMREAD_GRAYSCALE) if mask_path is not None else None
            if distorted[c]:
                mx, my = maps[c]
                image = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                if mask is not None:
                    mask = cv2.remap(mask, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
            write_image(frame / folder / f"cam_{serials[c]}.{image_format}", image)
            if mask is not None:
                write_image(frame / "alpha_map" / f"cam_{serials[c]}.png", mask, mask=True)
    write_json(out / "studio_cameras.json", {"studio_session": str(session_root.resolve()), "scale": scale,
                                             "serial_to_camera": {s: c for c, s in serials.items()},
                                             "undistorted": sorted(c for c in cams if distorted[c])})
    return NersembleDataset(out, pdir, seq, serials, scale)


def score_tracking(tracking_dir, studio_root, serial_to_camera: dict | None = None) -> dict:
    """Errors of `tracking_dir` (params.npz + meshes.npz of `headcap track`) against the studio
    session's ground truth, for a dataset made by `write_nersemble` (same world, same frames):
    vertex error (median / 90th percentile, mm), landmark reprojection (median px over the tracked
    cameras, mapped back from serials), skull rotation (max deg) and translation (max mm)."""
    import torch

    from headcap.calib.projection import project_points
    from headcap.core.fileio import read_npz
    from headcap.reconstruct.stabilize import skull_pose_errors

    tracking_dir, studio_root = Path(tracking_dir), Path(studio_root)
    gt = studio_root / "ground_truth"
    truth = np.asarray(read_npz(gt / "vertices.npz")["vertices"], np.float64)
    est = np.asarray(read_npz(tracking_dir / "meshes.npz")["vertices"], np.float64)
    params = read_npz(tracking_dir / "params.npz")
    if est.shape[1:] != truth.shape[1:]:
        raise ValueError(f"{tracking_dir / 'meshes.npz'}: vertices {est.shape}, the truth {truth.shape}: "
                         "another head model than the studio's")
    T = min(len(est), len(truth))
    est, truth = est[:T], truth[:T]
    err = np.linalg.norm(est - truth, axis=2)
    pose = skull_pose_errors(np.asarray(params["world_from_head"], np.float64)[:T],
                             np.asarray(read_npz(gt / "params.npz")["world_from_head"], np.float64)[:T],
                             align=False, points=np.zeros((1, 3)))
    out = {"frames": T, "vertex_error_mm_median": float(1000 * np.median(err)),
           "vertex_error_mm_p90": float(1000 * np.percentile(err, 90)),
           "skull_rotation_deg_max": float(pose["rotation_deg"].max()),
           "skull_translation_mm_max": float(1000 * pose["translation_m"].max())}
    ids = np.asarray(read_npz(gt / "landmarks.npz")["landmark_ids"], np.int64)
    cams = read_npz(gt / "cameras.npz")
    names = [str(c) for c in cams["camera_ids"]]
    K, cfw = np.asarray(cams["K"], np.float64), np.asarray(cams["cam_from_world"], np.float64)
    tracked = [str(c) for c in params["camera_ids"]] if "camera_ids" in params else []
    errors = []
    for cam in tracked:
        studio_cam = (serial_to_camera or {}).get(cam, cam)
        c = names.index(studio_cam)
        a, _ = project_points(torch.as_tensor(est[:, ids]), torch.as_tensor(K[c]), torch.as_tensor(cfw[:T, c]))
        b, _ = project_points(torch.as_tensor(truth[:, ids]), torch.as_tensor(K[c]), torch.as_tensor(cfw[:T, c]))
        errors.append((a - b).norm(dim=-1).numpy())
    if errors:
        out["landmark_px_median"] = float(np.median(errors))
    return out
