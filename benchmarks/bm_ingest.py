"""Ingest speed: 16 cameras at NeRSemble size (1100x1604) and at 512 px.

Prints camera-frames per second of the full ingest (analysis decode + sync + plate matting +
colour correction + PNG writing of images and masks) and of two plain loops measured in the same
run: "decode and write PNG" with cv2's PNG at level 1 and its default adaptive filters (the
reference the targets are set against: >= 0.6 at 1100x1604, >= 0.8 at 512 px), and the same loop
with ingest's own PNG settings (level 1, Up filter; the floor any ingest with these files pays).

    python benchmarks/bm_ingest.py [--cameras 16] [--frames 10] [--workers 0]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headcap.capture.ingest import IngestConfig, IngestHooks, ingest  # noqa: E402
from headcap.capture.video import iter_video, write_image  # noqa: E402
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording  # noqa: E402


def plain_dump(src: Path, out: Path, size=None, params=None) -> int:
    import cv2

    n = 0
    for video in sorted(src.glob("*.mp4")):
        for i, (_, frame) in enumerate(iter_video(video)):
            if size is not None:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            write_image(out / video.stem / f"{i:06d}.png", frame, params=params)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bm_ingest_"))
    try:
        rec = SyntheticRecording(width=1100, height=1604, frames=args.frames + 4,
                                 starts=[c % 3 for c in range(args.cameras)], drops={1: [args.frames // 2]},
                                 flash_frame=3, flash_length=2)
        t = time.perf_counter()
        write_recording(rec, tmp / "src")
        print(f"synthetic recording: {args.cameras} cameras x {rec.frames} frames at 1100x1604, "
              f"made in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs")
        import cv2

        for label, resize, size in (("1100x1604", None, None), ("512 px", "512", (351, 512))):
            t = time.perf_counter()
            n_plain = plain_dump(tmp / "src", tmp / f"plain_{label[:3]}", size, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            plain_s = time.perf_counter() - t
            plain = n_plain / plain_s
            t = time.perf_counter()
            n_plain = plain_dump(tmp / "src", tmp / f"plainup_{label[:3]}", size)
            plain_up_s = time.perf_counter() - t
            plain_up = n_plain / plain_up_s
            t = time.perf_counter()
            session = ingest(tmp / "src", tmp / f"session_{label[:3]}", IngestConfig(resize=resize, workers=args.workers),
                             IngestHooks(log=lambda m: None, progress=False))
            elapsed = time.perf_counter() - t
            cam_frames = session.frame_count * len(session.cameras)
            sync = session.extra["ingest"]["sync"]
            print(f"{label:>10}: ingest {cam_frames / elapsed:6.1f} camera-frames/s "
                  f"({session.frame_count / elapsed:5.2f} synchronised frames/s, {cam_frames} written in "
                  f"{elapsed:.1f} s; sync {sync['method']}, colour {session.extra['ingest']['colour']['method']}) | "
                  f"plain decode+PNG {plain:6.1f} camera-frames/s | ratio {cam_frames / elapsed / plain:.2f} | "
                  f"plain with ingest's PNG settings {plain_up:6.1f} | ratio {cam_frames / elapsed / plain_up:.2f}")
            # Both loops consume the same recording, but ingest writes only the synchronised frames
            # (the plain loop writes every decoded one): the time ratio compares work on equal input.
            print(f"{'':>10}  same input: plain {plain_s:.1f} s, ingest {elapsed:.1f} s -> time ratio "
                  f"{plain_s / elapsed:.2f} (vs plain with ingest's PNG settings {plain_up_s / elapsed:.2f}); "
                  f"{n_plain} frames decoded, {cam_frames} synchronised written (+ masks)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
