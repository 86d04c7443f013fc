"""ICT-FaceKit "Face Model Light" (MIT, USC ICT) -> HeadModel.

Two inputs give the same model: the packed npz of ../shared/data/ict_facekit (see its
SOURCE.md) or the upstream `FaceXModel/` folder of OBJs. ICT's axes already match the head
frame (+x subject's left, +y up, +z forward); only centimetres become metres.

Expression names become ARKit names (`browDown_L` -> `browDownLeft`); ICT's `_L` is the
subject's left, as ARKit's `Left` is. ICT splits two ARKit shapes per side
(`browInnerUpLeft/Right`, `cheekPuffLeft/Right`: their sum is ARKit's `browInnerUp` /
`cheekPuff`), has no `tongueOut`, and adds `cheekRaiserLeft/Right` and `pupilDilateLeft/Right`.

Joints: `head` (root, at the origin), `eye_left`, `eye_right` at the sclera sphere centres,
with the eyeballs rigidly skinned to them: gaze by rotation, an alternative to the `eyeLook*`
blendshapes (do not drive both).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from headcap.core.fileio import read_npz
from headcap.reconstruct.head_loaders._obj import read_obj, read_obj_vertices, triangulate, triangulate_padded
from headcap.reconstruct.head_model import HeadModel

__all__ = ["load_ict_facekit", "ict_to_arkit_name", "ICT_EXPRESSIONS", "ICT_REGIONS"]

CM_TO_M = 0.01
LICENCE = (
    "ICT-FaceKit Face Model Light, Copyright (c) 2020 USC Institute for Creative Technologies, "
    "MIT License (https://github.com/ICT-VGL/ICT-FaceKit)"
)

# Upstream order (vertex_indices.json "expressions") followed by the four extra shapes.
ICT_EXPRESSIONS = (
    "browDown_L browDown_R browInnerUp_L browInnerUp_R browOuterUp_L browOuterUp_R cheekPuff_L "
    "cheekPuff_R cheekSquint_L cheekSquint_R eyeBlink_L eyeBlink_R eyeLookDown_L eyeLookDown_R "
    "eyeLookIn_L eyeLookIn_R eyeLookOut_L eyeLookOut_R eyeLookUp_L eyeLookUp_R eyeSquint_L "
    "eyeSquint_R eyeWide_L eyeWide_R jawForward jawLeft jawOpen jawRight mouthClose mouthDimple_L "
    "mouthDimple_R mouthFrown_L mouthFrown_R mouthFunnel mouthLeft mouthLowerDown_L "
    "mouthLowerDown_R mouthPress_L mouthPress_R mouthPucker mouthRight mouthRollLower "
    "mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmile_L mouthSmile_R mouthStretch_L "
    "mouthStretch_R mouthUpperUp_L mouthUpperUp_R noseSneer_L noseSneer_R cheekRaiser_L "
    "cheekRaiser_R PupilDilate_L PupilDilate_R"
).split()

# Vertex ranges [start, stop) from the upstream README topology tables.
ICT_REGIONS = {
    "face": (0, 9409),
    "narrow_face": (0, 6706),
    "head_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678),
    "eye_socket_right": (13678, 14062),
    "gums_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
    "lacrimal_fluid": (24591, 24999),
    "eye_blend": (24999, 25047),
    "eye_occlusion": (25047, 25351),
    "eyelashes": (25351, 26719),
}
_SCLERA = {"eye_left": (21451, 22221), "eye_right": (23021, 23791)}
ICT_NUM_VERTICES = 26719
# Multi-PIE 68 (= iBUG 68 order), upstream README / vertex_indices.json.
ICT_LANDMARKS_68 = [
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088,
    3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140,
    2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725,
    3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533,
    6216, 6207, 6470, 5517, 5966,
]


def ict_to_arkit_name(name: str) -> str:
    """`browDown_L` -> `browDownLeft`, `PupilDilate_R` -> `pupilDilateRight`."""
    stem = name[0].lower() + name[1:]
    if stem.endswith("_L"):
        return stem[:-2] + "Left"
    if stem.endswith("_R"):
        return stem[:-2] + "Right"
    return stem


def load_ict_facekit(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> HeadModel:
    """ICT-FaceKit from `ict_facekit_light_model.npz` or an upstream OBJ folder.

    The folder needs `generic_neutral_mesh.obj`; every `<expression>.obj` and `identityNNN.obj`
    present is used (the upstream FaceXModel folder has all 57 + 100), in upstream order.
    """
    path = Path(path)
    if path.is_dir():
        raw = _read_folder(path)
    elif path.suffix == ".npz":
        raw = _read_npz(path)
    else:
        raise ValueError(f"{path}: expected the ICT-FaceKit npz or its OBJ folder")
    return _build(raw, dtype, source=path)


def _read_npz(path: Path) -> dict:
    data = read_npz(path)
    required = ("neutral_vertices", "faces", "uvs", "face_uvs", "expression_names",
                "expression_deltas", "identity_deltas", "landmarks_multipie68")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}; is this the ICT-FaceKit npz?")
    neutral = data["neutral_vertices"].astype(np.float64)
    faces, source = triangulate_padded(data["faces"].astype(np.int64))
    face_uvs_poly = data["face_uvs"].astype(np.int64)
    face_uvs, _ = triangulate_padded(face_uvs_poly)
    return {
        "neutral": neutral,
        "faces": faces,
        "uvs": data["uvs"].astype(np.float64),
        "face_uvs": face_uvs,
        "expression_names": [str(n) for n in data["expression_names"]],
        "expression_deltas": data["expression_deltas"],
        "identity_deltas": data["identity_deltas"],
        "landmarks": data["landmarks_multipie68"].astype(np.int64),
    }


def _read_folder(folder: Path) -> dict:
    neutral_path = folder / "generic_neutral_mesh.obj"
    if not neutral_path.is_file():
        raise ValueError(f"{folder}: no generic_neutral_mesh.obj; not an ICT-FaceKit FaceXModel folder")
    mesh = read_obj(neutral_path)
    if len(mesh.vertices) != ICT_NUM_VERTICES:
        raise ValueError(f"{neutral_path}: {len(mesh.vertices)} vertices, ICT-FaceKit has {ICT_NUM_VERTICES}")
    if any(uv is None for uv in mesh.polygon_uvs):
        raise ValueError(f"{neutral_path}: every face needs uv indices")
    faces, _ = triangulate(mesh.polygons)
    face_uvs, _ = triangulate(mesh.polygon_uvs)
    neutral = mesh.vertices

    def deltas(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), ICT_NUM_VERTICES, 3), dtype=np.float32)
        for k, name in enumerate(names):
            verts = read_obj_vertices(folder / f"{name}.obj")
            if verts.shape != neutral.shape:
                raise ValueError(f"{folder / (name + '.obj')}: {len(verts)} vertices, expected {len(neutral)}")
            out[k] = verts - neutral
        return out

    expressions = [n for n in ICT_EXPRESSIONS if (folder / f"{n}.obj").is_file()]
    identities = sorted(p.stem for p in folder.glob("identity*.obj") if re.fullmatch(r"identity\d{3}", p.stem))
    landmarks = np.array(ICT_LANDMARKS_68, dtype=np.int64)
    index_file = folder / "vertex_indices.json"
    if index_file.is_file():
        try:
            landmarks = np.array(json.loads(index_file.read_text())["idx_to_landmark_verts"], dtype=np.int64)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{index_file}: field 'idx_to_landmark_verts' unreadable ({exc})") from exc
    return {
        "neutral": neutral,
        "faces": faces,
        "uvs": mesh.uvs,
        "face_uvs": face_uvs,
        "expression_names": expressions,
        "expression_deltas": deltas(expressions),
        "identity_deltas": deltas(identities),
        "landmarks": landmarks,
    }


def _sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre of [N, 3] points (algebraic fit)."""
    design = np.concatenate([2.0 * points, np.ones((len(points), 1))], axis=1)
    solution = np.linalg.lstsq(design, (points**2).sum(1), rcond=None)[0]
    return solution[:3]


def _build(raw: dict, dtype: torch.dtype, source: Path) -> HeadModel:
    neutral = raw["neutral"]
    if neutral.shape != (ICT_NUM_VERTICES, 3):
        raise ValueError(f"{source}: neutral_vertices has shape {neutral.shape}, expected ({ICT_NUM_VERTICES}, 3)")
    identity = raw["identity_deltas"].astype(np.float64)
    expression = raw["expression_deltas"].astype(np.float64)

    # Eye joints follow identity: the sphere centre of each identity's sclera, relative to the
    # neutral one (the fit is not linear, so this is its secant at coefficient 1).
    joint_names = ["head", "eye_left", "eye_right"]
    rest = np.zeros((3, 3))
    joint_identity = np.zeros((len(identity), 3, 3))
    for j, name in enumerate(joint_names[1:], start=1):
        lo, hi = _SCLERA[name]
        rest[j] = _sphere_centre(neutral[lo:hi])
        for i in range(len(identity)):
            joint_identity[i, j] = _sphere_centre(neutral[lo:hi] + identity[i, lo:hi]) - rest[j]
    weights = np.zeros((ICT_NUM_VERTICES, 3))
    weights[:, 0] = 1.0
    for j, region in ((1, "eyeball_left"), (2, "eyeball_right")):
        lo, hi = ICT_REGIONS[region]
        weights[lo:hi, 0] = 0.0
        weights[lo:hi, j] = 1.0

    masks = {}
    for name, (lo, hi) in ICT_REGIONS.items():
        mask = torch.zeros(ICT_NUM_VERTICES, dtype=torch.bool)
        mask[lo:hi] = True
        masks[name] = mask
    masks["eyes"] = masks["eyeball_left"] | masks["eyeball_right"]
    masks["skin"] = masks["face"] | masks["head_neck"]

    def tensor(array: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64) * scale).to(dtype)

    return HeadModel(
        name="ict_facekit",
        template=tensor(neutral, CM_TO_M),
        faces=torch.from_numpy(raw["faces"]),
        uvs=tensor(raw["uvs"]),
        face_uvs=torch.from_numpy(raw["face_uvs"]),
        identity_basis=tensor(identity, CM_TO_M),
        expression_basis=tensor(expression, CM_TO_M),
        expression_names=[ict_to_arkit_name(n) for n in raw["expression_names"]],
        joint_names=joint_names,
        parents=torch.tensor([-1, 0, 0], dtype=torch.long),
        rest_joints=tensor(rest, CM_TO_M),
        joint_identity_basis=tensor(joint_identity, CM_TO_M),
        lbs_weights=tensor(weights),
        landmark_ids=torch.from_numpy(np.asarray(raw["landmarks"], dtype=np.int64)),
        landmark_convention="ibug68",
        region_masks=masks,
        licence=LICENCE,
    )
