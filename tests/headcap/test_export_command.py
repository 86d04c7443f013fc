"""`headcap export` end to end on a tiny synthetic session: the .glb reproduces the session's
ground-truth vertices, its baked texture re-renders the recorded images, and the splat exports
round-trip."""

import cv2
import numpy as np
import pytest
import torch

from headcap.avatar.export.glb import read_accessor, read_glb
from headcap.avatar.export.gltf_eval import evaluate_mesh_nodes
from headcap.avatar.export.splats import Splats, read_ply, read_splat_glb, write_ply
from headcap.cli import main


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    out = tmp_path_factory.mktemp("export") / "session"
    synthesize_session(StudioConfig(cameras=4, frames=3, resolution=128, calib_frames=2, seed=1), out)
    return out


@pytest.fixture(scope="module")
def exported(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("glb") / "head.glb"
    assert main(["export", str(session), "--format", "glb", "--out", str(out), "--texture-size", "256"]) == 0
    return out


def _texture(doc, binary):
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    data = np.frombuffer(binary[view["byteOffset"]: view["byteOffset"] + view["byteLength"]], np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def test_glb_animation_reproduces_the_session_vertices(session, exported):
    from headcap.avatar.export.gltf import vertex_layout
    from headcap.reconstruct.head_loaders import load_head_model

    doc, binary = read_glb(exported)
    truth = np.load(session / "ground_truth" / "vertices.npz")["vertices"]
    vmap = vertex_layout(load_head_model("default")).vertex_map
    worst = max(float(np.abs(evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0] - truth[k][vmap]).max())
                for k in range(truth.shape[0]))
    assert worst < 1e-4, worst  # the ground truth is stored as float32 world coordinates


def test_baked_texture_rerenders_the_recorded_images(session, exported):
    from headcap.capture.session import read_session
    from headcap.reconstruct.rasterize_mesh import render_mesh

    doc, binary = read_glb(exported)
    sess = read_session(session)
    rig = sess.load_rig()
    prim = doc["meshes"][0]["primitives"][0]
    uvs = read_accessor(doc, binary, prim["attributes"]["TEXCOORD_0"])
    faces = read_accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    texture = torch.from_numpy(_texture(doc, binary)).double() / 255
    frame = 2  # the texture was baked from frame 0 only: another expression and head pose
    # sample_texture takes OBJ-style UVs (origin bottom-left) in headcap; glTF's origin is top-left
    uv_obj = torch.from_numpy(np.stack([uvs[:, 0], 1 - uvs[:, 1]], 1))
    errors = []
    verts = evaluate_mesh_nodes(doc, binary, animation=0, key=frame)[0]
    for cam in sess.cameras:
        out = render_mesh(torch.from_numpy(verts), torch.from_numpy(faces), rig[cam], uvs=uv_obj,
                          face_uvs=torch.from_numpy(faces), texture=texture)
        recorded = cv2.imread(str(sess.image_path(frame, cam)))[..., ::-1] / 255.0
        mask = (out["mask"].numpy() > 0) & (cv2.imread(str(sess.mask_path(frame, cam)), 0) > 127)
        errors.append(((out["rgb"].numpy() - recorded) ** 2)[mask].mean())
    psnr = 10 * np.log10(1 / np.mean(errors))
    print(f"baked texture re-render PSNR {psnr:.1f} dB")
    assert psnr > 30.0  # measured 35.8 dB (seed 1, 4 cameras, 128 px)


def test_splat_exports_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    splats = Splats(rng.normal(size=(n, 3)) * 0.1, rng.normal(size=(n, 4)), rng.normal(size=(n, 3)) - 5,
                    rng.normal(size=n), rng.normal(size=(n, 16, 3)) * 0.3)
    write_ply(tmp_path / "in.ply", splats)
    assert main(["export", str(tmp_path / "in.ply"), "--format", "splat-glb", "--out", str(tmp_path / "s.glb")]) == 0
    assert main(["export", str(tmp_path / "in.ply"), "--format", "ply", "--out", str(tmp_path / "out" / "s.ply")]) == 0
    assert (tmp_path / "out" / "s.ply").read_bytes() == (tmp_path / "in.ply").read_bytes()
    back = read_splat_glb(tmp_path / "s.glb")
    quats = splats.quats / np.linalg.norm(splats.quats, axis=1, keepdims=True)
    quats = np.where(quats[:, :1] < 0, -quats, quats)
    np.testing.assert_allclose(back.means, splats.means, atol=1e-6)
    np.testing.assert_allclose(back.quats, quats, atol=1e-6)
    np.testing.assert_allclose(back.log_scales, splats.log_scales, atol=1e-5)
    np.testing.assert_allclose(back.opacity_logits, splats.opacity_logits, atol=1e-4)
    np.testing.assert_allclose(back.sh, splats.sh, atol=1e-6)


def test_export_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "glb", "--out", str(tmp_path / "a.glb")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "ply", "--out", str(tmp_path / "a.glb")]) == 2
    assert "should end in .ply" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "splat-glb", "--out", str(tmp_path / "a.glb")]) == 2
    assert "no Gaussians found" in capsys.readouterr().err


def test_animated_splats_follow_the_sequence(session, tmp_path):
    from headcap.avatar.export.sequence import read_sequence
    from headcap.avatar.export.splat_rig import bind_splats, pose_splats
    from headcap.reconstruct.head_loaders import load_head_model

    truth = np.load(session / "ground_truth" / "vertices.npz")["vertices"].astype(np.float64)
    rng = np.random.default_rng(2)
    n = 500
    means = truth[0][rng.integers(0, truth.shape[1], n)] + rng.normal(scale=0.002, size=(n, 3))
    fitted = Splats(means, rng.normal(size=(n, 4)), np.full((n, 3), -6.0), rng.normal(size=n),
                    rng.normal(size=(n, 4, 3)) * 0.2)
    write_ply(tmp_path / "fitted.ply", fitted)
    args = ["export", str(tmp_path / "fitted.ply"), "--sequence", str(session), "--splat-frame", "0"]
    assert main(args + ["--format", "splat-glb", "--out", str(tmp_path / "anim.glb")]) == 0
    assert main(args + ["--format", "ply", "--out", str(tmp_path / "canonical.ply")]) == 0
    fitted = read_ply(tmp_path / "fitted.ply")  # float32 as the file holds it
    doc, binary = read_glb(tmp_path / "anim.glb")
    assert doc["meshes"][0]["primitives"][0]["mode"] == 0
    np.testing.assert_allclose(evaluate_mesh_nodes(doc, binary, animation=0, key=0)[0], fitted.means, atol=1e-5)
    model = load_head_model("default")
    seq = read_sequence(session / "ground_truth" / "params.npz")
    bound = bind_splats(model, fitted, seq, 0)
    for k in (1, 2):
        posed = read_ply(tmp_path / "canonical" / f"{k:06d}.ply")
        np.testing.assert_allclose(evaluate_mesh_nodes(doc, binary, animation=0, key=k)[0], posed.means, atol=1e-5)
        np.testing.assert_allclose(posed.means, pose_splats(model, bound, seq, k).means, atol=1e-5)
    frame0 = read_ply(tmp_path / "canonical" / "000000.ply")
    np.testing.assert_allclose(frame0.means, fitted.means, atol=1e-5)
    q0 = fitted.quats / np.linalg.norm(fitted.quats, axis=1, keepdims=True)
    assert np.abs(np.abs((frame0.quats * q0).sum(1)) - 1).max() < 1e-5  # same rotation (up to sign)
