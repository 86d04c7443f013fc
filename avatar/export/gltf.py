"""Head mesh to glTF 2.0 (.glb): morph targets named after the model's expressions (ARKit names
for the default head and ICT-FaceKit; for FLAME, the 52 ARKit targets of a fitted map,
avatar.export.arkit_map, when one is given), a skeleton with linear blend skinning, UVs and a
texture, and a tracked sequence as one animation clip.

glTF's frame is the head frame (+Y up, +Z forward out of the face, +X the subject's left,
metres), so head-frame geometry is written unchanged. A glTF vertex is one (position, UV) pair:
model vertices on UV seams are split (`vertex_layout` gives the map back to model vertices).

How the file reproduces `HeadModel.forward` at every keyframe, in glTF's terms:
    morph:   base + sum_e weight_e * target_e       (identity baked into base; weights animated)
    skin:    joint j's node has translation rest_joint[j] - rest_joint[parent], rotation =
             the tracked axis-angle as a quaternion; inverse bind matrix = translate(-rest_joint[j]),
             so global(j) @ ibm(j) equals lbs.joint_transforms' transform for joint j
    world:   the skeleton root hangs under a node "world_from_head" animated with the rigid
             head pose (the skinned mesh node itself sits at the scene root, as glTF requires)
Pose correctives (FLAME) become extra morph targets `pose_corrective_NNN` whose animated weights
are the SMPL pose feature (R_j - I), so they are exact too. glTF cannot express joints that move
with expression (FLAME's joint regressor on the expressed mesh): joints come from the identity
shape, which is exact for ICT-FaceKit and the default head.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcap.avatar.export.glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GltfBuilder, write_glb_bytes
from headcap.avatar.export.sequence import HeadSequence, sequence_for_model

__all__ = ["MeshExport", "VertexLayout", "export_head_glb", "vertex_layout", "axis_angle_to_quat",
           "matrix_to_quat", "head_mesh_arrays"]

MAX_INFLUENCES = 8  # two JOINTS_n/WEIGHTS_n sets; three.js reads only the first (4 influences)


@dataclass
class VertexLayout:
    vertex_map: np.ndarray  # [Vg] model vertex of each glTF vertex
    uvs: np.ndarray | None  # [Vg, 2] glTF convention (origin top-left)
    indices: np.ndarray  # [F, 3] into glTF vertices


@dataclass
class MeshExport:
    path: Path
    vertices: int
    triangles: int
    morph_targets: list[str]
    joints: list[str]
    frames: int
    bytes: int
    dropped_skin_weight: float  # largest weight left out by the MAX_INFLUENCES limit (0 when none)
    arkit_residual_mm: float | None = None  # ARKit clip of a PCA model: largest vertex error of the
    # morph weights' fit to the tracked expression + baked joints, over frames (None: no such clip)


def vertex_layout(model) -> VertexLayout:
    """Split model vertices so each glTF vertex has one UV (deterministic: sorted by vertex, uv)."""
    faces = model.faces.cpu().numpy().astype(np.int64)
    if model.uvs is None:
        return VertexLayout(np.arange(model.num_vertices), None, faces)
    face_uvs = model.face_uvs.cpu().numpy().astype(np.int64)
    corners = np.stack([faces.reshape(-1), face_uvs.reshape(-1)], 1)
    pairs, inverse = np.unique(corners, axis=0, return_inverse=True)
    uvs = model.uvs.cpu().double().numpy()[pairs[:, 1]].copy()
    uvs[:, 1] = 1.0 - uvs[:, 1]
    return VertexLayout(pairs[:, 0], uvs, inverse.reshape(-1, 3))


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """[..., 3] axis-angle -> [..., 4] unit quaternions (x, y, z, w), glTF order."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * theta
    small = theta < 1e-8
    scale = np.where(small, 0.5 - theta ** 2 / 48.0, np.sin(half) / np.where(small, 1.0, theta))
    return np.concatenate([rotvec * scale, np.cos(half)], -1)


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices -> [..., 4] quaternions (x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    flat = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_quat().reshape(*np.shape(rot)[:-2], 4)


def _continuous(quats: np.ndarray) -> np.ndarray:
    """Flip signs along time so consecutive keys take the short way (slerp between keys)."""
    out = quats.copy()
    for t in range(1, len(out)):
        if np.dot(out[t], out[t - 1]) < 0:
            out[t] = -out[t]
    return out


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return normals


def head_mesh_arrays(model, identity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Shaped rest vertices [V, 3] and rest joints [J, 3] (None without joints), float64."""
    import torch

    ident = None
    if identity is not None and len(identity):
        k = min(len(identity), model.num_identity)
        ident = torch.as_tensor(np.asarray(identity[:k])[None], dtype=torch.float64)
    m64 = model.to(dtype=torch.float64)
    out = m64.forward(identity=ident)
    verts = out.vertices[0].numpy()
    joints = out.joints[0].numpy() if out.joints is not None else None
    return verts, joints


def _skin_arrays(weights: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """JOINTS_n / WEIGHTS_n sets (4 influences each) holding every nonzero LBS weight, up to
    MAX_INFLUENCES; float32 weights summing to 1 per vertex. Returns the sets and the largest
    weight left out (0 when none)."""
    nonzero = int((weights > 0).sum(1).max()) if weights.size else 0
    kept = max(4, min(MAX_INFLUENCES, 4 * -(-nonzero // 4)))
    order = np.argsort(-weights, axis=1, kind="stable")[:, :kept]
    top = np.take_along_axis(weights, order, 1)
    if top.shape[1] < kept:
        pad = kept - top.shape[1]
        order, top = np.pad(order, ((0, 0), (0, pad))), np.pad(top, ((0, 0), (0, pad)))
    dropped = float(np.sort(weights, axis=1)[:, :-kept].max()) if weights.shape[1] > kept else 0.0
    top = np.clip(top, 0.0, None)
    top = top / top.sum(1, keepdims=True)
    w32 = top.astype(np.float32)
    # float32 rounding: put the residual on the largest weight so each row sums to 1 in float32
    w32[:, 0] = np.float32(1.0) - w32[:, 1:].sum(1, dtype=np.float32)
    order = np.where(w32 > 0, order, 0)
    joint_dtype = np.uint8 if weights.shape[1] <= 256 else np.uint16
    sets = [(order[:, i:i + 4].astype(joint_dtype), w32[:, i:i + 4]) for i in range(0, kept, 4)]
    return sets, dropped


def _pose_feature(rotvecs: np.ndarray) -> np.ndarray:
    """[T, J, 3] axis-angle -> [T, 9 (J-1)] SMPL pose feature (R_j - I), joints 1..J-1."""
    from scipy.spatial.transform import Rotation

    t, j = rotvecs.shape[:2]
    mats = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_matrix().reshape(t, j, 3, 3)
    return (mats[:, 1:] - np.eye(3)).reshape(t, -1)


def _encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def export_head_glb(model, path: str | os.PathLike, *, sequence: HeadSequence | None = None,
                    identity: np.ndarray | None = None, texture: np.ndarray | None = None,
                    splats=None, name: str = "headcap_head", arkit_map=None) -> MeshExport:
    """Write the head model as a .glb (module docstring).

    model: a HeadModel; sequence: the tracked parameters (its identity is used unless `identity`
    is given), written as one animation clip "sequence" and posing the file at frame 0;
    texture: [H, W, 3|4] uint8 albedo in the model's UV layout (needs model.uvs).
    splats: an avatar.export.splat_rig.BoundSplats: write the Gaussians instead of the triangle
    mesh, as a KHR_gaussian_splatting POINTS primitive skinned and morphed like the vertex each
    Gaussian is bound to (docs/export.md says which viewers animate it).
    arkit_map: an avatar.export.arkit_map.ArkitMap fitted to this (PCA, e.g. FLAME) model: write the
    52 ARKit targets it defines instead of the PCA modes (the jaw / gaze shapes with their joint
    rotation baked into the offsets), and the sequence's expression + jaw / eye rotations as ARKit
    weights (bounded least squares; those joints stay at rest in the clip).
    """
    if identity is None and sequence is not None:
        identity = sequence.identity
    rest, joints = head_mesh_arrays(model, identity)
    builder = GltfBuilder()
    doc = builder.doc
    layout = None
    if splats is None:
        layout = vertex_layout(model)
        vmap = layout.vertex_map
        attributes = {
            "POSITION": builder.accessor(rest[vmap].astype(np.float32), target=ARRAY_BUFFER, min_max=True),
            "NORMAL": builder.accessor(_vertex_normals(rest, model.faces.cpu().numpy())[vmap].astype(np.float32),
                                       target=ARRAY_BUFFER),
        }
        if layout.uvs is not None:
            attributes["TEXCOORD_0"] = builder.accessor(layout.uvs.astype(np.float32), target=ARRAY_BUFFER)
    else:
        from headcap.avatar.export.splats import splat_attributes

        if texture is not None:
            raise ValueError("export_head_glb: a texture applies to the mesh, not to splats")
        vmap = splats.vertex_ids
        attributes = splat_attributes(builder, splats.canonical)
        doc["extensionsUsed"] = ["KHR_gaussian_splatting"]

    if arkit_map is None:
        target_names = list(model.expression_names)
        basis = model.expression_basis.detach().cpu().double().numpy()
    else:
        from headcap.avatar.export.arkit_map import arkit_targets

        target_names = list(arkit_map.names)
        basis = arkit_targets(model, arkit_map, identity)
    num_expression = len(target_names)
    targets = [{"POSITION": builder.accessor(basis[e][vmap].astype(np.float32), target=ARRAY_BUFFER, min_max=True)}
               for e in range(num_expression)]
    correctives = None
    if model.pose_correctives is not None and model.pose_correctives.shape[0] > 0:
        correctives = model.pose_correctives.detach().cpu().double().numpy()
        for p in range(correctives.shape[0]):
            targets.append({"POSITION": builder.accessor(correctives[p][vmap].astype(np.float32),
                                                         target=ARRAY_BUFFER, min_max=True)})
            target_names.append(f"pose_corrective_{p:03d}")

    dropped = 0.0
    has_skin = model.num_joints > 0
    if has_skin:
        sets, dropped = _skin_arrays(model.lbs_weights.detach().cpu().double().numpy()[vmap])
        for i, (joint_ids, weights) in enumerate(sets):
            attributes[f"JOINTS_{i}"] = builder.accessor(joint_ids, target=ARRAY_BUFFER)
            attributes[f"WEIGHTS_{i}"] = builder.accessor(weights, target=ARRAY_BUFFER)

    if splats is None:
        primitive = {"attributes": attributes, "mode": 4,
                     "indices": builder.accessor(layout.indices.reshape(-1).astype(np.uint32),
                                                 target=ELEMENT_ARRAY_BUFFER)}
        primitive["material"] = _add_material(builder, model, texture, layout)
    else:
        from headcap.avatar.export.splats import SPLAT_EXTENSION

        primitive = {"attributes": attributes, "mode": 0,
                     "extensions": {"KHR_gaussian_splatting": dict(SPLAT_EXTENSION)}}
    if targets:
        primitive["targets"] = targets
    mesh = {"name": name, "primitives": [primitive]}
    if targets:
        mesh["weights"] = [0.0] * len(targets)
        mesh["extras"] = {"targetNames": target_names}
    doc["meshes"] = [mesh]

    expression = rotations = None
    arkit_residual = None
    if sequence is not None:
        expression, rotations = sequence_for_model(sequence, model)
        if arkit_map is not None:
            from headcap.avatar.export.arkit_map import arkit_weights

            expression, rotations, worst = arkit_weights(model, arkit_map, expression, rotations, identity,
                                                         targets=basis)
            arkit_residual = float(1e3 * worst.max())

    nodes = [{"name": name, "mesh": 0}]
    world = {"name": "world_from_head", "children": []}
    if sequence is not None:
        pose = sequence.world_from_head[0]
        world["translation"] = [float(v) for v in pose[:3, 3]]
        world["rotation"] = [float(v) for v in matrix_to_quat(pose[:3, :3])]
    nodes.append(world)
    joint_nodes: list[int] = []
    if has_skin:
        parents = model.parents.tolist()
        for j, jname in enumerate(model.joint_names):
            offset = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0.0)
            node = {"name": jname, "translation": [float(v) for v in offset]}
            if rotations is not None:
                node["rotation"] = [float(v) for v in axis_angle_to_quat(rotations[0, j])]
            joint_nodes.append(len(nodes))
            nodes.append(node)
        for j, p in enumerate(parents):
            parent_node = nodes[joint_nodes[p]] if p >= 0 else world
            parent_node.setdefault("children", []).append(joint_nodes[j])
        ibm = np.tile(np.eye(4), (model.num_joints, 1, 1))
        ibm[:, :3, 3] = -joints
        # glTF matrices are column-major
        ibm_acc = builder.accessor(ibm.transpose(0, 2, 1).reshape(-1, 16).astype(np.float32), type_="MAT4")
        doc["skins"] = [{"name": "head_rig", "joints": joint_nodes, "inverseBindMatrices": ibm_acc,
                         "skeleton": joint_nodes[[i for i, p in enumerate(parents) if p < 0][0]]}]
        nodes[0]["skin"] = 0
        scene_nodes = [0, 1]
    else:
        world["children"].append(0)
        scene_nodes = [1]
    if targets:
        weights0 = np.zeros(len(targets))
        if expression is not None:
            weights0[:num_expression] = expression[0]
            if correctives is not None:
                weights0[num_expression:] = _pose_feature(rotations[:1])[0]
        nodes[0]["weights"] = [float(w) for w in weights0]
    if not world["children"]:
        del world["children"]
    doc["nodes"] = nodes
    doc["scenes"] = [{"name": name, "nodes": scene_nodes}]
    doc["scene"] = 0

    if sequence is not None:
        _add_animation(builder, sequence, expression, rotations, correctives is not None, joint_nodes,
                       len(targets), num_expression)

    data = builder.glb()
    write_glb_bytes(path, data)
    return MeshExport(Path(path), len(vmap), 0 if layout is None else len(layout.indices), target_names, list(model.joint_names),
                      0 if sequence is None else sequence.num_frames, len(data), dropped, arkit_residual)


def _add_material(builder: GltfBuilder, model, texture, layout: VertexLayout) -> int:
    doc = builder.doc
    material = {"name": "skin", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 0.8}}
    if texture is not None:
        if layout.uvs is None:
            raise ValueError(f"export_head_glb: a texture needs UVs, and head model {model.name!r} has none")
        image = builder.image(_encode_png(texture))
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
        doc["textures"] = [{"sampler": 0, "source": image}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
    else:
        material["pbrMetallicRoughness"]["baseColorFactor"] = [0.8, 0.62, 0.52, 1.0]
    doc["materials"] = [material]
    return 0


def _add_animation(builder: GltfBuilder, sequence: HeadSequence, expression: np.ndarray, rotations: np.ndarray,
                   with_correctives: bool, joint_nodes: list[int], num_targets: int, num_expression: int) -> None:
    times = sequence.timestamps - sequence.timestamps[0]
    time_acc = builder.accessor(times.astype(np.float32), min_max=True)
    samplers, channels = [], []

    def add(node: int, path: str, values: np.ndarray) -> None:
        samplers.append({"input": time_acc, "output": builder.accessor(values.astype(np.float32)),
                         "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    if num_targets:
        weights = np.zeros((sequence.num_frames, num_targets))
        weights[:, :num_expression] = expression
        if with_correctives:
            weights[:, num_expression:] = _pose_feature(rotations)
        add(0, "weights", weights.reshape(-1))
    for j, node in enumerate(joint_nodes):
        add(node, "rotation", _continuous(axis_angle_to_quat(rotations[:, j])))
    pose = sequence.world_from_head
    ortho = np.abs(pose[:, :3, :3] @ pose[:, :3, :3].transpose(0, 2, 1) - np.eye(3)).max()
    if ortho > 1e-4:
        raise ValueError(f"head sequence: world_from_head is not rigid (|R R^T - I| up to {ortho:.2g}); "
                         "glTF nodes take rotation + translation")
    add(1, "translation", pose[:, :3, 3])
    add(1, "rotation", _continuous(matrix_to_quat(pose[:, :3, :3])))
    builder.doc["animations"] = [{"name": "sequence", "samplers": samplers, "channels": channels}]
