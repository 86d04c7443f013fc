"""Draw docs/img/export_head.png: a synthetic session, `headcap export --format glb`, and the
exported file read back and rendered with headcap's mesh rasterizer.

    python docs/scripts/export_preview.py docs/img/export_head.png

Rows: two cameras. Columns: the recorded image of frame 2 | the .glb's animation clip at frame 2
with the texture baked from frame 0 | the same file at rest with jawOpen = 1 and eyeBlinkLeft = 1.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch


def main(out: str) -> None:
    from headcap.avatar.export.glb import read_accessor, read_glb
    from headcap.avatar.export.gltf_eval import evaluate_mesh_nodes, target_names
    from headcap.capture.session import read_session
    from headcap.cli import main as cli
    from headcap.reconstruct.rasterize_mesh import render_mesh
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize_session(StudioConfig(cameras=8, frames=3, resolution=256, calib_frames=2, seed=2), tmp / "session")
        assert cli(["export", str(tmp / "session"), "--format", "glb", "--out", str(tmp / "head.glb")]) == 0
        doc, binary = read_glb(tmp / "head.glb")
        session = read_session(tmp / "session")
        rig = session.load_rig()
        prim = doc["meshes"][0]["primitives"][0]
        uvs = read_accessor(doc, binary, prim["attributes"]["TEXCOORD_0"])
        faces = torch.from_numpy(read_accessor(doc, binary, prim["indices"]).astype(np.int64).reshape(-1, 3))
        view = doc["bufferViews"][doc["images"][0]["bufferView"]]
        png = np.frombuffer(binary[view["byteOffset"]: view["byteOffset"] + view["byteLength"]], np.uint8)
        texture = torch.from_numpy(cv2.imdecode(png, cv2.IMREAD_COLOR)[..., ::-1].copy()).double() / 255
        uv_obj = torch.from_numpy(np.stack([uvs[:, 0], 1 - uvs[:, 1]], 1))
        animated = evaluate_mesh_nodes(doc, binary, animation=0, key=2)[0]
        names = target_names(doc)
        doc["nodes"][0]["weights"] = [1.0 if n in ("jawOpen", "eyeBlinkLeft") else 0.0 for n in names]
        # the file's own node TRS are frame 0 of the clip; evaluate the morph at the frame-0 pose
        expressive = evaluate_mesh_nodes(doc, binary)[0]
        rows = []
        for cam in (session.cameras[0], session.cameras[3]):
            camera = rig[cam]
            recorded = cv2.imread(str(session.image_path(2, cam)))[..., ::-1]
            tiles = [recorded]
            for verts in (animated, expressive):
                out_ = render_mesh(torch.from_numpy(verts), faces, camera, uvs=uv_obj, face_uvs=faces, texture=texture)
                tiles.append(np.round(out_["rgb"].numpy() * 255).astype(np.uint8))
            rows.append(np.concatenate(tiles, 1))
        cv2.imwrite(out, np.concatenate(rows, 0)[..., ::-1])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/export_head.png")
