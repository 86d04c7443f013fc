"""The picture of docs/reconstruct.md: a session's geometry previews side by side (per-view depth
maps, normal maps, and the surface-to-truth heat-map when the session is synthetic).

    python docs/scripts/reconstruct_preview.py SESSION docs/img/reconstruct_previews.png

Runs `headcap reconstruct SESSION` first when SESSION/geometry has no summary.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    from headcap.cli import main as headcap

    ap = argparse.ArgumentParser()
    ap.add_argument("session", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frame", type=int, default=0)
    args = ap.parse_args()
    geometry = args.session / "geometry"
    if not (geometry / "summary.json").is_file():
        assert headcap(["reconstruct", str(args.session)]) == 0
    p = geometry / "previews"
    depth = cv2.imread(str(p / f"{args.frame:06d}_depth.png"))
    normal = cv2.imread(str(p / f"{args.frame:06d}_normal.png"))
    rows = [np.concatenate([depth, normal], 1)]
    error = p / f"{args.frame:06d}_error.png"
    if error.is_file():
        e = cv2.imread(str(error))
        width = rows[0].shape[1]
        e = cv2.resize(e, (width, round(e.shape[0] * width / e.shape[1])), interpolation=cv2.INTER_AREA)
        rows.append(e)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(rows, 0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
