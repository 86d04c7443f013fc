"""Draw MediaPipe's 468 landmarks (and the iBUG-68 subset) on the real test photo.

    python docs/scripts/landmarks_overlay.py docs/img/landmarks_astronaut.png [--models DIR]

Reads ../shared/data/face_images/astronaut_eileen_collins.png (or $HEADCAP_TEST_DATA) and the
models from --models (default ../shared/data/mediapipe_face/models).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from headcap.reconstruct.landmarks import IBUG68_FROM_MEDIAPIPE, FaceLandmarker, detect_image

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    data = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", type=Path, default=data / "mediapipe_face" / "models")
    args = ap.parse_args()
    path = data / "face_images" / "astronaut_eileen_collins.png"
    r = detect_image(FaceLandmarker(args.models), path)
    image = cv2.imread(str(path))
    x0, y0, x1, y1 = (int(round(v)) for v in r.box)
    crop = image[max(y0 - 20, 0):y1 + 20, max(x0 - 20, 0):x1 + 20]
    s = 4
    big = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    off = np.array([max(x0 - 20, 0), max(y0 - 20, 0)], np.float64)

    def to_big(p):  # headcap px (integer centres) -> pixel of the enlarged crop
        return tuple(int(round(v)) for v in ((p - off + 0.5) * s - 0.5))

    for p in r.points:
        cv2.circle(big, to_big(p), 2, (255, 220, 0), -1, cv2.LINE_AA)
    for p in r.points[IBUG68_FROM_MEDIAPIPE]:
        cv2.circle(big, to_big(p), 5, (0, 0, 255), 2, cv2.LINE_AA)
    cv2.putText(big, f"468 MediaPipe points (cyan), iBUG-68 subset (red), presence {r.confidence:.3f}",
                (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), big)
    print(f"wrote {args.out} ({big.shape[1]}x{big.shape[0]})")


if __name__ == "__main__":
    main()
