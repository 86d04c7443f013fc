"""Per-frame geometry (headcap reconstruct) on a tiny synthetic session: the surface against the
ground-truth mesh, the visual hull around it, per-frame resume, and bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from headcap.capture.session import read_session
from headcap.core.ply import read_points
from headcap.reconstruct.fusion import HullConfig, carve_visual_hull
from headcap.reconstruct.mvs import load_views
from headcap.reconstruct.surface import distance_to_mesh

#: 8 cameras x 128 px: a pixel spans ~3 mm on the head; the TSDF surface reaches ~1.5 mm median
#: there (the issue's 1 mm target is for 16 x 512 px: benchmarks/bm_mvs.py, docs/reconstruct.md)
SURFACE_MEDIAN_MM = 2.2
SURFACE_P95_MM = 7.0


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    out = tmp_path_factory.mktemp("mvs") / "session"
    synthesize_session(StudioConfig(cameras=8, frames=1, resolution=128, calib_frames=0, seed=0), out)
    return out


@pytest.fixture(scope="module")
def reconstructed(session_dir) -> Path:
    from headcap.cli import main

    torch.set_num_threads(2)
    assert main(["reconstruct", str(session_dir), "--depth-samples", "32", "--hull-voxel", "0.004"]) == 0
    return session_dir / "geometry"


def _truth(session_dir: Path):
    gt = np.load(session_dir / "ground_truth" / "vertices.npz")
    return gt["vertices"][0].astype(np.float64), gt["render_faces"].astype(np.int64)


def test_surface_matches_ground_truth(reconstructed, session_dir):
    verts, faces = _truth(session_dir)
    surface = read_points(reconstructed / "000000_surface.ply")
    assert len(surface["faces"]) > 5000
    d = distance_to_mesh(surface["points"], verts, faces) * 1e3
    assert np.median(d) < SURFACE_MEDIAN_MM, np.median(d)
    assert np.percentile(d, 95) < SURFACE_P95_MM, np.percentile(d, 95)
    summary = json.loads((reconstructed / "summary.json").read_text())
    frame = summary["frames"][0]
    assert frame["method"] == "mvs"
    assert frame["surface_error_median_mm"] == pytest.approx(np.median(d), rel=1e-3)
    for name in ("000000_depth.png", "000000_normal.png", "000000_error.png"):
        assert (reconstructed / "previews" / name).stat().st_size > 1000


def test_fused_points_have_normals_and_confidence(reconstructed, session_dir):
    verts, faces = _truth(session_dir)
    pts = read_points(reconstructed / "000000.ply")
    assert len(pts["points"]) > 1000
    np.testing.assert_allclose(np.linalg.norm(pts["normals"], axis=1), 1.0, atol=1e-3)
    assert (pts["confidence"] >= 0).all() and (pts["confidence"] <= 1).all()
    d = distance_to_mesh(pts["points"], verts, faces) * 1e3
    assert np.median(d) < SURFACE_MEDIAN_MM
    # normals point out of the head: towards the cameras, away from the head's centre
    centre = verts.mean(0)
    outward = np.sum(pts["normals"] * (pts["points"] - centre), 1) > 0
    assert outward.mean() > 0.9


def test_visual_hull_contains_the_truth(session_dir):
    session = read_session(session_dir)
    views = load_views(session, session.load_rig(), 0)
    hull = carve_visual_hull(views, HullConfig(voxel=0.004))
    verts, faces = _truth(session_dir)
    assert hull.contains(verts).mean() > 0.995
    # and it is a hull, not the whole box: the space 1-5 cm in front of the face is carved away
    lo, hi = verts.min(0), verts.max(0)
    rng = np.random.default_rng(0)
    front = np.stack([rng.uniform(lo[0], hi[0], 2000), rng.uniform(lo[1], hi[1], 2000),
                      rng.uniform(hi[2] + 0.01, hi[2] + 0.05, 2000)], 1)
    assert hull.contains(front).mean() < 0.05
    hv, hf = hull.surface()
    assert len(hf) > 1000
    assert np.median(distance_to_mesh(hv, verts, faces)) < 0.02


def test_textureless_frame_falls_back_to_the_visual_hull(session_dir):
    from headcap.reconstruct.geometry import GeometryConfig, reconstruct_frame
    from headcap.reconstruct.fusion import HullConfig

    session = read_session(session_dir)
    views = load_views(session, session.load_rig(), 0)
    for v in views:
        v.grey = torch.full_like(v.grey, 0.5)  # no texture anywhere
    geo = reconstruct_frame(views, GeometryConfig(hull=HullConfig(voxel=0.004)))
    assert geo.method == "visual_hull" and geo.coverage == 0.0
    verts, faces = _truth(session_dir)
    assert len(geo.surface_faces) > 1000
    assert np.allclose(geo.confidence, 0.1)
    assert np.median(distance_to_mesh(geo.points, verts, faces)) < 0.02


def test_resume_skips_finished_frames(reconstructed, session_dir, tmp_path, monkeypatch):
    """A work folder holding frame 0's files (a run killed after it) continues without redoing it."""
    import headcap.reconstruct.geometry as geometry
    from headcap.pipeline.runner import Pipeline
    from headcap.pipeline.stages.reconstruct import ReconstructStageConfig, reconstruct_stage

    config = ReconstructStageConfig(depth_samples=32, hull_voxel=0.004)
    stage = reconstruct_stage(config, source=session_dir)
    root = tmp_path / "root"
    pipeline = Pipeline(root, [stage])
    work = root / "geometry.partial"
    work.mkdir(parents=True)
    (work / ".stage-key").write_text(pipeline.keys()["geometry"])
    for name in ("000000.ply", "000000_surface.ply", "000000.json"):
        shutil.copy(reconstructed / name, work / name)

    def boom(*a, **k):
        raise AssertionError("frame 0 was recomputed")

    monkeypatch.setattr(geometry, "reconstruct_frame", boom)
    result = pipeline.run()["geometry"]
    summary = json.loads((result.folder / "summary.json").read_text())
    assert [f["frame"] for f in summary["frames"]] == [0]
    assert (result.folder / "000000_surface.ply").read_bytes() == (reconstructed / "000000_surface.ply").read_bytes()


def test_frame_without_mask_warns_and_proceeds(session_dir, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(session_dir, copy, ignore=shutil.ignore_patterns("geometry*", "calibration"))
    data = json.loads((copy / "session.json").read_text())
    del data["frames"][0]["masks"]["cam03"]
    (copy / "session.json").write_text(json.dumps(data))
    session = read_session(copy)
    messages = []
    views = load_views(session, session.load_rig(), 0, warn=messages.append)
    assert len(messages) == 1 and "frame 0" in messages[0] and "cam03" in messages[0]
    assert views[3].mask is None and views[2].mask is not None
    hull = carve_visual_hull(views, HullConfig(voxel=0.004))
    assert hull.masked_views == 7
    verts, _ = _truth(session_dir)
    assert hull.contains(verts).mean() > 0.995


def test_session_without_rig_is_a_clear_error(session_dir, tmp_path):
    from headcap.cli import main

    copy = tmp_path / "s"
    shutil.copytree(session_dir, copy, ignore=shutil.ignore_patterns("geometry*", "calibration"))
    data = json.loads((copy / "session.json").read_text())
    del data["rig"]
    (copy / "session.json").write_text(json.dumps(data))
    assert main(["reconstruct", str(copy)]) == 2
    assert not (copy / "geometry").exists() and not (copy / "geometry.partial").exists()


def test_bad_frames_flag(session_dir):
    from headcap.pipeline.stages.reconstruct import parse_frames

    assert parse_frames("", 3) == [0, 1, 2]
    assert parse_frames("1:", 3) == [1, 2]
    assert parse_frames(":2", 3) == [0, 1]
    with pytest.raises(ValueError, match="--frames"):
        parse_frames("5:9", 3)
    with pytest.raises(ValueError, match="--frames"):
        parse_frames("a:b", 3)


def test_frames_on_local_workers_give_the_serial_run_s_files(tmp_path):
    """The geometry step maps its frames through the pipeline's executor: two local worker
    processes write byte-identical surfaces and points to a serial run's."""
    from headcap.pipeline.executor import ExecutorConfig, make_executor
    from headcap.pipeline.runner import Pipeline
    from headcap.pipeline.stages.reconstruct import ReconstructStageConfig, reconstruct_stage
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    session = tmp_path / "session"
    synthesize_session(StudioConfig(cameras=4, frames=2, resolution=96, calib_frames=0, seed=5), session)
    config = ReconstructStageConfig(depth_samples=16, hull_voxel=0.005)
    folders = {}
    for kind in ("serial", "local"):
        with make_executor(ExecutorConfig(kind=kind, workers=2)) as executor:
            root = tmp_path / kind
            folders[kind] = Pipeline(root, [reconstruct_stage(config, source=session)],
                                     executor=executor).run()["geometry"].folder
    for name in ("000000.ply", "000000_surface.ply", "000001.ply", "000001_surface.ply"):
        assert (folders["local"] / name).read_bytes() == (folders["serial"] / name).read_bytes(), name
    stats = [json.loads((folders[k] / "000001.json").read_text()) for k in ("serial", "local")]
    assert {k: v for k, v in stats[0].items() if "seconds" not in k} == \
        {k: v for k, v in stats[1].items() if "seconds" not in k}
