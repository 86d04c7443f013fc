"""headcap.core.ply against files written by other writers' conventions (ascii, big-endian,
quads, extra elements) and against truncated or lying headers."""
from __future__ import annotations

import numpy as np
import pytest

from headcap.core.ply import read_points, read_ply, write_points


def test_binary_round_trip_keeps_points_normals_confidence_colours_faces(tmp_path):
    rng = np.random.default_rng(0)
    pts, nrm = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    conf, col = rng.uniform(size=50), rng.integers(0, 256, (50, 3))
    faces = rng.integers(0, 50, (20, 3))
    back = read_points(write_points(tmp_path / "a.ply", pts, nrm, conf, col, faces))
    assert np.allclose(back["points"], pts, atol=1e-6) and np.allclose(back["normals"], nrm, atol=1e-6)
    assert np.allclose(back["confidence"], conf, atol=1e-7) and (back["colors"] == col).all()
    assert (back["faces"] == faces).all()


def test_ascii_with_quads_comments_and_an_extra_element(tmp_path):
    text = ("ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 4\nproperty float x\nproperty float y\n"
            "property float z\nelement face 1\nproperty list uchar int vertex_indices\nelement edge 1\n"
            "property int vertex1\nproperty int vertex2\nend_header\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n0 1\n")
    (tmp_path / "q.ply").write_text(text)
    vertex, faces = read_ply(tmp_path / "q.ply")
    assert np.allclose(vertex["y"], [0, 0, 1, 1])
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_big_endian_with_double_and_mixed_face_lengths(tmp_path):
    pts = np.arange(15, dtype=">f8").reshape(5, 3)
    header = ("ply\nformat binary_big_endian 1.0\nelement vertex 5\nproperty double x\nproperty double y\n"
              "property double z\nelement face 2\nproperty list uchar uint vertex_indices\nend_header\n")
    faces = b"\x03" + np.array([0, 1, 2], ">u4").tobytes() + b"\x04" + np.array([1, 2, 3, 4], ">u4").tobytes()
    (tmp_path / "b.ply").write_bytes(header.encode() + pts.tobytes() + faces)
    back = read_points(tmp_path / "b.ply")
    assert np.allclose(back["points"], pts) and back["faces"].tolist() == [[0, 1, 2], [1, 2, 3], [1, 3, 4]]


@pytest.mark.parametrize("body, match", [
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n\0\0\0\0", "needs 12000000 bytes"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 999999999999\nproperty float x\nend_header\n", "claims"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
     b"end_header\n0 0 0\n1 1\n", "ends early"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
     b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n" + b"\0" * 36
     + b"\x03" + np.array([0, 1, 7], "<i4").tobytes(), "outside the 3 vertices"),
    (b"not a ply", "not a PLY file"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty quaternion q\nend_header\n", "bad property"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, body, match):
    (tmp_path / "bad.ply").write_bytes(body)
    with pytest.raises(ValueError, match=match) as info:
        read_ply(tmp_path / "bad.ply")
    assert "bad.ply" in str(info.value)
