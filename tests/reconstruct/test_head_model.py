"""HeadModel and lbs on toy models whose answers are known in closed form."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from headcap.reconstruct.head_loaders import load_head_model
from headcap.reconstruct.head_model import HeadModel
from headcap.reconstruct.lbs import axis_angle_to_matrix, joint_transforms, lbs, pose_feature


def toy_model(dtype=torch.float64, correctives: bool = False, regressor: bool = False) -> HeadModel:
    """Four vertices, root + jaw (at the origin) + tip (child of jaw at (0, 0, 1))."""
    gen = torch.Generator().manual_seed(1)
    template = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=dtype)
    weights = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    kwargs = {}
    if regressor:
        # joints = vertex-2 scaled to 0, vertex 0 (0,0,1) for the tip; root/jaw at the origin
        reg = torch.zeros(3, 4, dtype=dtype)
        reg[2, 0] = 1.0
        kwargs["joint_regressor"] = reg
    else:
        kwargs["rest_joints"] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
        kwargs["joint_identity_basis"] = torch.zeros(2, 3, 3, dtype=dtype)
    if correctives:
        kwargs["pose_correctives"] = 0.1 * torch.randn(18, 4, 3, generator=gen, dtype=dtype)
    return HeadModel(
        name="toy",
        template=template,
        faces=torch.tensor([[0, 1, 2], [0, 2, 3]]),
        identity_basis=0.1 * torch.randn(2, 4, 3, generator=gen, dtype=dtype),
        expression_basis=0.1 * torch.randn(3, 4, 3, generator=gen, dtype=dtype),
        expression_names=["a", "b", "c"],
        joint_names=["root", "jaw", "tip"],
        parents=torch.tensor([-1, 0, 1]),
        lbs_weights=weights,
        landmark_ids=torch.tensor([3, 0]),
        region_masks={"face": torch.tensor([True, False, True, False])},
        licence="test",
        **kwargs,
    )


def test_axis_angle_matches_scipy_including_tiny_angles():
    gen = torch.Generator().manual_seed(0)
    axes = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen, dtype=torch.float64), dim=-1)
    angles = torch.tensor([0.0, 1e-9, 1e-5, 0.3, 2.0, math.pi - 1e-3], dtype=torch.float64)
    rotvec = axes * angles[:, None]
    expected = Rotation.from_rotvec(rotvec.numpy()).as_matrix()
    got = axis_angle_to_matrix(rotvec).numpy()
    assert np.abs(got - expected).max() < 1e-12


def test_jaw_rotation_90_degrees_ground_truth():
    model = toy_model()
    rot = torch.zeros(1, 3, 3, dtype=torch.float64)
    rot[0, 1, 0] = math.pi / 2  # jaw about +x
    out = model(joint_rotations=rot)
    v = out.vertices[0]
    # R_x(90) maps (0,0,1) -> (0,-1,0); the root-bound vertex stays; a 50/50 vertex on the
    # x axis is invariant under both; the tip (child of jaw) follows the jaw.
    expected = torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, -2.0, 0.0]], dtype=torch.float64)
    assert (v - expected).abs().max() < 1e-12
    assert (out.joints[0, 2] - torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)).abs().max() < 1e-12
    assert (out.landmarks[0] - expected[[3, 0]]).abs().max() < 1e-12


def test_linear_blend_of_two_joints_is_the_average_of_rigid_motions():
    model = toy_model()
    rot = torch.zeros(1, 3, 3, dtype=torch.float64)
    rot[0, 1, 2] = math.pi / 2  # jaw about +z moves vertex 2 (1,0,0)
    v = model(joint_rotations=rot).vertices[0]
    # vertex 2 is 50% root (stays at (1,0,0)) and 50% jaw (goes to (0,1,0))
    assert (v[2] - torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)).abs().max() < 1e-12


def test_chain_composes_parent_and_child_rotations():
    model = toy_model()
    rot = torch.zeros(1, 3, 3, dtype=torch.float64)
    rot[0, 1, 0] = math.pi / 2
    rot[0, 2, 1] = math.pi / 2  # tip about its local +y after the jaw turned
    v = model(joint_rotations=rot).vertices[0]
    tip_rest = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    r_jaw = torch.from_numpy(Rotation.from_rotvec([math.pi / 2, 0, 0]).as_matrix())
    r_tip = torch.from_numpy(Rotation.from_rotvec([0, math.pi / 2, 0]).as_matrix())
    joint_tip = r_jaw @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    expected = r_jaw @ r_tip @ (tip_rest - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) + joint_tip
    assert (v[3] - expected).abs().max() < 1e-12


def test_pose_correctives_follow_smpl_formula():
    model = toy_model(correctives=True)
    gen = torch.Generator().manual_seed(3)
    rotvec = 0.4 * torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    out = model(joint_rotations=rotvec)
    # independent numpy version: feature = (R_j - I) for j >= 1, row-major
    for b in range(2):
        mats = Rotation.from_rotvec(rotvec[b].numpy()).as_matrix()
        feature = (mats[1:] - np.eye(3)).reshape(-1)
        shaped = model.template.numpy() + np.einsum("p,pvc->vc", feature, model.pose_correctives.numpy())
        world = [mats[0]]
        world.append(world[0] @ mats[1])
        world.append(world[1] @ mats[2])
        joints = model.rest_joints.numpy()
        posed_j = [joints[0]]
        posed_j.append(posed_j[0] + world[0] @ (joints[1] - joints[0]))
        posed_j.append(posed_j[1] + world[1] @ (joints[2] - joints[1]))
        expected = np.zeros((4, 3))
        for j in range(3):
            rigid = (shaped - joints[j]) @ world[j].T + posed_j[j]
            expected += model.lbs_weights.numpy()[:, j:j + 1] * rigid
        assert np.abs(out.vertices[b].numpy() - expected).max() < 1e-12


def test_world_from_head_and_blendshapes():
    model = toy_model()
    gen = torch.Generator().manual_seed(4)
    ident = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    expr = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    transform = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    transform[:, :3, :3] = torch.from_numpy(Rotation.random(3, random_state=5).as_matrix())
    transform[:, :3, 3] = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    out = model(identity=ident, expression=expr, world_from_head=transform)
    rest = model.template + torch.einsum("bi,ivc->bvc", ident, model.identity_basis) + torch.einsum(
        "be,evc->bvc", expr, model.expression_basis)
    expected = rest @ transform[:, :3, :3].transpose(1, 2) + transform[:, None, :3, 3]
    assert (out.vertices - expected).abs().max() < 1e-12
    partial = model(identity=ident[:, :1])  # trailing identity modes default to zero
    assert (partial.vertices - (model.template + ident[:, 0, None, None] * model.identity_basis[0])).abs().max() < 1e-12


def test_joint_regressor_path_matches_rest_joint_path():
    a, b = toy_model(), toy_model(regressor=True)
    rot = 0.3 * torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out_a, out_b = a(joint_rotations=rot), b(joint_rotations=rot)
    assert (out_a.vertices - out_b.vertices).abs().max() < 1e-12
    assert (out_a.joints - out_b.joints).abs().max() < 1e-12


def test_forward_gradcheck_all_inputs():
    model = toy_model(correctives=True)
    gen = torch.Generator().manual_seed(7)
    ident = torch.randn(2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    expr = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    rot = 0.5 * torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    rot[0, 1] = 0.0  # the zero rotation must have a finite, correct gradient too
    rot.requires_grad_(True)
    transform = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    transform[:, :3, 3] = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    transform.requires_grad_(True)

    def fn(i, e, r, t):
        out = model(identity=i, expression=e, joint_rotations=r, world_from_head=t)
        return out.vertices, out.joints

    assert torch.autograd.gradcheck(fn, (ident, expr, rot, transform), eps=1e-6, atol=1e-8)


def test_joint_transforms_identity_pose_is_identity():
    joints = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.zeros(2, 3, 3, dtype=torch.float64))
    posed, transforms = joint_transforms(rot, joints, torch.tensor([-1, 0, 1]))
    assert (posed - joints).abs().max() < 1e-15
    assert (transforms - torch.eye(4, dtype=torch.float64)).abs().max() < 1e-15
    assert pose_feature(rot).abs().max() == 0
    verts = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out, _ = lbs(verts, torch.zeros(2, 3, 3, dtype=torch.float64), joints, torch.tensor([-1, 0, 1]),
                 torch.full((5, 3), 1 / 3, dtype=torch.float64))
    assert (out - verts).abs().max() < 1e-15


def test_save_load_npz_round_trip(tmp_path):
    model = toy_model(correctives=True)
    path = tmp_path / "toy.npz"
    model.save_npz(path)
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert "template" in data.files
    back = HeadModel.load_npz(path, dtype=torch.float64)
    for name in ("template", "faces", "identity_basis", "expression_basis", "parents", "rest_joints",
                 "lbs_weights", "pose_correctives", "landmark_ids", "joint_identity_basis"):
        assert torch.equal(getattr(model, name), getattr(back, name)), name
    assert back.expression_names == model.expression_names and back.joint_names == model.joint_names
    assert torch.equal(back.region_masks["face"], model.region_masks["face"])
    assert (back.name, back.licence, back.landmark_convention) == ("toy", "test", "ibug68")
    assert back.uvs is None and back.joint_regressor is None
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    via_spec = load_head_model(f"npz:{path}", dtype=torch.float64)
    rot = 0.2 * torch.ones(1, 3, 3, dtype=torch.float64)
    assert torch.equal(via_spec(joint_rotations=rot).vertices, model(joint_rotations=rot).vertices)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "not a readable .npz"),   # truncated archive: was a zipfile traceback
    (lambda data: b"root:x:0:0" + data, "not an .npz archive"),     # numpy would call it "pickled data"
])
def test_load_npz_of_a_damaged_file_names_the_file(tmp_path, damage, message):
    path = tmp_path / "toy.npz"
    toy_model().save_npz(path)
    path.write_bytes(damage(path.read_bytes()))
    for load in (lambda: HeadModel.load_npz(path), lambda: load_head_model(f"npz:{path}")):
        with pytest.raises(ValueError, match=rf"{path}: field '<file>': {message}"):
            load()


def test_to_casts_floats_and_keeps_indices():
    model = toy_model().to(dtype=torch.float32)
    assert model.template.dtype == torch.float32 and model.lbs_weights.dtype == torch.float32
    assert model.faces.dtype == torch.long and model.region_masks["face"].dtype == torch.bool
    out = model(expression=torch.ones(1, 3, dtype=torch.float64))
    assert out.vertices.dtype == torch.float32


@pytest.mark.parametrize(
    "change, field",
    [
        ({"template": torch.zeros(4, 2, dtype=torch.float64)}, "template"),
        ({"faces": torch.tensor([[0, 1, 9]])}, "faces"),
        ({"expression_names": ["a", "b"]}, "expression_names"),
        ({"parents": torch.tensor([-1, 2, 1])}, "parents"),
        ({"lbs_weights": torch.full((4, 3), 0.5, dtype=torch.float64)}, "lbs_weights"),
        ({"landmark_ids": torch.tensor([7])}, "landmark_ids"),
        ({"region_masks": {"face": torch.ones(3, dtype=torch.bool)}}, "region_masks"),
        ({"pose_correctives": torch.zeros(9, 4, 3, dtype=torch.float64)}, "pose_correctives"),
    ],
)
def test_invalid_fields_raise_value_error_naming_the_field(change, field):
    from dataclasses import asdict

    kwargs = {f: getattr(toy_model(), f) for f in asdict(toy_model()).keys()}
    kwargs.update(change)
    with pytest.raises(ValueError, match=field):
        HeadModel(**kwargs)


def test_forward_argument_errors():
    model = toy_model()
    with pytest.raises(ValueError, match="batch size"):
        model(identity=torch.zeros(2, 2, dtype=torch.float64), expression=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="identity"):
        model(identity=torch.zeros(1, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="joint_rotations"):
        model(joint_rotations=torch.zeros(1, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expression"):
        model.expression_index("smile")


def test_head_model_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        load_head_model("smpl:/x")
    with pytest.raises(ValueError, match="expected"):
        load_head_model("ict")
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ValueError, match="format"):
        load_head_model(f"npz:{bad}")
