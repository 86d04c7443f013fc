"""Malformed rig and session files: each must fail with a FileFormatError that names the file,
the field and the offending value, and `headcap rig show` must exit non-zero saying the same."""
import copy
import json
import struct

import numpy as np
import pytest

from headcap.calib.camera import Camera, Rig, look_at
from headcap.core.fileio import FileFormatError
from headcap.calib.formats import write_any
from headcap.calib.rig_io import rig_to_dict
from headcap.cli import main


def base_rig() -> Rig:
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    return Rig.from_list([
        Camera("cam00", 640, 480, K, "opencv", np.array([-0.1, 0.01, 0.0, 0.0, 0.0]), look_at([0, 0, -2], [0, 0, 0])),
        Camera("cam01", 640, 480, K, "opencv", np.array([-0.1, 0.01, 0.0, 0.0, 0.0]), look_at([1, 0, -2], [0, 0, 0])),
    ])


def rig_json(tmp_path, mutate, raw: str | None = None):
    data = rig_to_dict(base_rig())
    mutate(data)
    path = tmp_path / "rig.json"
    path.write_text(raw if raw is not None else json.dumps(data))
    return path


def text_edit(tmp_path, fmt: str, name: str, edit):
    """Write base_rig in `fmt` under tmp_path/name, then apply `edit(path)` to the written file(s)."""
    rig = base_rig()
    if fmt == "nersemble":
        rig = Rig({c.id: c.undistorted() for c in rig})
    path = tmp_path / name
    write_any(rig, path, fmt)
    edit(path)
    return path


def json_edit(mutate):
    def edit(path):
        data = json.loads(path.read_text())
        mutate(data)
        path.write_text(json.dumps(data))
    return edit


def replace_in(file_name: str, old: str, new: str, count: int = 1):
    def edit(path):
        target = path / file_name if path.is_dir() else path
        text = target.read_text()
        assert old in text, (old, text[:400])
        target.write_text(text.replace(old, new, count))
    return edit


def session_dir(tmp_path, mutate):
    root = tmp_path / "session"
    root.mkdir()
    write_any(base_rig(), root / "rig.json", "rig")
    data = {"schema_version": 1, "name": "s", "fps": 30.0, "frame_count": 1, "cameras": ["cam00", "cam01"],
            "rig": "rig.json",
            "frames": [{"index": 0, "timestep": 0.0, "timestamp": 0.0,
                        "images": {"cam00": "images/cam00/000000.png", "cam01": "images/cam01/000000.png"}}]}
    mutate(data)
    (root / "session.json").write_text(json.dumps(data))
    return root


def _set(path_keys, value):
    def mutate(data):
        node = data
        for key in path_keys[:-1]:
            node = node[key]
        node[path_keys[-1]] = value
    return mutate


def _del(path_keys):
    def mutate(data):
        node = data
        for key in path_keys[:-1]:
            node = node[key]
        del node[path_keys[-1]]
    return mutate


def _truncate_bin(name: str, keep: int):
    def edit(path):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: len(data) - keep])
    return edit


def _bin_model_id(path):
    data = bytearray((path / "cameras.bin").read_bytes())
    struct.pack_into("<i", data, 8 + 4, 99)  # first camera record: camera_id, then model_id
    (path / "cameras.bin").write_bytes(bytes(data))


ROT_SCALED = [[1.1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
REFLECTION = [[-1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]

# (case id, builder(tmp_path) -> path given to the CLI, file named in the error (relative), field, value)
CASES = [
    ("rig-missing-K", lambda t: rig_json(t, _del(["cameras", 0, "K"])), "rig.json", "cameras[0] (cam00).K", "missing"),
    ("rig-nan-in-K", lambda t: rig_json(t, lambda d: None, raw=json.dumps(rig_to_dict(base_rig())).replace("500.0", "NaN", 1)),
     "rig.json", "cameras[0].K[0][0]", "nan"),
    ("rig-inf-translation", lambda t: rig_json(t, lambda d: None, raw=json.dumps(
        _with(rig_to_dict(base_rig()), ["cameras", 1, "cam_from_world", 2, 3], 1e999))),
     "rig.json", "cameras[1].cam_from_world[2][3]", "inf"),
    ("rig-non-orthonormal", lambda t: rig_json(t, _set(["cameras", 1, "cam_from_world"], ROT_SCALED)),
     "rig.json", "cameras[1] (cam01).cam_from_world", "1.1"),
    ("rig-reflection", lambda t: rig_json(t, _set(["cameras", 0, "cam_from_world"], REFLECTION)),
     "rig.json", "cameras[0] (cam00).cam_from_world", "determinant -1"),
    ("rig-zero-focal", lambda t: rig_json(t, _set(["cameras", 0, "K", 0, 0], 0.0)), "rig.json",
     "cameras[0] (cam00).K", "fx=0.0"),
    ("rig-negative-focal", lambda t: rig_json(t, _set(["cameras", 1, "K", 1, 1], -500.0)), "rig.json",
     "cameras[1] (cam01).K", "fy=-500.0"),
    ("rig-duplicate-ids", lambda t: rig_json(t, _set(["cameras", 1, "id"], "cam00")), "rig.json", "cameras[1].id", "'cam00'"),
    ("rig-K-shape", lambda t: rig_json(t, _set(["cameras", 0, "K"], [[500, 0, 320], [0, 500, 240]])), "rig.json",
     "cameras[0] (cam00).K", "(2, 3)"),
    ("rig-pose-shape", lambda t: rig_json(t, _set(["cameras", 0, "cam_from_world"], np.eye(4)[:3].tolist())), "rig.json",
     "cameras[0] (cam00).cam_from_world", "(3, 4)"),
    ("rig-schema-version", lambda t: rig_json(t, _set(["schema_version"], 99)), "rig.json", "schema_version", "99"),
    ("rig-truncated", lambda t: rig_json(t, lambda d: None, raw=json.dumps(rig_to_dict(base_rig()))[:150]), "rig.json",
     "<file>", "truncated JSON at line 1 column 151"),
    ("rig-distortion-count", lambda t: rig_json(t, _set(["cameras", 0, "distortion"], [0.1, 0.2, 0.3])), "rig.json",
     "cameras[0] (cam00).distortion", "got 3"),
    ("rig-negative-width", lambda t: rig_json(t, _set(["cameras", 0, "width"], -640)), "rig.json",
     "cameras[0] (cam00).width", "-640"),
    ("rig-unknown-model", lambda t: rig_json(t, _set(["cameras", 0, "distortion_model"], "kannala")), "rig.json",
     "cameras[0] (cam00).distortion_model", "'kannala'"),
    ("session-escaping-path", lambda t: session_dir(t, _set(["frames", 0, "images", "cam01"], "../../etc/passwd")),
     "session.json", "frames[0].images.cam01", "'../../etc/passwd'"),
    ("session-absolute-path", lambda t: session_dir(t, _set(["frames", 0, "images", "cam00"], "/etc/passwd")),
     "session.json", "frames[0].images.cam00", "'/etc/passwd'"),
    ("session-rig-escapes", lambda t: session_dir(t, _set(["rig"], "../rig.json")), "session.json", "rig", "'../rig.json'"),
    ("session-schema-version", lambda t: session_dir(t, _set(["schema_version"], 7)), "session.json", "schema_version", "7"),
    ("session-nan-fps", lambda t: session_dir(t, _set(["fps"], float("nan"))), "session.json", "fps", "nan"),
    ("session-duplicate-cameras", lambda t: session_dir(t, _set(["cameras"], ["cam00", "cam00"])), "session.json",
     "cameras", "'cam00'"),
    ("session-frame-count", lambda t: session_dir(t, _set(["frame_count"], 3)), "session.json", "frame_count", "says 3"),
    ("nersemble-pose-shape", lambda t: text_edit(t, "nersemble", "camera_params.json",
                                                 json_edit(lambda d: d["world_2_cam"]["cam01"].pop())),
     "camera_params.json", "world_2_cam.cam01", "(3, 4)"),
    ("nersemble-zero-focal", lambda t: text_edit(t, "nersemble", "camera_params.json",
                                                 json_edit(_set(["intrinsics", 1, 1], 0.0))),
     "camera_params.json", "intrinsics", "fy=0.0"),
    ("nerfstudio-scaled-pose", lambda t: text_edit(t, "nerfstudio", "transforms.json",
                                                   json_edit(_set(["frames", 1, "transform_matrix"], ROT_SCALED))),
     "transforms.json", "frames[1].transform_matrix", "1.1"),
    ("nerfstudio-missing-focal", lambda t: text_edit(t, "nerfstudio", "transforms.json", json_edit(_del(["fl_x"]))),
     "transforms.json", "frames[0].fl_x", "missing"),
    ("nerfstudio-unknown-model", lambda t: text_edit(t, "nerfstudio", "transforms.json",
                                                     json_edit(_set(["camera_model"], "EQUIRECTANGULAR"))),
     "transforms.json", "camera_model", "'EQUIRECTANGULAR'"),
    ("colmap-param-count", lambda t: text_edit(t, "colmap", "sparse", replace_in("cameras.txt", "\n1 OPENCV 640 480 ", "\n1 OPENCV 640 480 7.0 ")),
     "sparse/cameras.txt", "line 5.PARAMS", "got 9"),
    ("colmap-zero-quaternion", lambda t: text_edit(t, "colmap", "sparse", _zero_quaternion), "sparse/images.txt",
     "line 5 (IMAGE_ID 1).QW..QZ", "norm 0.0"),
    ("colmap-unknown-camera", lambda t: text_edit(t, "colmap", "sparse", _image_camera_id(7)), "sparse/images.txt",
     "line 5 (IMAGE_ID 1).CAMERA_ID", "camera 7"),
    ("colmap-bin-truncated", lambda t: text_edit(t, "colmap-bin", "sparse", _truncate_bin("images.bin", 20)),
     "sparse/images.bin", "images[1]", "truncated"),
    ("colmap-bin-model-id", lambda t: text_edit(t, "colmap-bin", "sparse", _bin_model_id), "sparse/cameras.bin",
     "cameras[0].model_id", "99"),
    ("opencv-truncated", lambda t: text_edit(t, "opencv", "rig.yaml", _truncate_text(0.55)), "rig.yaml", "", "truncated"),
    ("opencv-nan-matrix", lambda t: text_edit(t, "opencv", "rig.yaml", replace_in("rig.yaml", "500.", ".nan")),
     "rig.yaml", "cameras[0] (cam00).camera_matrix", "nan"),
    ("rig-ragged-pose", lambda t: rig_json(t, _set(["cameras", 0, "cam_from_world", 1], [0, 1])), "rig.json",
     "cameras[0] (cam00).cam_from_world", "[0, 1]"),
    ("rig-null-distortion", lambda t: rig_json(t, _set(["cameras", 1, "distortion"], None)), "rig.json",
     "cameras[1] (cam01).distortion", "None"),
    ("rig-nested-too-deep", lambda t: rig_json(t, lambda d: None, raw="[" * 100_000 + "]" * 100_000), "rig.json",
     "<file>", "nested too deeply"),
    ("session-camera-id-escapes", lambda t: session_dir(t, _set(["cameras", 1], "../cam01")), "session.json",
     "cameras[1]", "'../cam01'"),
    ("colmap-bin-huge-point-count", lambda t: text_edit(t, "colmap-bin", "sparse", _bin_points2d_count(2 ** 62)),
     "sparse/images.bin", "images[0].points2D", "truncated"),
    ("opencv-root-not-mapping", lambda t: text_edit(t, "opencv", "rig.yaml", _write_text("%YAML:1.0\n---\n- 1\n- 2\n")),
     "rig.yaml", "<root>", "not a mapping"),
    ("opencv-missing-width", lambda t: text_edit(t, "opencv", "rig.yaml", replace_in("rig.yaml", "image_width: 640", "image_widht: 640", 2)),
     "rig.yaml", "cameras[0] (cam00).image_width", "missing"),
]


def _with(data, keys, value):
    data = copy.deepcopy(data)
    _set(keys, value)(data)
    return data


def _zero_quaternion(path):
    lines = (path / "images.txt").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line and not line.startswith("#"))
    tok = lines[i].split()
    tok[1:5] = ["0", "0", "0", "0"]
    lines[i] = " ".join(tok)
    (path / "images.txt").write_text("\n".join(lines) + "\n")


def _image_camera_id(cid):
    def edit(path):
        lines = (path / "images.txt").read_text().splitlines()
        i = next(k for k, line in enumerate(lines) if line and not line.startswith("#"))
        tok = lines[i].split()
        tok[8] = str(cid)
        lines[i] = " ".join(tok)
        (path / "images.txt").write_text("\n".join(lines) + "\n")
    return edit


def _bin_points2d_count(count):
    def edit(path):
        data = bytearray((path / "images.bin").read_bytes())
        name_end = data.index(b"\x00", 8 + 64)  # after num_reg_images and the first image's fixed fields
        struct.pack_into("<Q", data, name_end + 1, count)
        (path / "images.bin").write_bytes(bytes(data))
    return edit


def _write_text(text):
    def edit(path):
        path.write_text(text)
    return edit


def _truncate_text(fraction):
    def edit(path):
        text = path.read_text()
        path.write_text(text[: int(len(text) * fraction)])
    return edit


def test_at_least_twenty_cases():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_is_named_with_field_and_value(tmp_path, case, capsys):
    from headcap.calib.formats import read_any
    from headcap.commands.rig import load_rig

    _, build, file_name, field, value = case
    target = build(tmp_path)
    named_file = tmp_path / file_name if not file_name.startswith("session") else target / file_name
    with pytest.raises(FileFormatError) as info:
        load_rig(target) if file_name == "session.json" else read_any(target)
    message = str(info.value)
    assert str(named_file) in message, message
    assert f"field '{field}" in message, message
    assert value in message, message
    capsys.readouterr()
    assert main(["rig", "show", str(target)]) != 0
    err = capsys.readouterr().err
    assert str(named_file) in err and field in err and value in err, err


def test_missing_file_exits_non_zero(tmp_path, capsys):
    assert main(["rig", "show", str(tmp_path / "nope.json")]) != 0
    assert "nope.json" in capsys.readouterr().err


def test_convert_to_unstorable_format_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "rig.json"
    write_any(base_rig(), src, "rig")
    out = tmp_path / "camera_params.json"
    assert main(["rig", "convert", str(src), str(out), "--to", "nersemble"]) != 0
    err = capsys.readouterr().err
    assert "cam00" in err and "distortion" in err and "-0.1" in err
    assert not out.exists()
