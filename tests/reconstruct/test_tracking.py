"""Head-model tracking (reconstruct.tracking, the tracking stage and `headcap track`) against a
tiny synthetic studio session's ground truth (4 cameras, 2 frames, 64 px; 8/4/2 Gauss-Newton
iterations so the test stays short: its thresholds are for that size; the issue's targets at 16 cameras and
30 frames are measured in benchmarks/bm_tracking.py and docs/tracking.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from headcap.core.fileio import read_json, read_npz

FAST = ["--first-frame-iterations", "8", "--frame-iterations", "4", "--global-iterations", "2", "--no-overlay"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path_factory.mktemp("track") / "s"
    synthesize_session(StudioConfig(cameras=4, frames=2, resolution=64, calib_frames=0, head="default", seed=2), root)
    return root


def _write_truth_landmarks(root):
    """landmarks/landmarks2d.npz as the landmarks stage writes it, holding the true iBUG-68
    points (projected through the true cameras) at MediaPipe's indices of them."""
    from headcap.calib.projection import project_points
    from headcap.reconstruct.landmarks import IBUG68_FROM_MEDIAPIPE, NUM_MESH
    from headcap.studio.writer import write_npz

    gt = read_npz(root / "ground_truth" / "landmarks.npz")["landmarks"].astype(np.float64)
    cams = read_npz(root / "ground_truth" / "cameras.npz")
    T, C = gt.shape[0], len(cams["camera_ids"])
    points = np.full((T, C, NUM_MESH, 2), np.nan, np.float32)
    for c in range(C):
        pix, _ = project_points(torch.as_tensor(gt), torch.as_tensor(cams["K"][c]), torch.as_tensor(cams["cam_from_world"][:, c]),
                                "opencv" if cams["distortion"].shape[1] else "none", torch.as_tensor(cams["distortion"][c]))
        points[:, c][:, IBUG68_FROM_MEDIAPIPE] = pix.numpy()
    write_npz(root / "landmarks" / "landmarks2d.npz", points=points, confidence=np.ones((T, C), np.float32),
              found=np.ones((T, C), bool), boxes=np.zeros((T, C, 4), np.float32),
              cameras=np.array([str(c) for c in cams["camera_ids"]]), frames=np.arange(T), ibug68=IBUG68_FROM_MEDIAPIPE)


def test_fast_model_evaluation_matches_head_model_forward():
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.lbs import axis_angle_to_matrix
    from headcap.reconstruct.tracking import LinearHead, model_vertices

    model = load_head_model("default", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    ident = torch.randn(2, 50, generator=g, dtype=torch.float64)
    expr = torch.rand(2, model.num_expression, generator=g, dtype=torch.float64)
    joints = 0.2 * torch.randn(2, model.num_joints, 3, generator=g, dtype=torch.float64)
    pose = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    pose[:, :3, :3] = axis_angle_to_matrix(torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.2, 0.1]], dtype=torch.float64))
    pose[:, :3, 3] = torch.tensor([0.01, -0.02, 0.3])
    ref = model.forward(identity=ident, expression=expr, joint_rotations=joints, world_from_head=pose).vertices
    ours = model_vertices(LinearHead.of(model), ident, expr, joints, pose)
    assert (ours - ref).abs().max() < 1e-12
    ids = torch.tensor([5, 100, 4000])
    np.testing.assert_allclose(model_vertices(LinearHead.of(model, ids), ident, expr, joints, pose), ref[:, ids], atol=1e-12)


def test_track_command_multiview_with_landmarks(session):
    """`headcap track` on the synthetic session with landmarks present: every file, errors
    against the truth (thresholds for 64 px and 8/4/2 iterations: median vertex error <= 5 mm,
    landmark reprojection <= 1 px, skull rotation <= 3 deg), a cached rerun."""
    from headcap.cli import main

    _write_truth_landmarks(session)
    assert main(["track", str(session), *FAST]) == 0
    out = session / "tracking"
    summary = read_json(out / "summary.json")
    assert summary["landmarks"] is True and summary["registration"] is False
    gt = summary["ground_truth"]
    assert gt["vertex_error_mm_median"] <= 5.0, gt  # measured 2.2 mm
    assert gt["landmark_px_median"] <= 1.0, gt  # measured 0.20 px
    assert gt["skull_rotation_deg_max"] <= 3.0, gt  # measured 1.3 deg
    params = read_npz(out / "params.npz")
    assert params["expression"].shape == (2, 52) and params["world_from_head"].shape == (2, 4, 4)
    assert list(params["expression_names"])[:2] == ["browDownLeft", "browDownRight"]
    meshes = read_npz(out / "meshes.npz")
    assert meshes["vertices"].shape == (2, 4801, 3)
    transforms = read_json(out / "transforms.json")
    assert len(transforms["frames"]) == 2 * 4
    frame = transforms["frames"][5]
    assert {"file_path", "transform_matrix", "timestep_index", "camera_index", "camera_angle_x", "fl_x",
            "head_param_path", "fg_mask_path"} <= set(frame)
    # OpenGL camera-to-world: the camera looks down its -z, i.e. towards the head at the origin
    c2w = np.array(frame["transform_matrix"])
    assert np.dot(-c2w[:3, 2], -c2w[:3, 3]) > 0.9 * np.linalg.norm(c2w[:3, 3])
    assert (out / frame["head_param_path"]).is_file()
    for name in ("residuals.png", "jitter.png"):
        assert (out / name).stat().st_size > 1000
    assert main(["track", str(session), *FAST]) == 0  # cached
    assert read_json(out / "stage.json")["key"]


def test_registered_meshes_pin_the_fit_below_a_millimetre(session):
    """With registered meshes of the same topology (here the truth + 0.3 mm noise, what the
    registration stage gives on good geometry), a few Gauss-Newton iterations land the model on
    them: median vertex error <= 1 mm, skull <= 0.2 deg / 0.5 mm (the issue's multi-view targets;
    measured 0.020 mm, 0.017 deg, 0.018 mm on 16 cameras x 30 frames at 256 px in bm_tracking.py
    --registered; on the chain's own MVS and registration 0.40 mm, 0.12 deg, 0.09 mm:
    docs/tracking.md)."""
    from headcap.capture.session import read_session
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.tracking import TrackingConfig, track_sequence
    from headcap.reconstruct.tracking_io import evaluate_against_truth, load_views

    model = load_head_model("default")
    views, cameras = load_views(read_session(session), monocular=False)
    truth = read_npz(session / "ground_truth" / "vertices.npz")["vertices"].astype(np.float64)
    meshes = truth + np.random.default_rng(0).normal(0.0, 3e-4, truth.shape)
    config = TrackingConfig(first_frame_iterations=5, frame_iterations=3, global_iterations=1)
    result = track_sequence(model, views, config, meshes=meshes)
    gt = evaluate_against_truth(result, session, cameras)
    assert gt["vertex_error_mm_median"] <= 1.0, gt
    assert gt["skull_rotation_deg_max"] <= 0.2 and gt["skull_translation_mm_max"] <= 0.5, gt
    assert gt["landmark_px_median"] <= 1.0, gt


def test_track_command_starts_from_the_registration_fit(tmp_path, session):
    """`headcap track` on a session with registration/meshes.npz and params.npz (what `headcap
    register` writes; here the truth's parameters with 0.5 deg of pose error and identity noise,
    meshes = truth + 0.3 mm noise): every frame starts from the registration's fit, all of its
    identity modes are fitted, and the skull lands inside the issue's targets. A params.npz of
    another model (wrong identity length) is not used, and says so in the summary."""
    import shutil

    from headcap.cli import main
    from headcap.studio.writer import write_npz

    root = tmp_path / "s"
    shutil.copytree(session, root, ignore=shutil.ignore_patterns("tracking", "landmarks"))
    truth = read_npz(root / "ground_truth" / "vertices.npz")
    params = read_npz(root / "ground_truth" / "params.npz")
    rng = np.random.default_rng(5)
    verts = truth["vertices"].astype(np.float64)
    angle = np.deg2rad(0.5)
    tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    pose = np.asarray(params["world_from_head"], np.float64).copy()
    pose[:, :3, :3] = tilt @ pose[:, :3, :3]
    reg = root / "registration"
    reg.mkdir()
    write_npz(reg / "meshes.npz", vertices=(verts + rng.normal(0.0, 3e-4, verts.shape)).astype(np.float32),
              faces=truth["faces"], confidence=np.ones(verts.shape[:2], np.float32))
    fields = dict(identity=params["identity"] + rng.normal(0.0, 0.1, params["identity"].shape),
                  expression=params["expression"], joint_rotations=params["joint_rotations"], world_from_head=pose,
                  expression_names=params["expression_names"], joint_names=params["joint_names"])
    write_npz(reg / "params.npz", **fields)
    assert main(["track", str(root), *FAST]) == 0
    summary = read_json(root / "tracking" / "summary.json")
    assert summary["registration"] is True and summary["started_from_registration"] is True, summary
    gt = summary["ground_truth"]
    assert gt["vertex_error_mm_median"] <= 1.0, gt
    assert gt["skull_rotation_deg_max"] <= 0.2 and gt["skull_translation_mm_max"] <= 0.5, gt
    # another model's fit: the meshes still pin the fit, the parameters are not used
    write_npz(reg / "params.npz", **{**fields, "identity": np.zeros(3)})
    assert main(["track", str(root), *FAST]) == 0
    summary = read_json(root / "tracking" / "summary.json")
    assert summary["started_from_registration"] is False, summary
    assert summary["ground_truth"]["vertex_error_mm_median"] <= 1.0, summary


def test_resume_from_a_checkpoint_skips_the_frames_done(session):
    from headcap.capture.session import read_session
    from headcap.reconstruct.head_loaders import load_head_model
    from headcap.reconstruct.tracking import TrackingConfig, track_sequence
    from headcap.reconstruct.tracking_io import load_views

    model = load_head_model("default")
    views, _ = load_views(read_session(session), monocular=False)
    views = [v[:2] for v in views]
    config = TrackingConfig(first_frame_iterations=4, frame_iterations=2, global_iterations=0, photometric_weight=0.0)
    states = []
    first = track_sequence(model, views, config, checkpoint=states.append)
    assert [int(s["frames_done"]) for s in states] == [1, 2]
    steps = []
    again = track_sequence(model, views, config, resume=states[-1], progress=lambda *a: steps.append(a))
    assert not any(stage == "first frame" for stage, *_ in steps)  # nothing refitted
    np.testing.assert_allclose(again.vertices, first.vertices, atol=1e-6)


def test_bad_sessions_give_clear_errors(tmp_path, session):
    import shutil

    from headcap.cli import main
    from headcap.core.fileio import write_json
    from headcap.pipeline.stages.track import TrackStageConfig, track_stage

    copy = tmp_path / "norig"
    shutil.copytree(session, copy, ignore=shutil.ignore_patterns("tracking", "tracking.partial"))
    manifest = read_json(copy / "session.json")
    manifest.pop("rig")
    write_json(copy / "session.json", manifest)
    with pytest.raises(ValueError, match="field 'rig' missing"):
        track_stage(TrackStageConfig(), copy)
    assert main(["track", str(copy)]) == 2
    manifest = read_json(session / "session.json")
    for frame in manifest["frames"]:
        frame["masks"] = {}
    nomask = tmp_path / "nomask"
    shutil.copytree(session, nomask, ignore=shutil.ignore_patterns("tracking", "tracking.partial"))
    write_json(nomask / "session.json", manifest)
    assert main(["track", str(nomask), *FAST]) == 2
    from headcap.capture.session import read_session
    from headcap.reconstruct.tracking_io import load_views

    with pytest.raises(ValueError, match="no mask"):
        load_views(read_session(nomask))


def test_track_command_monocular(tmp_path):
    """`headcap track --monocular` on a one-camera synthetic session (64 px, 3 frames): the focal
    length stays near the true one and the shape is right up to a similarity (threshold for this
    size and step count: median vertex error <= 5 mm after per-frame similarity alignment)."""
    from headcap.cli import main
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path / "mono"
    synthesize_session(StudioConfig(frames=3, resolution=64, calib_frames=0, monocular=True, seed=4), root)
    assert main(["track", str(root), "--monocular", *FAST]) == 0
    summary = read_json(root / "tracking" / "summary.json")
    gt = summary["ground_truth"]
    assert summary["cameras"] == 1 and summary["monocular"] is True
    assert 0.8 < gt["focal_scale"] < 1.25, gt
    assert gt["vertex_error_mm_median"] <= 5.0, gt  # measured 2.6 mm
    params = read_npz(root / "tracking" / "params.npz")
    assert params["K"].shape == (3, 1, 3, 3)


def test_monocular_with_detected_landmarks_meets_the_issue_targets(tmp_path, test_data):
    """The monocular chain as `headcap run` orders it, nothing from the truth until the score:
    `headcap landmarks` (MediaPipe's detector and mesh on every frame) then `headcap track
    --monocular`, 16 frames of 256 px. Measured (8/4/2 steps): 2.61 mm median after per-frame
    similarity alignment, jitter 0.91x the truth's, focal 0.998x; the issue's targets are
    3 mm and within 20 %. Without the landmarks the same sequence drifts (4.6 mm over 30 frames
    in benchmarks/bm_tracking.py)."""
    from headcap.cli import main
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path / "mono"
    synthesize_session(StudioConfig(frames=16, resolution=256, calib_frames=0, monocular=True, seed=7), root)
    assert main(["landmarks", str(root), "--models", str(test_data / "mediapipe_face" / "models")]) == 0
    assert read_npz(root / "landmarks" / "landmarks2d.npz")["found"].all()
    assert main(["track", str(root), "--monocular", *FAST]) == 0
    summary = read_json(root / "tracking" / "summary.json")
    assert summary["landmarks"] is True, summary
    gt = summary["ground_truth"]
    assert gt["vertex_error_mm_median"] <= 3.0, gt
    assert 0.8 <= gt["jitter_ratio"] <= 1.2, gt
    assert 0.95 < gt["focal_scale"] < 1.05, gt
