"""Decompression bombs and claimed sizes (issue #19) are refused from their headers, before any
memory is allocated for them."""
from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from headcap.core.fileio import FileFormatError, read_npz
from headcap.core.limits import LimitError, check_image_file, image_header_size
from reliability_inputs import npz_bomb, npz_lying_header, png_bomb

REPO = Path(__file__).resolve().parents[2]

_RSS_PROBE = """
import json, resource, sys
from headcap.capture.video import read_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_image(sys.argv[1])
    outcome = "decoded"
except ValueError as exc:
    outcome = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kib": after - before, "outcome": outcome}))
"""


def test_png_claiming_20000x20000_is_refused_before_decoding(tmp_path):
    """Old: a 389 KB PNG claiming 20000x20000 was decoded (1.2 GB in colour, 2.6 GB on the
    campaign's path) before its size was checked. The peak RSS of a fresh process must not grow."""
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 400_000
    result = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(bomb)], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert "20000x20000" in record["outcome"] and "bomb.png" in record["outcome"], record
    assert record["grew_kib"] < 50 * 1024, record


def test_image_header_check_never_calls_the_decoder(tmp_path, monkeypatch):
    import cv2

    from headcap.capture.video import read_image

    bomb = png_bomb(tmp_path / "bomb.png")

    def no_decode(*args, **kwargs):
        raise AssertionError("the decoder ran on an oversized image")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    monkeypatch.setattr(cv2, "imread", no_decode)
    with pytest.raises(LimitError, match="20000x20000"):
        read_image(bomb)
    from headcap.calib.detect import read_gray

    with pytest.raises(LimitError, match="bomb.png"):
        read_gray(bomb)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    import cv2

    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((40, 50), np.uint8))
    assert check_image_file(path) == (50, 40)
    monkeypatch.setenv("HEADCAP_MAX_IMAGE_PIXELS", "1999")
    with pytest.raises(LimitError, match="HEADCAP_MAX_IMAGE_PIXELS"):
        check_image_file(path)
    monkeypatch.setenv("HEADCAP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(LimitError, match="HEADCAP_MAX_IMAGE_PIXELS"):
        check_image_file(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_header_sizes_match_the_decoder(tmp_path, suffix):
    import cv2

    path = tmp_path / f"image{suffix}"
    cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
    assert image_header_size(path.read_bytes()) == (53, 37)


def test_zip_bomb_npz_is_refused_before_inflating(tmp_path, monkeypatch):
    """Old: np.load inflated every member (a 2 GB bomb in full) before any field was checked.
    Here a 128 MiB bomb under a 32 MiB limit: refused from the zip directory, with almost no
    memory allocated (tracemalloc sees numpy's buffers)."""
    bomb = npz_bomb(tmp_path / "bomb.npz", 128 * 1024**2)
    assert bomb.stat().st_size < 2 * 1024**2
    monkeypatch.setenv("HEADCAP_MAX_NPZ_BYTES", str(32 * 1024**2))
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError) as info:
            read_npz(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "bomb.npz" in message and "'vertices'" in message and "HEADCAP_MAX_NPZ_BYTES" in message, message
    assert peak < 8 * 1024**2, peak


def test_default_npz_limit_refuses_a_2gb_declaration(tmp_path):
    """A member declaring 2**31 elements of float64 (16 GiB) against the default limit: refused
    from its header alone (the file holds 8 bytes)."""
    path = npz_lying_header(tmp_path / "claims.npz", shape=(2**31,))
    with pytest.raises(FileFormatError, match="vertices"):
        read_npz(path)


def test_npz_header_that_lies_about_its_shape_is_refused(tmp_path):
    """Old: numpy read the shape from the .npy header and tried to allocate 8 TB (MemoryError)."""
    with pytest.raises(FileFormatError, match=r"shape \(1000000, 1000000\)"):
        read_npz(npz_lying_header(tmp_path / "lies.npz"))


def test_npz_object_member_is_refused_unread(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="object array"):
        read_npz(path)


def test_plain_npz_still_reads(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez_compressed(path, a=np.arange(12.0).reshape(3, 4), b=np.array([1, 2], np.int32), c=np.zeros((0, 3)))
    out = read_npz(path)
    assert out["a"].shape == (3, 4) and out["b"].dtype == np.int32 and out["c"].shape == (0, 3)


def test_video_frame_size_is_checked_before_decoding(tmp_path, monkeypatch):
    """A video stream's size comes from its codec header: checked before the first frame is decoded."""
    import av

    from headcap.capture.video import probe_video

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert (probe_video(path).width, probe_video(path).height) == (64, 48)
    monkeypatch.setenv("HEADCAP_MAX_IMAGE_PIXELS", "3000")
    with pytest.raises(LimitError, match=r"clip.mp4.*64x48"):
        probe_video(path)
