"""What speaks: a head model (spec), an exported .glb (its morph targets), or a Gaussian avatar
folder (avatar/gaussian_avatar.py), posed per frame from ARKit-named expression curves and small
head rotations, and drawn into a fixed camera in front of the face.

Meshes are drawn with reconstruct.rasterize_mesh.rasterize (its C++ z-buffer; per-vertex Lambert
light interpolated with its barycentrics light, per-region colours:
skin, teeth, tongue, eyes when the model names those regions); a Gaussian avatar with its own
rasteriser. Head rotation turns the model's `head` joint when it has one, else the whole head
about its centre.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Puppet", "load_puppet", "face_camera", "render_frames"]

_SKIN = (0.80, 0.62, 0.52)
_REGION_COLOURS = {"teeth": (0.92, 0.90, 0.84), "tongue": (0.72, 0.33, 0.35), "eyes": (0.93, 0.93, 0.93)}


def _axis_angle_matrix(rotvec: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvec).as_matrix()


@dataclass
class Puppet:
    """Geometry that moves with named expressions: vertices(expression [T, Ne], head_rot [T, 3])."""

    kind: str  # "model" | "glb" | "gaussian"
    expression_names: list[str]
    faces: np.ndarray  # [F, 3]
    colours: np.ndarray  # [V, 3]
    rest: np.ndarray  # [V, 3] neutral vertices (head frame, metres)
    basis: np.ndarray  # [Ne, V, 3]
    model: object = None  # HeadModel (kind model / gaussian)
    avatar: object = None  # GaussianAvatar
    glb_path: Path | None = None

    def vertices(self, expression: np.ndarray, head_rot: np.ndarray) -> np.ndarray:
        """[T, V, 3] head-frame vertices."""
        expression = np.asarray(expression, dtype=np.float64)
        if self.model is not None:
            model = self.model
            ident = None
            if self.avatar is not None:
                ident = self.avatar.identity[None].double().expand(len(expression), -1)
            rot = None
            if "head" in model.joint_names:
                rot = torch.zeros(len(expression), model.num_joints, 3, dtype=torch.float64)
                rot[:, model.joint_names.index("head")] = torch.from_numpy(head_rot)
            with torch.no_grad():
                out = model.to(dtype=torch.float64).forward(identity=ident, expression=torch.from_numpy(expression),
                                                            joint_rotations=rot).vertices.numpy()
            if rot is not None:
                return out
        else:
            out = self.rest[None] + np.einsum("te,evc->tvc", expression, self.basis)
        centre = self.rest.mean(axis=0)
        mats = np.stack([_axis_angle_matrix(r) for r in head_rot])
        return np.einsum("tij,tvj->tvi", mats, out - centre) + centre


def _region_colours(model) -> np.ndarray:
    colours = np.tile(np.array(_SKIN), (model.num_vertices, 1))
    for region, colour in _REGION_COLOURS.items():
        for name, mask in model.region_masks.items():
            if name == region or name.startswith(region.rstrip("s") + "_") or name.startswith(region[:-1] + "ball"):
                colours[mask.numpy().astype(bool)] = colour
    return colours


def _from_model(model, kind: str = "model", avatar=None) -> Puppet:
    m = model.to(dtype=torch.float64)
    rest = m.forward(identity=None if avatar is None else avatar.identity[None].double()).vertices[0].detach().numpy()
    return Puppet(kind, list(model.expression_names), model.faces.numpy().astype(np.int64), _region_colours(model),
                  rest, m.expression_basis.detach().numpy(), model=model, avatar=avatar)


def _from_glb(path: Path) -> Puppet:
    from headcap.avatar.export.glb import read_accessor, read_glb

    doc, binary = read_glb(path)
    meshes = doc.get("meshes") or []
    if not meshes or not meshes[0].get("primitives"):
        raise ValueError(f"{path}: field 'meshes' holds no mesh primitive")
    mesh = meshes[0]
    prim = mesh["primitives"][0]
    if prim.get("mode", 4) != 4 or "indices" not in prim:
        raise ValueError(f"{path}: field 'meshes[0].primitives[0]' is not an indexed triangle mesh (splats are drawn "
                         "from the avatar folder, not the .glb)")
    rest = read_accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    faces = read_accessor(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.int64)
    names = list((mesh.get("extras") or {}).get("targetNames") or [])
    targets = prim.get("targets") or []
    if len(names) != len(targets):
        raise ValueError(f"{path}: field 'meshes[0].extras.targetNames' names {len(names)} targets, the primitive has "
                         f"{len(targets)}")
    basis = np.stack([read_accessor(doc, binary, t["POSITION"]) for t in targets]) if targets else np.zeros((0, *rest.shape))
    return Puppet("glb", names, faces, np.tile(np.array(_SKIN), (len(rest), 1)), rest, basis.astype(np.float64),
                  glb_path=path)


def load_puppet(spec: str) -> Puppet:
    """A head model spec ("default", "ict:PATH", ...), a .glb written by `headcap export`, or a
    folder holding a Gaussian avatar (avatar.json)."""
    path = Path(spec)
    if spec.lower().endswith(".glb"):
        if not path.is_file():
            raise ValueError(f"{path}: no such .glb")
        return _from_glb(path)
    if path.is_dir():
        if not ((path / "avatar.json").is_file() or (path / "train" / "avatar.json").is_file()):
            raise ValueError(f"{path}: a folder AVATAR must hold a Gaussian avatar (avatar.json)")
        from headcap.avatar.gaussian_avatar import load_avatar

        avatar = load_avatar(path)
        return _from_model(avatar.model, "gaussian", avatar)
    from headcap.reconstruct.head_loaders import load_head_model

    return _from_model(load_head_model(spec))


def face_camera(rest: np.ndarray, size: int = 256, fov_deg: float = 20.0):
    """A pinhole camera on the +z axis (the face side), looking at the lower face: the mouth
    centred, the face filling the frame."""
    from headcap.calib.camera import Camera

    lo, hi = np.percentile(rest, 2, axis=0), np.percentile(rest, 98, axis=0)
    centre = np.array([(lo[0] + hi[0]) / 2, lo[1] + 0.42 * (hi[1] - lo[1]), hi[2]])
    extent = 0.85 * (hi[1] - lo[1])
    f = size / (2 * np.tan(np.radians(fov_deg) / 2))
    dist = extent / 2 / np.tan(np.radians(fov_deg) / 2) + 0.0
    eye = centre + np.array([0.0, 0.0, dist])
    rot = np.diag([1.0, -1.0, -1.0])  # OpenCV camera looking down -z of the head frame, y down
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = rot
    cam_from_world[:3, 3] = -rot @ eye
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return Camera("speak", size, size, K, cam_from_world=cam_from_world)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a batch [T, V, 3] (one sparse vertex-face product)."""
    from scipy.sparse import csr_matrix

    t, v = verts.shape[:2]
    f = len(faces)
    incidence = csr_matrix((np.ones(3 * f), (faces.reshape(-1), np.repeat(np.arange(f), 3))), shape=(v, f))
    tri = verts[:, faces]  # [T, F, 3, 3]
    fn = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # [T, F, 3]
    out = (incidence @ fn.transpose(1, 0, 2).reshape(f, -1)).reshape(v, t, 3).transpose(1, 0, 2)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def render_frames(puppet: Puppet, expression: np.ndarray, head_rot: np.ndarray, size: int = 256,
                  chunk: int = 32):
    """Yield RGB uint8 [size, size, 3] frames (expression over puppet.expression_names)."""
    from headcap.reconstruct.rasterize_mesh import rasterize

    camera = face_camera(puppet.rest, size)
    faces_np = puppet.faces
    faces = torch.from_numpy(faces_np)
    light = np.array([0.25, 0.35, 1.0]) / np.linalg.norm([0.25, 0.35, 1.0])
    bg = torch.tensor([0.16, 0.17, 0.2], dtype=torch.float32)
    rot, trans = camera.cam_from_world[:3, :3], camera.cam_from_world[:3, 3]
    for s in range(0, len(expression), chunk):
        verts = puppet.vertices(expression[s:s + chunk], head_rot[s:s + chunk])  # [t, V, 3]
        if puppet.avatar is None:
            cam = verts @ rot.T + trans
            screen = np.concatenate([cam[..., :2] / cam[..., 2:3] * np.diag(camera.K)[:2] + camera.K[:2, 2],
                                     cam[..., 2:3]], axis=-1)
            # Gouraud: per-vertex Lambert light, interpolated with the rasteriser's barycentrics
            lit = puppet.colours[None] * (0.3 + 0.7 * np.clip(_vertex_normals(verts, faces_np) @ light, 0, None))[..., None]
            lit = torch.from_numpy(lit.astype(np.float32))
        for j, v in enumerate(verts):
            if puppet.avatar is not None:
                out = puppet.avatar.render(torch.from_numpy(v).float(), camera, background=bg)
                rgb = out.rgb.detach().float()
            else:
                frags = rasterize(torch.from_numpy(screen[j]), faces, size, size)
                hit = frags.triangle_id >= 0
                corners = faces[frags.triangle_id.clamp(min=0)]  # [H, W, 3]
                rgb = (lit[j][corners] * frags.bary.float()[..., None]).sum(dim=-2)
                rgb = torch.where(hit[..., None], rgb, bg)
            yield (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
