"""Multi-camera calibration from board detections: per-camera intrinsics initialisation,
extrinsics by chaining shared board views over the camera graph (calib/calib_init.py), then one
global bundle adjustment of every intrinsic, distortion, cam_from_world and board pose
(calib/bundle.py: robust IRLS Levenberg-Marquardt with a sparse Jacobian), with rounds of
outlier rejection. Scale is metric because the board's squares are. Frames are matched across
cameras by name: detections of different cameras with the same `frame` saw one board pose.

RMS everywhere is OpenCV's definition: sqrt(mean over corners of |reprojection error|^2).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from headcap.calib.bundle import BundleProblem, Observation, levenberg_marquardt, pose_to_vec, vec_to_pose
from headcap.calib.calib_init import (average_poses, camera_graph_components, chain_extrinsics, init_board_poses,
                              init_intrinsics, solve_pnp)
from headcap.calib.camera import Camera, Rig, invert_rigid
from headcap.calib.detect import Detection
from headcap.calib.observability import Thresholds, choose_priors, prior_notes, prior_rows, uncertainty_warnings
from headcap.calib.uncertainty import camera_covariance, camera_uncertainty
from headcap.calib.projection import DISTORTION_MODELS

__all__ = ["CalibrationConfig", "CalibrationError", "CalibrationResult", "Observation", "WORLD_FRAMES",
           "calibrate_rig", "camera_graph_components"]

WORLD_FRAMES = ("first-camera", "board", "centroid", "seed")


class CalibrationError(ValueError):
    """Calibration cannot proceed; the message names the cameras and frames at fault."""


@dataclass
class CalibrationConfig:
    distortion_model: Literal["opencv", "fisheye", "none"] = "opencv"
    """Lens model solved for: 'opencv' (k1 k2 p1 p2 k3), 'fisheye' (k1..k4) or 'none'."""
    fix_k3: bool = False
    """Hold k3 at zero (advisable with few or central-only views)."""
    refine_intrinsics: bool = True
    """False: keep K and distortion at their initial (seed) values and refine poses only."""
    world: Literal["first-camera", "board", "centroid", "seed"] = "first-camera"
    """World frame: 'first-camera', 'board' (the frame seen by most cameras), 'centroid' (camera
    centroid, `up` axis = mean camera up, front towards the first camera) or 'seed'."""
    up: Literal["y", "z"] = "y"
    """Up axis for world='centroid': 'y' (y up, z front) or 'z' (z up, -y front)."""
    reference_camera: str | None = None
    """Camera held fixed during the solve (gauge); default the first camera."""
    loss: Literal["linear", "huber", "soft_l1", "cauchy"] = "huber"
    """Robust loss on the reprojection residuals."""
    loss_scale_px: float = 1.0
    """Residual (px) where the robust loss starts to flatten."""
    outlier_sigmas: float = 5.0
    """Reject corners whose error exceeds this many robust sigmas (and `min_outlier_px`)."""
    min_outlier_px: float = 1.0
    """Corners closer than this (px) are never outliers."""
    outlier_rounds: int = 3
    """Rounds of reject-and-resolve."""
    min_views_warn: int = 3
    """Warn when a camera sees the board in fewer views."""
    coverage_warn: float = 0.3
    """Warn when the corners of a camera fill less than this fraction of an 8x6 image grid."""
    max_iterations: int = 50
    """Levenberg-Marquardt iterations per round."""
    priors: Literal["auto", "always", "never"] = "auto"
    """Priors on what the data may not determine (distortion beyond k1 towards zero, principal
    point towards the image centre, fx = fy): 'auto' applies each where the data alone leaves it
    less certain than half the prior's sigma; 'always' / 'never' force either way."""
    warn_focal_pct: float = 0.3
    """Warn (and fail --strict) when a camera's focal length is uncertain beyond this (%, 1 sigma)."""
    warn_principal_point_px: float = 2.0
    """Warn when a principal point is uncertain beyond this (px, 1 sigma)."""
    warn_distortion_px: float = 1.0
    """Warn when the lens distortion at the image corner is uncertain beyond this (px, 1 sigma)."""
    warn_centre_mm: float = 2.0
    """Warn when a camera centre is uncertain beyond this (mm, 1 sigma, within the rig)."""
    warn_rotation_deg: float = 0.1
    """Warn when a camera rotation is uncertain beyond this (degrees, 1 sigma, within the rig)."""

    def __post_init__(self):
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"CalibrationConfig: distortion_model {self.distortion_model!r} not in {sorted(DISTORTION_MODELS)}")
        if self.world not in WORLD_FRAMES:
            raise ValueError(f"CalibrationConfig: world {self.world!r} not in {list(WORLD_FRAMES)}")
        if self.up not in ("y", "z"):
            raise ValueError(f"CalibrationConfig: up {self.up!r} must be 'y' or 'z'")
        if self.loss not in ("linear", "huber", "soft_l1", "cauchy"):
            raise ValueError(f"CalibrationConfig: loss {self.loss!r} not supported")
        if self.priors not in ("auto", "always", "never"):
            raise ValueError(f"CalibrationConfig: priors {self.priors!r} not in ['auto', 'always', 'never']")


@dataclass
class CalibrationResult:
    rig: Rig
    world_from_board: dict[str, np.ndarray]
    observations: list[Observation]
    per_camera: dict[str, dict]
    rms: float
    initial_rms: float
    warnings: list[str] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    uncertainty: dict[str, dict] = field(default_factory=dict)
    """Per camera, 1-sigma uncertainties (calib.uncertainty.camera_uncertainty)."""
    priors: list[dict] = field(default_factory=list)
    """The priors applied (camera, name, sigma, data_sigma), see calib.observability."""
    notes: list[str] = field(default_factory=list)
    """What was regularised and why."""
    uncertain: dict[str, list[str]] = field(default_factory=dict)
    """Cameras whose uncertainties miss the warn_* thresholds, and which ones (--strict fails on these)."""
    noise_px: float = float("nan")
    """Per-axis corner noise sigma the uncertainties are scaled by."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """The warn_* thresholds the uncertainties were checked against."""

    def summary(self) -> dict:
        return {"rms_px": self.rms, "initial_rms_px": self.initial_rms, "cameras": self.per_camera,
                "frames": len(self.world_from_board), "warnings": list(self.warnings), "rounds": self.rounds,
                "uncertainty": self.uncertainty, "noise_px": self.noise_px, "priors": self.priors,
                "notes": list(self.notes), "uncertain": self.uncertain, "thresholds": self.thresholds}


def _check_inputs(detections: dict[str, list[Detection]], config: CalibrationConfig):
    if not detections:
        raise CalibrationError("calibrate: no cameras given")
    sizes: dict[str, tuple[int, int]] = {}
    usable: dict[str, list[Detection]] = {}
    problems = []
    for cam, dets in detections.items():
        if not dets:
            problems.append(f"camera {cam!r} has no calibration images")
            continue
        s = {d.image_size for d in dets}
        if len(s) > 1:
            raise CalibrationError(f"camera {cam!r}: calibration images differ in size {sorted(s)}: "
                                   + ", ".join(f"{d.frame}={d.image_size}" for d in dets[:8]))
        sizes[cam] = dets[0].image_size
        good = [d for d in dets if d.usable]
        if not good:
            why = ", ".join(f"{d.frame} ({d.n_corners} corners{': ' + '/'.join(d.flags) if d.flags else ''})" for d in dets[:12])
            more = f" and {len(dets) - 12} more" if len(dets) > 12 else ""
            problems.append(f"camera {cam!r} never sees the board well enough in its {len(dets)} frames: {why}{more}")
        usable[cam] = good
    if all(not usable.get(c) for c in detections):
        raise CalibrationError(_no_board_anywhere(detections))
    if problems:
        raise CalibrationError("calibrate: " + "; ".join(problems))
    return sizes, usable


def _no_board_anywhere(detections: dict[str, list[Detection]]) -> str:
    """One readable line for the commonest failure, a --board that does not match the printed
    board: per camera the frame count and why its views failed, instead of every frame."""
    per_cam = []
    for cam, dets in detections.items():
        reasons: dict[str, int] = {}
        for d in dets:
            key = "/".join(d.flags) or "unusable"
            reasons[key] = reasons.get(key, 0) + 1
        why = ", ".join(f"{n} {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        per_cam.append(f"{cam} ({len(dets)} frames{': ' + why if why else ''})")
    msg = (f"calibrate: no camera sees the board in any of its {sum(len(v) for v in detections.values())} images: "
           "check the --board specification (kind, COLSxROWS, square/marker lengths, dictionary). "
           "Cameras: " + ", ".join(per_cam))
    with_markers = sum(d.n_markers > 0 for v in detections.values() for d in v)
    if with_markers:
        msg += (f". ArUco markers of the given dictionary were decoded in {with_markers} images but gave no board "
                "corners, so COLSxROWS (or the legacy layout) likely differs from the printed board")
    return msg


def _coverage(pixels: np.ndarray, size, grid=(8, 6)) -> float:
    w, h = size
    gx = np.clip((pixels[:, 0] / w * grid[0]).astype(int), 0, grid[0] - 1)
    gy = np.clip((pixels[:, 1] / h * grid[1]).astype(int), 0, grid[1] - 1)
    return len(set(zip(gx.tolist(), gy.tolist()))) / (grid[0] * grid[1])


def calibrate_rig(detections: dict[str, list[Detection]], config: CalibrationConfig | None = None,
                  seed: Rig | None = None, progress=None) -> CalibrationResult:
    """detections: {camera id: [Detection, ...]} (frames matched by `Detection.frame`);
    seed: an existing rig to start from (its cameras' K/distortion/poses replace the
    initialisation). progress: optional callable(message). Returns a CalibrationResult.

    Identical inputs give bit-identical results: OpenCV's solvers (calibrateCamera in the
    initialisation) sum in thread order, so they run on one thread here (they take
    milliseconds per camera)."""
    import cv2
    import torch

    threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    # the bundle adjustment factorises a few hundred unknowns square: one thread is faster than
    # many on a busy machine, and sums in one order
    torch.set_num_threads(1)
    try:
        return _calibrate_rig(detections, config, seed, progress)
    finally:
        cv2.setNumThreads(threads)
        torch.set_num_threads(torch_threads)


def _calibrate_rig(detections, config, seed, progress) -> CalibrationResult:
    config = config or CalibrationConfig()
    say = progress or (lambda msg: None)
    sizes, usable = _check_inputs(detections, config)
    cams = list(detections)
    ref = config.reference_camera or cams[0]
    if ref not in cams:
        raise CalibrationError(f"calibrate: reference camera {ref!r} is not among {cams}")
    pieces = camera_graph_components(usable)
    if len(pieces) > 1:
        desc = "; ".join(f"piece {i + 1}: {p} (frames {sorted({d.frame for c in p for d in usable[c]})[:10]})"
                         for i, p in enumerate(pieces))
        raise CalibrationError(f"calibrate: the camera graph is in {len(pieces)} pieces — no frame shows the board "
                               f"to cameras of two pieces at once, so their relative pose is unknown: {desc}. "
                               "Add frames where the board is visible to cameras of both pieces.")
    if seed is not None and config.distortion_model != "none":
        for c in cams:
            if c in seed.cameras and seed[c].distortion_model != config.distortion_model:
                raise CalibrationError(f"calibrate: seed camera {c!r} uses distortion model "
                                       f"{seed[c].distortion_model!r}, the solve uses {config.distortion_model!r}")
    if config.world == "seed" and seed is None:
        raise CalibrationError("calibrate: world='seed' needs a seed rig")
    warnings: list[str] = []
    for c in cams:
        for d in usable[c]:
            for flag in ("marker_size_mismatch", "foreign_markers", "inconsistent_geometry"):
                if flag in d.flags:
                    warnings.append(f"camera {c!r} frame {d.frame}: {flag.replace('_', ' ')} (does --board match the printed board?)")

    say("initialising intrinsics")
    K, dist, view_pose = {}, {}, {}
    for c in cams:
        if len(usable[c]) < config.min_views_warn:
            warnings.append(f"camera {c!r}: only {len(usable[c])} usable view(s) of the board "
                            f"(frames {[d.frame for d in usable[c]]}); its intrinsics are weakly constrained")
        if seed is not None and c in seed.cameras:
            K[c], dist[c] = seed[c].K.copy(), seed[c].distortion.copy()
            poses = solve_pnp(usable[c], K[c], config.distortion_model, dist[c])
        else:
            K[c], dist[c], poses = init_intrinsics(c, usable[c], sizes[c], config.distortion_model, config.fix_k3,
                                                   warnings)
            if config.distortion_model != "opencv":
                poses = solve_pnp(usable[c], K[c], config.distortion_model, dist[c])
        for d, p in zip(usable[c], poses):
            view_pose[(c, d.frame)] = p  # cam_from_board

    if seed is not None and all(c in seed.cameras for c in cams):
        cam_from_world = {c: seed[c].cam_from_world.copy() for c in cams}
    else:
        if seed is not None:
            warnings.append("seed rig lacks cameras " + str([c for c in cams if c not in seed.cameras])
                            + ": extrinsics initialised from the board instead")
        cam_from_world = chain_extrinsics(cams, usable, view_pose, K, dist, config.distortion_model, ref)
    world_from_board = init_board_poses(cams, usable, view_pose, K, dist, config.distortion_model, cam_from_world)
    frames = sorted(world_from_board)

    obs = [Observation(c, d.frame, d.ids, d.corners, d.object_points) for c in cams for d in usable[c]]
    prob = BundleProblem(cams, frames, obs, config.distortion_model)
    intr = np.stack([np.concatenate([[K[c][0, 0], K[c][1, 1], K[c][0, 2], K[c][1, 2]], dist[c]]) for c in cams])
    x = prob.pack(intr, np.stack([pose_to_vec(cam_from_world[c]) for c in cams]),
                  np.stack([pose_to_vec(world_from_board[f]) for f in frames]))
    x, keep, initial_rms, rounds, free = _bundle_adjust(prob, x, cams.index(ref), config, say)
    x, cov, noise, priors = _observe(prob, x, keep, free, config, sizes, say)

    intr, cam_vecs, board_vecs = prob.unpack(x)
    res = prob.residuals(x)
    start = 0
    for o in obs:
        n = len(o.ids)
        o.residuals, o.inlier = res[start:start + n], keep[start:start + n]
        start += n
    cameras = []
    for i, c in enumerate(cams):
        Kc = np.array([[intr[i, 0], 0, intr[i, 2]], [0, intr[i, 1], intr[i, 3]], [0, 0, 1.0]])
        cameras.append(Camera(c, sizes[c][0], sizes[c][1], Kc, config.distortion_model, intr[i, 4:],
                              vec_to_pose(cam_vecs[i])))
    rig = Rig.from_list(cameras)
    boards = {f: vec_to_pose(board_vecs[j]) for j, f in enumerate(frames)}
    frames_of = {c: {d.frame for d in usable[c]} for c in cams}
    world_from_new = _world_transform(rig, boards, frames_of, config, seed)
    rig = rig.transformed(world_from_new)
    new_from_world = invert_rigid(world_from_new)
    boards = {f: new_from_world @ m for f, m in boards.items()}
    uncertainty = camera_uncertainty(prob, x, cov, sizes, new_from_world[:3, :3])

    per_camera = {}
    for c in cams:
        mine = [o for o in obs if o.camera == c]
        r = np.concatenate([o.residuals[o.inlier] for o in mine])
        pix = np.concatenate([o.pixels for o in mine])
        cov = _coverage(pix, sizes[c])
        per_camera[c] = {"rms_px": float(np.sqrt(np.mean(np.sum(r ** 2, axis=1)))), "views": len(mine),
                         "corners": int(sum(len(o.ids) for o in mine)),
                         "outliers": int(sum((~o.inlier).sum() for o in mine)), "coverage": cov,
                         "fx": float(rig[c].K[0, 0]), "fy": float(rig[c].K[1, 1]),
                         "cx": float(rig[c].K[0, 2]), "cy": float(rig[c].K[1, 2])}
        if cov < config.coverage_warn:
            warnings.append(f"camera {c!r}: the board covered only {cov:.0%} of the image (8x6 grid cells, frames "
                            f"{[o.frame for o in mine][:10]}); lens distortion near the uncovered edges is extrapolated")
    thresholds = Thresholds(config.warn_focal_pct, config.warn_principal_point_px, config.warn_distortion_px,
                            config.warn_centre_mm, config.warn_rotation_deg)
    pixels = {c: np.concatenate([o.pixels for o in obs if o.camera == c]) for c in cams}
    more, uncertain = uncertainty_warnings(uncertainty, thresholds, pixels, sizes, frames_of)
    warnings += more
    inl = np.concatenate([o.residuals[o.inlier] for o in obs])
    rms = float(np.sqrt(np.mean(np.sum(inl ** 2, axis=1))))
    say(f"done: RMS {rms:.4f} px over {len(inl)} corners")
    return CalibrationResult(rig, boards, obs, per_camera, rms, initial_rms, warnings, rounds, dict(sizes),
                             uncertainty, [{"camera": p.camera, "name": p.name, "sigma": p.sigma,
                                            "data_sigma": p.data_sigma} for p in priors],
                             prior_notes(priors), uncertain, noise, dataclasses.asdict(thresholds))


def _observe(prob: BundleProblem, x: np.ndarray, keep: np.ndarray, free: np.ndarray, config: CalibrationConfig,
             sizes, say):
    """Covariance of the solution; where it shows parameters the data cannot determine, the
    priors of calib.observability and a re-solve. Returns (x, camera covariance, noise px, priors)."""
    say("uncertainty: covariance of the camera parameters (Schur complement over the board poses)")
    cov, noise = camera_covariance(prob, x, keep, free, config.loss, config.loss_scale_px)
    if not config.refine_intrinsics:
        return x, cov, noise, []
    priors = choose_priors(prob, x, cov, free, sizes, config.priors)
    if priors:
        head = f"regularising {len(priors)} poorly determined parameter(s)"
        say(head)
        prior = prior_rows(priors, prob.n_params, noise)
        x, _ = levenberg_marquardt(prob, x, free, keep, config.loss, config.loss_scale_px, config.max_iterations,
                                   prior=prior, on_iteration=lambda it, cost: say(f"{head}, iteration {it}"))
        cov, noise = camera_covariance(prob, x, keep, free, config.loss, config.loss_scale_px, prior)
    return x, cov, noise, priors


def _bundle_adjust(prob: BundleProblem, x: np.ndarray, ref_index: int, config: CalibrationConfig, say):
    """Levenberg-Marquardt with rounds of outlier rejection, the reference camera's pose held as
    the gauge. Returns (x, inlier mask [corners], initial RMS, per-round records)."""
    free = np.ones(prob.n_params, bool)
    first = prob.C * prob.ni + ref_index * 6
    free[first:first + 6] = False
    if not config.refine_intrinsics:
        free[:prob.C * prob.ni] = False
    elif config.fix_k3 and config.distortion_model == "opencv":
        free[np.arange(prob.C) * prob.ni + 8] = False
    initial = np.linalg.norm(prob.residuals(x), axis=1)
    initial_rms = float(np.sqrt(np.mean(initial ** 2)))
    # corners the initialisation puts far off (a bad single-view pose) would dominate the first
    # solve; they rejoin in the next round if the refined rig explains them
    keep = initial <= max(50.0, 20 * float(np.median(initial)))
    rounds = []
    for rnd in range(config.outlier_rounds + 1):
        head = f"bundle adjustment round {rnd + 1}: {keep.sum()} corners, {free.sum()} parameters"
        say(head)
        x, info = levenberg_marquardt(prob, x, free, keep, config.loss, config.loss_scale_px, config.max_iterations,
                                      on_iteration=lambda it, cost: say(f"{head}, iteration {it}, "
                                                                        f"RMS {np.sqrt(cost / keep.sum()):.4f} px"))
        err = np.linalg.norm(prob.residuals(x), axis=1)
        sigma = np.median(err[keep]) / np.sqrt(2 * np.log(2))  # Rayleigh median -> per-axis sigma
        thresh = max(config.outlier_sigmas * sigma, config.min_outlier_px)
        new_keep = err <= thresh
        rounds.append({"round": rnd + 1, "corners": int(keep.sum()), "rms_px": float(np.sqrt(np.mean(err[keep] ** 2))),
                       "threshold_px": float(thresh), "rejected": int((~new_keep).sum()), "iterations": info["iterations"]})
        if np.array_equal(new_keep, keep) or rnd == config.outlier_rounds:
            # the last round's inliers are the corners its solve used
            keep = new_keep if rnd < config.outlier_rounds else keep
            break
        keep = new_keep
    return x, keep, initial_rms, rounds, free


def _world_transform(rig: Rig, boards: dict[str, np.ndarray], frames_of, config: CalibrationConfig,
                     seed: Rig | None) -> np.ndarray:
    """world_from_new_world for the requested world frame."""
    cams = rig.ids
    if config.world == "first-camera":
        return rig[cams[0]].world_from_cam
    if config.world == "board":
        best = max(sorted(boards), key=lambda f: sum(f in frames_of[c] for c in cams))
        return boards[best]
    if config.world == "seed":
        common = [c for c in cams if c in seed.cameras]
        return average_poses([rig[c].world_from_cam @ seed[c].cam_from_world for c in common])
    centres = np.stack([cam.centre for cam in rig])
    centroid = centres.mean(axis=0)
    up = -np.stack([cam.cam_from_world[1, :3] for cam in rig]).mean(axis=0)
    up /= np.linalg.norm(up)
    front = centres[0] - centroid
    front = front - up * (front @ up)
    if np.linalg.norm(front) < 1e-9:
        front = rig[cams[0]].world_from_cam[:3, 2] * -1
        front = front - up * (front @ up)
    front /= np.linalg.norm(front)
    out = np.eye(4)
    if config.up == "y":
        out[:3, 0], out[:3, 1], out[:3, 2] = np.cross(up, front), up, front
    else:
        out[:3, 0], out[:3, 1], out[:3, 2] = np.cross(-front, up), -front, up
    out[:3, 3] = centroid
    return out
