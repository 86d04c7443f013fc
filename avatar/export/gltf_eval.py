"""Evaluate a glTF file's meshes the way the glTF 2.0 specification defines it (numpy, float64):
morph targets, then skinning (sum_i w_i * global(joint_i) @ inverseBind_i), node hierarchy,
with an animation's channels applied at one of its keyframes. The readback tests compare this
with HeadModel.forward; it is a specification-level reader, independent of the writer's code.
"""
from __future__ import annotations

import numpy as np

from headcap.avatar.export.glb import read_accessor

__all__ = ["evaluate_mesh_nodes", "quat_to_matrix", "target_names"]


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """[..., 4] (x, y, z, w) -> [..., 3, 3]."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def target_names(doc: dict, mesh: int = 0) -> list[str]:
    return list(doc["meshes"][mesh].get("extras", {}).get("targetNames", []))


def _local(node: dict, override: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    t = np.asarray(override.get("translation", node.get("translation", [0, 0, 0])), dtype=np.float64)
    r = np.asarray(override.get("rotation", node.get("rotation", [0, 0, 0, 1])), dtype=np.float64)
    s = np.asarray(override.get("scale", node.get("scale", [1, 1, 1])), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = quat_to_matrix(r) * s[None, :]
    out[:3, 3] = t
    return out


def _animated(doc: dict, binary: bytes, animation: int | None, key: int) -> dict[int, dict]:
    values: dict[int, dict] = {}
    if animation is None:
        return values
    anim = doc["animations"][animation]
    for channel in anim["channels"]:
        sampler = anim["samplers"][channel["sampler"]]
        count = doc["accessors"][sampler["input"]]["count"]
        out = read_accessor(doc, binary, sampler["output"])
        node, path = channel["target"]["node"], channel["target"]["path"]
        if path == "weights":
            value = out.reshape(count, -1)[key]
        else:
            value = out[key]
        values.setdefault(node, {})[path] = value
    return values


def evaluate_mesh_nodes(doc: dict, binary: bytes, *, animation: int | None = None,
                        key: int = 0) -> dict[int, np.ndarray]:
    """World-space vertices [V, 3] of every mesh node (first primitive), by node index.

    animation/key: apply that animation's channels at keyframe `key` (the k-th input time);
    None evaluates the nodes' own TRS and weights.
    """
    anim = _animated(doc, binary, animation, key)
    nodes = doc["nodes"]
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    world: dict[int, np.ndarray] = {}

    def global_of(i: int) -> np.ndarray:
        if i not in world:
            local = _local(nodes[i], anim.get(i, {}))
            world[i] = global_of(parent[i]) @ local if i in parent else local
        return world[i]

    result = {}
    for i, node in enumerate(nodes):
        if "mesh" not in node:
            continue
        mesh = doc["meshes"][node["mesh"]]
        prim = mesh["primitives"][0]
        verts = read_accessor(doc, binary, prim["attributes"]["POSITION"])
        weights = anim.get(i, {}).get("weights", node.get("weights", mesh.get("weights")))
        for w, target in zip(weights if weights is not None else [], prim.get("targets", [])):
            if w != 0.0 and "POSITION" in target:
                verts = verts + w * read_accessor(doc, binary, target["POSITION"])
        homo = np.concatenate([verts, np.ones((len(verts), 1))], 1)
        if "skin" in node:
            skin = doc["skins"][node["skin"]]
            ibm = read_accessor(doc, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
            mats = np.stack([global_of(j) @ ibm[k] for k, j in enumerate(skin["joints"])])
            blended = np.zeros((len(verts), 4, 4))
            n = 0
            while f"JOINTS_{n}" in prim["attributes"]:
                joints = read_accessor(doc, binary, prim["attributes"][f"JOINTS_{n}"]).astype(np.int64)
                w = read_accessor(doc, binary, prim["attributes"][f"WEIGHTS_{n}"])
                blended += np.einsum("vk,vkrc->vrc", w, mats[joints])
                n += 1
            out = np.einsum("vrc,vc->vr", blended, homo)[:, :3]
        else:
            out = (homo @ global_of(i).T)[:, :3]
        result[i] = out
    return result
