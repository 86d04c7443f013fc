"""docs/img/avatar_heldout.png: a trained avatar on held-out views beside the ground truth.

Rows: held-out cameras at a training frame (novel view), then a held-out frame (self-
reenactment) in a held-out camera; columns: ground truth | render | error x4. Below: a turntable.

    python benchmarks/bm_avatar.py --minutes 20 --save /tmp/avatar_bm   # trains the avatar
    python docs/scripts/avatar_figure.py /tmp/avatar_bm --session /tmp/headcap_bm_avatar/ict16_256_30
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("avatar", type=Path)
    ap.add_argument("--session", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img" / "avatar_heldout.png")
    args = ap.parse_args()

    from headcap.avatar.avatar_data import frame_vertices, head_params_path, load_images, read_head_params
    from headcap.avatar.evaluate import side_by_side, to_uint8, turntable_cameras, write_png_atomic
    from headcap.avatar.gaussian_avatar import load_avatar
    from headcap.capture.session import read_session
    from headcap.core.fileio import read_json

    avatar = load_avatar(args.avatar)
    meta = read_json(Path(args.avatar) / "avatar.json")
    session = read_session(args.session)
    params = read_head_params(head_params_path(session), avatar.model)
    held_cams = meta["holdout"]["cameras"]
    held_frames = meta["holdout"]["frames"]
    t_train = 0
    pairs = [(t_train, c) for c in held_cams] + [(held_frames[-1], held_cams[0])]
    frames = sorted({t for t, _ in pairs})
    images = load_images(session, session.load_rig(), frames, held_cams)
    verts = dict(zip(frames, frame_vertices(avatar.model, avatar.identity, params, frames)))
    rows = []
    with torch.no_grad():
        for t, cam in pairs:
            img, _ = images.view(t, cam)
            rgb = avatar.render(verts[t], images.cameras[cam]).rgb
            rows.append(side_by_side(rgb, img))
        grid = np.concatenate(rows, 0)
        like = images.cameras[held_cams[0]]
        strip = [to_uint8(avatar.render(verts[t_train], v).rgb)
                 for v in turntable_cameras(verts[t_train], params.world_from_head[t_train], like, 6)]
    strip = np.concatenate(strip, 1)
    # the turntable strip is 6 views wide, the grid 3: scale the strip to the grid's width
    import cv2

    strip = cv2.resize(strip, (grid.shape[1], int(strip.shape[0] * grid.shape[1] / strip.shape[1])),
                       interpolation=cv2.INTER_AREA)
    write_png_atomic(args.out, np.concatenate([grid, strip], 0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
