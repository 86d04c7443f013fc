"""The real scan through an outside renderer (numpy ray caster -> nerfstudio dataset -> headcap
ingest): the rig read back from transforms.json and the masks carve a visual hull that holds
the scan, and stereo on one view lands on the scan. Full-size numbers: benchmarks/bm_scan_mvs.py."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_scan_rendered_elsewhere_is_ingested_and_carved(test_data, tmp_path):
    from scan_raycast import write_nerfstudio_scan

    from headcap.capture.session import read_session
    from headcap.cli import main
    from headcap.reconstruct.fusion import HullConfig, backproject, carve_visual_hull
    from headcap.reconstruct.mvs import MVSConfig, depth_map, load_views
    from headcap.reconstruct.surface import distance_to_mesh
    from headcap.studio.rig_layout import RigLayoutConfig, studio_rig

    rig = studio_rig(RigLayoutConfig(num_cameras=6, width=128, height=128), np.random.default_rng(0))
    truth = write_nerfstudio_scan(tmp_path / "ns", test_data / "lee_perry_smith_head", rig)
    assert main(["ingest", str(tmp_path / "ns"), "--out", str(tmp_path / "session"), "--no-progress"]) == 0
    session = read_session(tmp_path / "session")
    back = session.load_rig()
    for cam in rig.cameras.values():  # the nerfstudio conventions (OpenGL, +0.5 px) undone on reading
        assert back[cam.id].allclose(cam, atol=1e-6)
    views = load_views(session, back, 0)
    hull = carve_visual_hull(views, HullConfig(voxel=0.005))
    verts = truth["vertices"]
    inside_images = np.ones(len(verts), bool)
    for cam in rig.cameras.values():
        pix, depth = cam.project(verts)
        pix = pix.numpy()
        inside_images &= (pix[:, 0] > 1) & (pix[:, 0] < cam.width - 2) & (pix[:, 1] > 1) & (pix[:, 1] < cam.height - 2)
    assert inside_images.sum() > 1000
    assert hull.contains(verts[inside_images]).mean() > 0.99
    m = depth_map(views, 2, *hull.depth_bounds(views[2]), MVSConfig(depth_samples=32))
    X, ok = backproject(m.depth, views[2].K, views[2].cam_from_world)
    assert ok.sum() > 500
    d = distance_to_mesh(X[ok].numpy(), verts, truth["faces"])
    assert np.median(d) < 0.006  # a pixel spans ~3 mm at 128 px
