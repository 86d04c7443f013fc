"""Rig file formats: round trips, the convention of each format checked against an outside
definition (the format's own code or documented formula), exporter refusals, detection, CLI."""
import json
import math

import cv2
import numpy as np
import pytest
import torch

from headcap.calib.camera import Camera, Rig, look_at
from headcap.calib.formats import FORMATS, detect_format, read_any, write_any
from headcap.calib.formats._common import ExportError
from headcap.cli import main

FILE_NAMES = {"rig": "rig.json", "nersemble": "camera_params.json", "nerfstudio": "transforms.json",
              "colmap": "sparse", "colmap-bin": "sparse_bin", "opencv": "rig.yaml"}
#: formats whose stored numbers are headcap's own: bit-exact round trip
EXACT = {"rig", "nersemble", "opencv"}
#: formats that force a conversion of the pose (inverse / quaternion): exact up to its rounding
POSE_TOL = 1e-12


def make_rig(model: str, seed: int = 0, n: int = 4, shared_k: bool = False) -> Rig:
    rng = np.random.default_rng(seed)
    cams = []
    for i in range(n):
        angle = 2 * math.pi * i / n + rng.uniform(-0.2, 0.2)
        centre = [1.1 * math.sin(angle), rng.uniform(-0.2, 0.2), -1.1 * math.cos(angle)]
        K = np.array([[1200.0 + rng.uniform(-80, 80), 0.0, 400.0 + rng.uniform(-9, 9)],
                      [0.0, 1200.0 + rng.uniform(-80, 80), 300.0 + rng.uniform(-9, 9)], [0.0, 0.0, 1.0]])
        if shared_k:
            K = np.array([[1234.5678901234, 0.0, 401.123456789], [0.0, 1230.987654321, 299.87654321], [0.0, 0.0, 1.0]])
        dist = {"none": np.zeros(0), "opencv": rng.normal(0, 0.05, 5), "fisheye": rng.normal(0, 0.02, 4)}[model]
        cfw = look_at(centre, rng.normal(0, 0.05, 3), up=(0.0, 1.0, 0.0))
        cams.append(Camera(f"{222200037 + i}" if i % 2 else f"cam_{i:02d}", 800, 600, K, model, dist, cfw))
    return Rig.from_list(cams)


def scene(n: int = 300, seed: int = 11) -> np.ndarray:
    """A fixed head-sized cloud of points around the origin, seen by every camera of make_rig."""
    return np.random.default_rng(seed).uniform(-0.12, 0.12, (n, 3))


def formats_for(model: str):
    return [f for f in FORMATS if not (f == "nersemble" and model != "none")]


CASES = [(m, f) for m in ("none", "opencv", "fisheye") for f in formats_for(m)]


@pytest.mark.parametrize("model,fmt", CASES)
def test_round_trip(tmp_path, model, fmt):
    rig = make_rig(model)
    path = tmp_path / FILE_NAMES[fmt]
    write_any(rig, path, fmt)
    assert detect_format(path) == fmt
    back = read_any(path)
    assert back.ids == rig.ids
    for a, b in zip(rig, back):
        assert (a.width, a.height, a.distortion_model) == (b.width, b.height, b.distortion_model)
        assert np.array_equal(a.K, b.K), (a.K, b.K)
        assert np.array_equal(a.distortion, b.distortion)
        if fmt in EXACT:
            assert np.array_equal(a.cam_from_world, b.cam_from_world)
        else:
            assert np.abs(a.cam_from_world - b.cam_from_world).max() < POSE_TOL
    if fmt in EXACT:
        assert back == rig


@pytest.mark.parametrize("model,fmt", CASES)
def test_scene_projects_to_same_pixels_from_every_format(tmp_path, model, fmt):
    rig = make_rig(model, seed=3)
    pts = scene()
    path = tmp_path / FILE_NAMES[fmt]
    write_any(rig, path, fmt)
    back = read_any(path)
    for cam in rig:
        ref, depth = cam.project(pts)
        assert torch.all(depth > 0.5), "the scene must be in front of every camera"
        pix, _ = back[cam.id].project(pts)
        assert (pix - ref).abs().max().item() < 1e-9


def test_nerfstudio_file_follows_nerfstudio_ray_generation(tmp_path):
    """Re-implements nerfstudio's Cameras._generate_rays_from_coords on the raw JSON: the ray of
    pixel (row, col) starts at x = col + 0.5, y = row + 0.5 ((x - cx) / fx, y flipped, z = -1,
    rotated by transform_matrix). It must pass through the scene point headcap projects there."""
    rig = make_rig("none", seed=4)
    path = tmp_path / "transforms.json"
    write_any(rig, path, "nerfstudio")
    data = json.loads(path.read_text())
    pts = scene(50)
    for frame in data["frames"]:
        cam = rig[frame["camera_id"]]
        meta = {**data, **frame}
        pix, _ = cam.project(pts)
        # both conventions index pixels alike (column j is the j-th column); nerfstudio samples it at j + 0.5
        col, row = pix[:, 0].numpy(), pix[:, 1].numpy()
        x, y = col + 0.5, row + 0.5
        d_cam = np.stack([(x - meta["cx"]) / meta["fl_x"], -(y - meta["cy"]) / meta["fl_y"], -np.ones_like(x)], -1)
        c2w = np.asarray(frame["transform_matrix"])
        d_world = d_cam @ c2w[:3, :3].T
        d_world /= np.linalg.norm(d_world, axis=-1, keepdims=True)
        v = pts - c2w[:3, 3]
        off_ray = np.linalg.norm(v - (v * d_world).sum(-1, keepdims=True) * d_world, axis=-1)
        assert off_ray.max() < 1e-9
        # sanity: without the half-pixel shift the same check misses by ~0.5 px at ~1 m
        d_bad = np.stack([(col - meta["cx"]) / meta["fl_x"], -(row - meta["cy"]) / meta["fl_y"], -np.ones_like(x)], -1) @ c2w[:3, :3].T
        d_bad /= np.linalg.norm(d_bad, axis=-1, keepdims=True)
        assert np.linalg.norm(v - (v * d_bad).sum(-1, keepdims=True) * d_bad, axis=-1).max() > 1e-4


def test_nersemble_file_follows_world_2_cam_opencv_definition(tmp_path):
    """camera_params.json written by hand: pixel = K (R X + t), OpenCV axes, no half-pixel shift."""
    K = [[2400.0, 0.0, 1100.25], [0.0, 2400.0, 1604.75], [0.0, 0.0, 1.0]]
    rot = cv2.Rodrigues(np.array([0.1, -0.3, 0.05]))[0]
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rot, [0.02, -0.01, 1.1]
    path = tmp_path / "camera_params.json"
    path.write_text(json.dumps({"world_2_cam": {"222200037": w2c.tolist()}, "intrinsics": K}))
    with pytest.warns(UserWarning, match="2200x3208"):
        rig = read_any(path)
    cam = rig["222200037"]
    assert (cam.width, cam.height) == (2200, 3208)
    pts = scene(40)
    p_cam = pts @ rot.T + w2c[:3, 3]
    expected = (p_cam @ np.asarray(K).T)[:, :2] / p_cam[:, 2:]
    assert np.abs(cam.project(pts)[0].numpy() - expected).max() < 1e-9


def test_nersemble_benchmark_per_serial_intrinsics_and_shared_export(tmp_path):
    rig = make_rig("none", seed=5)
    path = tmp_path / "camera_params.json"
    write_any(rig, path, "nersemble")
    assert isinstance(json.loads(path.read_text())["intrinsics"], dict)  # K differ: per-serial layout
    shared = make_rig("none", seed=5, shared_k=True)
    write_any(shared, path, "nersemble")
    data = json.loads(path.read_text())
    assert np.asarray(data["intrinsics"]).shape == (3, 3)  # the dataset's single shared K
    assert read_any(path) == shared


def test_colmap_text_written_by_hand_uses_half_pixel_centres(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "cameras.txt").write_text("# comment\n1 PINHOLE 100 80 100.0 100.0 50.5 40.5\n"
                                        "2 SIMPLE_RADIAL 100 80 90.0 50.0 40.0 -0.1\n")
    # identity rotation, camera 2 m behind the origin along -z
    (folder / "images.txt").write_text("# c\n1 1 0 0 0 0 0 2 1 front.png\n\n2 1 0 0 0 0 0 2 2 radial.png\n0 0 -1\n")
    rig = read_any(folder)
    assert rig.ids == ["front.png", "radial.png"]
    pix, depth = rig["front.png"].project(np.array([[0.0, 0.0, 0.0], [0.2, -0.4, 0.0]]))
    # COLMAP's (50.5, 40.5) is the centre of pixel (50, 40) in OpenCV's integer convention
    assert torch.allclose(pix, torch.tensor([[50.0, 40.0], [60.0, 20.0]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(depth, torch.tensor([2.0, 2.0], dtype=torch.float64))
    radial = rig["radial.png"]
    assert radial.distortion_model == "opencv" and radial.distortion.tolist() == [-0.1, 0.0, 0.0, 0.0, 0.0]
    assert radial.K[0, 0] == radial.K[1, 1] == 90.0


@pytest.mark.parametrize("fmt", ["colmap", "colmap-bin"])
def test_colmap_cross_check_with_pycolmap(tmp_path, fmt):
    pycolmap = pytest.importorskip("pycolmap")  # the 'oracle' extra: a failure under HEADCAP_REQUIRE_TEST_DATA=1
    rig = Rig.from_list(list(make_rig("opencv", seed=6, n=2)) + [make_rig("fisheye", seed=7, n=1)["cam_00"].replace(id="fish"),
                        make_rig("none", seed=8, n=1)["cam_00"].replace(id="pinhole")])
    folder = tmp_path / "ours"
    write_any(rig, folder, fmt)
    rec = pycolmap.Reconstruction(str(folder))
    assert rec.num_images() == len(rig)
    pts = scene(30)
    for image in rec.images.values():
        cam = rig[image.name]
        cfw = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        assert np.abs(cfw.matrix() - cam.cam_from_world[:3]).max() < POSE_TOL
        colmap_cam = rec.cameras[image.camera_id]
        p_cam = pts @ cam.cam_from_world[:3, :3].T + cam.cam_from_world[:3, 3]
        theirs = np.asarray(colmap_cam.img_from_cam(p_cam))
        # COLMAP's pixel = headcap's + 0.5
        assert np.abs(theirs - 0.5 - cam.project(pts)[0].numpy()).max() < 1e-8
    # and pycolmap's own writer (text and binary, with rigs/frames files) reads back here
    for writer in ("write_text", "write_binary"):
        out = tmp_path / writer
        out.mkdir()
        getattr(rec, writer)(str(out))
        back = read_any(out)
        assert back.ids == rig.ids and back.allclose(rig, atol=POSE_TOL)


def test_opencv_calibrate_and_stereo_layouts_match_cv2(tmp_path):
    rng = np.random.default_rng(9)
    M1 = np.array([[700.0, 0, 330.2], [0, 702.0, 241.7], [0, 0, 1]])
    M2 = np.array([[690.0, 0, 318.9], [0, 689.0, 238.1], [0, 0, 1]])
    D1, D2 = rng.normal(0, 0.03, (1, 5)), rng.normal(0, 0.03, (1, 5))
    R = cv2.Rodrigues(np.array([0.02, -0.25, 0.01]))[0]
    T = np.array([[-0.12], [0.003], [0.01]])
    path = tmp_path / "stereo.yml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for key, value in (("image_width", 640), ("image_height", 480), ("M1", M1), ("D1", D1), ("M2", M2),
                       ("D2", D2), ("R", R), ("T", T)):
        fs.write(key, value)
    fs.release()
    rig = read_any(path)
    pts = rng.uniform(-0.2, 0.2, (100, 3)) + [0, 0, 1.5]  # in the first camera's frame = the world
    for cam_id, M, D, rvec, tvec in (("cam1", M1, D1, np.zeros(3), np.zeros(3)),
                                     ("cam2", M2, D2, cv2.Rodrigues(R)[0], T)):
        ref, _ = cv2.projectPoints(pts, rvec, tvec, M, D)
        assert np.abs(rig[cam_id].project(pts)[0].numpy() - ref.reshape(-1, 2)).max() < 1e-6
    single = tmp_path / "front_cam.yaml"
    fs = cv2.FileStorage(str(single), cv2.FILE_STORAGE_WRITE)
    for key, value in (("image_width", 640), ("image_height", 480), ("camera_matrix", M1),
                       ("distortion_coefficients", np.c_[D1[:, :4], [[0.0]], np.zeros((1, 3))])):
        fs.write(key, value)
    fs.release()
    cam = read_any(single)["front_cam"]
    assert cam.distortion.tolist() == D1[0, :4].tolist() + [0.0]


def test_nerfstudio_reads_vhap_style_frames_and_blender_angles(tmp_path):
    rig = make_rig("none", seed=10, n=2)
    path = tmp_path / "transforms.json"
    write_any(rig, path, "nerfstudio")
    data = json.loads(path.read_text())
    # VHAP writes one frame per (timestep, camera): the same camera repeats
    data["frames"] = [json.loads(json.dumps(dict(f, timestep_index=t))) for t in range(3) for f in data["frames"]]
    path.write_text(json.dumps(data))
    assert read_any(path).allclose(rig, atol=POSE_TOL)
    # a repeated camera that moved is an error, not a silent pick
    data["frames"][2]["transform_matrix"][0][3] += 0.01
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"frames\[2\].camera_id"):
        read_any(path)
    # original NeRF/Blender files give camera_angle_x instead of focal lengths
    blender = {"camera_angle_x": 0.6911112070083618, "w": 800, "h": 800, "cx": 400.0, "cy": 400.0,
               "camera_model": "PINHOLE",
               "frames": [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]}
    path.write_text(json.dumps(blender))
    cam = read_any(path)["r_0"]
    assert cam.K[0, 0] == pytest.approx(400 / math.tan(0.6911112070083618 / 2), abs=1e-9)


def test_exporters_refuse_what_the_format_cannot_store(tmp_path):
    distorted = make_rig("opencv")
    with pytest.raises(ExportError, match="NeRSemble stores no lens distortion"):
        write_any(distorted, tmp_path / "camera_params.json", "nersemble")
    cams = list(make_rig("none"))
    mixed_size = Rig.from_list([cams[0], cams[1].replace(width=640)])
    with pytest.raises(ExportError, match="one image size"):
        write_any(mixed_size, tmp_path / "camera_params.json", "nersemble")
    skewed = Rig.from_list([cams[0].replace(K=cams[0].K + np.array([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]]))])
    for fmt in ("nerfstudio", "colmap"):
        with pytest.raises(ExportError, match="skew"):
            write_any(skewed, tmp_path / FILE_NAMES[fmt], fmt)
    mixed_model = Rig.from_list([cams[0], list(make_rig("fisheye"))[1]])
    with pytest.raises(ExportError, match="camera_model is global"):
        write_any(mixed_model, tmp_path / "transforms.json", "nerfstudio")
    spaced = Rig.from_list([cams[0].replace(id="cam 00")])
    with pytest.raises(ExportError, match="whitespace"):
        write_any(spaced, tmp_path / "sparse", "colmap")
    write_any(spaced, tmp_path / "sparse_bin", "colmap-bin")  # binary stores any name
    assert read_any(tmp_path / "sparse_bin").ids == ["cam 00"]
    bool_id = Rig.from_list([cams[0].replace(id="true")])
    with pytest.raises(ExportError, match="survive"):
        write_any(bool_id, tmp_path / "rig.yaml", "opencv")
    assert not (tmp_path / "rig.yaml").exists(), "a refused export must leave no file behind"
    zero = Rig.from_list([cams[0].replace(distortion_model="opencv", distortion=np.zeros(5))])
    with pytest.warns(UserWarning, match="all-zero"):
        write_any(zero, tmp_path / "camera_params.json", "nersemble")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "rig"])
def test_cli_convert_round_trip(tmp_path, fmt, capsys):
    rig = make_rig("none")
    src = tmp_path / "rig.json"
    write_any(rig, src, "rig")
    mid = tmp_path / FILE_NAMES[fmt]
    assert main(["rig", "convert", str(src), str(mid), "--to", fmt]) == 0
    out = tmp_path / "back.json"
    assert main(["rig", "convert", str(mid), str(out), "--to", "rig", "--from", fmt]) == 0
    back = read_any(out)
    assert back.ids == rig.ids and back.allclose(rig, atol=POSE_TOL)


def test_cli_show_prints_table_and_draws_frusta(tmp_path, capsys):
    rig = make_rig("opencv")
    src = tmp_path / "rig.json"
    write_any(rig, src, "rig")
    png = tmp_path / "frusta.png"
    assert main(["rig", "show", str(src), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    for cam in rig:
        assert cam.id in out
    assert f"{rig.ids[0]}" in out and "800x600" in out
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.std() > 5
