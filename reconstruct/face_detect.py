"""MediaPipe face detection and face landmarks (468-point mesh) with ai-edge-litert.

Models (Apache-2.0, from the mediapipe 0.10.x wheels), read from a folder, never downloaded:
  face_detection_short_range.tflite  BlazeFace short range: 128x128 RGB in [-1, 1] ->
                                     896 anchors x (box + 6 keypoints), one score logit each
  face_landmark.tflite               192x192 RGB in [0, 1] -> 468 x (x, y, z) in crop pixels
                                     and a face-presence logit

Pixels follow headcap's convention: integer coordinates are pixel centres (pixel (0, 0) covers
[-0.5, 0.5]^2). The models work in texture coordinates (pixel centres at +0.5); we convert.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DETECTOR_FILE = "face_detection_short_range.tflite"
LANDMARK_FILE = "face_landmark.tflite"
NUM_MESH = 468

# iBUG-68 (300-W / Multi-PIE markup) -> MediaPipe face-mesh vertex index, one per iBUG point in
# iBUG order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lip 48-59, inner lip 60-67).
# Written for headcap by picking, for each iBUG point, the MediaPipe canonical-mesh vertex at the
# same anatomical place on MediaPipe's published index map (canonical_face_model_uv_visualization.png
# in mediapipe/modules/face_geometry/data, copy in ../shared/data/mediapipe_face) and its
# eye/lip contour index lists (mediapipe/python/solutions/face_mesh_connections.py). iBUG's
# "right" is the subject's right (image left in a frontal photo), as MediaPipe's 33/133.
IBUG68_FROM_MEDIAPIPE = np.array([
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw 0-16
    70, 63, 105, 66, 107,                  # right brow 17-21
    336, 296, 334, 293, 300,               # left brow 22-26
    168, 197, 5, 4,                        # nose bridge 27-30 (30 = tip)
    75, 97, 2, 326, 305,                   # nostrils 31-35
    33, 160, 158, 133, 153, 144,           # right eye 36-41
    362, 385, 387, 263, 373, 380,          # left eye 42-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lip 48-59
    78, 82, 13, 312, 308, 317, 14, 87,     # inner lip 60-67
], dtype=np.int64)
assert IBUG68_FROM_MEDIAPIPE.shape == (68,)

NOSE_TIP = 4  # MediaPipe vertex of iBUG 30


def default_models_dir() -> Path:
    env = os.environ.get("HEADCAP_MODELS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "headcap" / "models" / "mediapipe_face"


def find_models(models: str | Path | None) -> Path:
    folder = Path(models) if models is not None else default_models_dir()
    missing = [f for f in (DETECTOR_FILE, LANDMARK_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: missing {', '.join(missing)}. headcap never downloads models at run time: copy "
            f"MediaPipe's {DETECTOR_FILE} and {LANDMARK_FILE} (Apache-2.0; inside the mediapipe 0.10.x wheel: "
            "`pip download mediapipe==0.10.21 --no-deps` and unzip mediapipe/modules/...) into that folder, "
            "or pass --models DIR / set HEADCAP_MODELS")
    return folder


def _anchors() -> np.ndarray:
    """BlazeFace short-range SSD anchors [896, 2] (x, y centres in [0, 1]): strides 8, 16, 16, 16
    on a 128 input, 2 anchors per cell per layer, offset 0.5, fixed size (MediaPipe's
    face_detection_short_range_common options)."""
    strides = [8, 16, 16, 16]
    out = []
    i = 0
    while i < len(strides):
        j = i
        per_cell = 0
        while j < len(strides) and strides[j] == strides[i]:
            per_cell += 2
            j += 1
        n = 128 // strides[i]
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, per_cell, axis=0))
        i = j
    anchors = np.concatenate(out).astype(np.float64)
    assert anchors.shape == (896, 2)
    return anchors


@dataclass
class FaceResult:
    found: bool
    box: np.ndarray            # [4] x0, y0, x1, y1 pixels (NaN when not found)
    points: np.ndarray         # [468, 2] pixels (NaN when not found)
    depth: np.ndarray          # [468] relative z in pixels (MediaPipe's scale)
    confidence: float          # face presence (0..1) of the landmark model; detector score if none
    detector_score: float
    message: str = ""

    @property
    def ibug68(self) -> np.ndarray:
        return self.points[IBUG68_FROM_MEDIAPIPE]


class FaceLandmarker:
    """Face box -> 468 landmarks for one RGB image (uint8 [H, W, 3]). The biggest-scoring face only."""

    def __init__(self, models: str | Path | None = None, min_detection: float = 0.5, min_presence: float = 0.5,
                 threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        folder = find_models(models)
        self.models = folder
        self.min_detection = min_detection
        self.min_presence = min_presence
        self._det = Interpreter(model_path=str(folder / DETECTOR_FILE), num_threads=threads)
        self._det.allocate_tensors()
        self._lm = Interpreter(model_path=str(folder / LANDMARK_FILE), num_threads=threads)
        self._lm.allocate_tensors()
        self._anchors = _anchors()

    # --- detection ------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(score, box [4] x0 y0 x1 y1 px, keypoints [6, 2] px) of the best face, or None.
        The image is letterboxed to a square (as MediaPipe does) before the 128x128 resize."""
        import cv2

        h, w = image.shape[:2]
        side = max(h, w)
        pad = np.zeros((side, side, 3), np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        pad[oy:oy + h, ox:ox + w] = image[..., :3]
        inp = cv2.resize(pad, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
        d_in = self._det.get_input_details()[0]["index"]
        self._det.set_tensor(d_in, inp[None])
        self._det.invoke()
        outs = {o["name"]: self._det.get_tensor(o["index"]) for o in self._det.get_output_details()}
        reg = outs["regressors"][0].astype(np.float64)
        logits = np.clip(outs["classificators"][0, :, 0].astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        best = int(np.argmax(scores))
        if scores[best] < self.min_detection:
            return None
        # weighted average of the detections overlapping the best one (MediaPipe's weighted NMS)
        boxes = self._decode_boxes(reg)
        iou = _iou(boxes[best], boxes)
        sel = (iou > 0.3) & (scores >= self.min_detection)
        wts = scores[sel] / scores[sel].sum()
        box = (boxes[sel] * wts[:, None]).sum(0)
        kps = self._decode_keypoints(reg)[sel]
        kp = (kps * wts[:, None, None]).sum(0)
        # normalised [0, 1] of the square -> texture px -> headcap px (centres at integers)
        box = box * side - np.array([ox, oy, ox, oy]) - 0.5
        kp = kp * side - np.array([ox, oy]) - 0.5
        return float(scores[best]), box, kp

    def _decode_boxes(self, reg):
        a = self._anchors
        cx = reg[:, 0] / 128 + a[:, 0]
        cy = reg[:, 1] / 128 + a[:, 1]
        bw = reg[:, 2] / 128
        bh = reg[:, 3] / 128
        return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)

    def _decode_keypoints(self, reg):
        k = reg[:, 4:16].reshape(-1, 6, 2) / 128
        return k + self._anchors[:, None, :]

    # --- landmarks -----------------------------------------------------------------------
    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None):
        """468 points [468, 2] px, depth [468], presence (0..1) from a face box (and the eye
        keypoints for the roll): MediaPipe's detection-to-rect (square, 1.5x, rotated so the eyes
        are level), an affine crop to 192x192, the mesh model, and back."""
        import cv2

        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        size = max(x1 - x0, y1 - y0) * 1.5
        angle = 0.0
        if keypoints is not None:
            (rx, ry), (lx, ly) = keypoints[0], keypoints[1]  # subject's right eye, left eye
            angle = np.arctan2(ly - ry, lx - rx)
        c, s = np.cos(angle), np.sin(angle)
        # crop pixel (u, v) (texture coords in [0, 192]) -> image point, as an affine map
        scale = size / 192.0
        # image = centre + R(angle) @ ((u - 96) * scale, (v - 96) * scale); headcap px = tex - 0.5
        A = np.array([[c * scale, -s * scale], [s * scale, c * scale]])
        t = np.array([cx, cy]) - A @ np.array([96.0, 96.0])
        # cv2 maps dst integer pixel centres (u = j) -> src pixel (integer centres); tex u = j + 0.5
        M_img_from_crop = np.hstack([A, (t + A @ np.array([0.5, 0.5]))[:, None]])
        crop = cv2.warpAffine(image[..., :3], M_img_from_crop, (192, 192),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        inp = crop.astype(np.float32) / 255.0
        self._lm.set_tensor(self._lm.get_input_details()[0]["index"], inp[None])
        self._lm.invoke()
        outs = [self._lm.get_tensor(o["index"]) for o in self._lm.get_output_details()]
        mesh = next(o for o in outs if o.size == NUM_MESH * 3).reshape(NUM_MESH, 3).astype(np.float64)
        flag = float(next(o for o in outs if o.size == 1).ravel()[0])
        presence = 1.0 / (1.0 + np.exp(-np.clip(flag, -100, 100)))
        pts = mesh[:, :2] @ A.T + t  # texture coords -> image (headcap centres, t includes the shift)
        return pts, mesh[:, 2] * scale, presence

    def __call__(self, image: np.ndarray, refine: bool = True) -> FaceResult:
        nan2 = np.full((NUM_MESH, 2), np.nan)
        det = self.detect(image)
        if det is None:
            return FaceResult(False, np.full(4, np.nan), nan2, np.full(NUM_MESH, np.nan), 0.0, 0.0,
                              f"no face found (best detector score below {self.min_detection})")
        score, box, kps = det
        pts, depth, presence = self.landmarks_in_box(image, box, kps)
        if refine and presence >= self.min_presence:
            # second pass from the mesh itself (MediaPipe's landmarks-to-rect tracking step)
            lo, hi = pts.min(0), pts.max(0)
            eyes = np.stack([pts[[33, 133]].mean(0), pts[[362, 263]].mean(0)])
            pts2, depth2, presence2 = self.landmarks_in_box(image, np.concatenate([lo, hi]), eyes)
            if presence2 >= presence * 0.9:
                pts, depth, presence = pts2, depth2, presence2
        if presence < self.min_presence:
            return FaceResult(False, box, nan2, np.full(NUM_MESH, np.nan), float(presence), score,
                              f"no face found (detector score {score:.2f} but landmark presence {presence:.2f} "
                              f"below {self.min_presence})")
        box_out = np.concatenate([pts.min(0), pts.max(0)])
        return FaceResult(True, box_out, pts, depth, float(presence), score)


def _iou(a, boxes):
    ix0 = np.maximum(a[0], boxes[:, 0])
    iy0 = np.maximum(a[1], boxes[:, 1])
    ix1 = np.minimum(a[2], boxes[:, 2])
    iy1 = np.minimum(a[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(boxes) - inter, 1e-12)
