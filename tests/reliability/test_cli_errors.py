"""The campaign's bad inputs (issue #19), command by command, through `headcap.cli.main`: each exits
2 with one line that names the file or option, the field and the value; never a traceback.

Every row guards a defect the campaign found (the comment above it says what the old code did),
except the rows marked as controls, which the old code passed too.
Crashes and hangs of the old code (a segfault, a 2**60-node walk) run in a subprocess with a
timeout, so a regression fails the test instead of killing the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headcap.cli import main
from headcap.calib.formats.nerfstudio import rig_to_transforms
from headcap.calib.formats.nersemble import rig_to_nersemble
from reliability_inputs import (deep_yaml, npz_lying_header, pickle_reference_bomb, png_bomb, rig_dict, tiny_rig,
                                write_json_text)

REPO = Path(__file__).resolve().parents[2]


def _rig_with(tmp, **camera_fields) -> Path:
    data = rig_dict()
    data["cameras"][0].update(camera_fields)
    return write_json_text(tmp / "rig.json", data)


def _rig_text(tmp, text: str, name: str = "rig.json") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def _transforms(tmp, **changes) -> Path:
    data = rig_to_transforms(tiny_rig())
    for key, value in changes.items():
        if key.startswith("frame0_"):
            data["frames"][0][key[7:]] = value
        else:
            data[key] = value
    if "fl_x" in changes or "camera_angle_x" in changes:
        data.pop("fl_x", None)
        data.pop("fl_y", None)
    return write_json_text(tmp / "transforms.json", data)


def _nerfstudio_dataset(tmp, **frame0) -> Path:
    root = tmp / "dataset"
    root.mkdir()
    data = rig_to_transforms(tiny_rig())
    data["frames"][0].update(frame0)
    write_json_text(root / "transforms.json", data)
    (tmp / "secret.png").write_bytes(b"not yours")
    return root


def _nersemble_participant(tmp) -> Path:
    root = tmp / "participant"
    (root / "calibration").mkdir(parents=True)
    (root / "sequences" / "EXP-1").mkdir(parents=True)
    (tmp / "elsewhere").mkdir()
    write_json_text(root / "calibration" / "camera_params.json", rig_to_nersemble(tiny_rig().__class__(
        {c.id: c.undistorted() for c in tiny_rig()})))
    return root


def _png_bomb_folder(tmp) -> Path:
    root = tmp / "images"
    (root / "cam00").mkdir(parents=True)
    png_bomb(root / "cam00" / "000.png")
    return root


def _colmap_text(tmp, width: str) -> Path:
    folder = tmp / "colmap"
    folder.mkdir()
    (folder / "cameras.txt").write_text(f"1 PINHOLE {width} 48 80 82 32 24\n")
    (folder / "images.txt").write_text("1 1 0 0 0 0 0 0 1 cam00\n\n")
    return folder


# (id, builder(tmp) -> (argv, substrings the one error line must hold))
CASES = [
    # ZeroDivisionError traceback: camera_angle_x of 0 divided by tan(0)
    ("zero-camera-angle", lambda t: (["rig", "show", str(_transforms(t, camera_angle_x=0.0))],
                                     ["transforms.json", "camera_angle_x", "0.0"])),
    # accepted: JSON `true` read as focal length 1.0
    ("bool-focal", lambda t: (["rig", "show", str(_rig_with(t, K=[[True, 0, 31.5], [0, True, 23.5], [0, 0, 1]]))],
                              ["rig.json", "K", "True"])),
    # accepted: a key given twice, the last silently wins
    ("duplicate-key", lambda t: (["rig", "show", str(_rig_text(t, json.dumps(rig_dict()).replace(
        '"units": "m"', '"units": "m", "units": "mm"')))], ["rig.json", "units", "duplicate"])),
    # OverflowError traceback: an integer too large for a float in K
    ("huge-int-in-K", lambda t: (["rig", "show", str(_rig_with(t, K=[[10**400, 0, 31.5], [0, 80, 23.5], [0, 0, 1]]))],
                                 ["rig.json", "K", "too large"])),
    # ValueError traceback from the NaN locator: an integer past Python's 4300-digit limit
    ("int-over-digit-limit", lambda t: (["rig", "show", str(_rig_text(t, '{"schema_version": 1' + "0" * 5000 + "}"))],
                                        ["rig.json", "digits"])),
    # struct.error traceback from `rig convert --to colmap-bin`: a width beyond 64 bits
    ("width-2-64-to-colmap-bin", lambda t: (["rig", "convert", str(_rig_with(t, width=2**64)), str(t / "model"),
                                             "--to", "colmap-bin"], ["rig.json", "width", "18446744073709551616"])),
    # accepted: a 10^12-pixel-wide camera (its pixel grid is a MemoryError later)
    ("huge-width", lambda t: (["rig", "show", str(_rig_with(t, width=10**12))], ["rig.json", "width", "1000000000000"])),
    ("colmap-huge-width", lambda t: (["rig", "show", str(_colmap_text(t, "99999999999999999999"))],
                                     ["cameras.txt", "WIDTH", "99999999999999999999"])),
    # accepted: camera ids with newlines and control characters (they break tables and text formats)
    ("id-newline", lambda t: (["rig", "show", str(_rig_with(t, id="cam\n00"))], ["rig.json", "id", "cam\\n00"])),
    ("id-escape", lambda t: (["rig", "show", str(_rig_with(t, id="cam\x1b[31m"))], ["rig.json", "id", "\\x1b"])),
    # deep JSON: named, with the limit
    ("deep-json", lambda t: (["rig", "show", str(_rig_text(t, '{"cameras": ' + "[" * 200 + "]" * 200 + "}"))],
                             ["rig.json", "nested"])),
    # symlink loops: named, with the file and field that lead to them (old: "Symlink loop from '...'", no
    # field); the first row is a control (the old code named a looping rig file already)
    ("symlink-loop", lambda t: (["rig", "show", "--from", "rig", str(_loop(t))], ["loop.json"])),
    ("session-rig-symlink-loop", lambda t: (["rig", "show", str(_session_with_loop(t))],
                                            ["session.json", "field 'rig'", "loop.json"])),
    # demo/synth options: accepted silently or crashed
    ("demo-iterations-negative", lambda t: (["demo", "--out", str(t / "o"), "--iterations", "-5"], ["--iterations", "-5"])),
    ("demo-held-out-all", lambda t: (["demo", "--out", str(t / "o"), "--cameras", "3", "--held-out", "3"], ["--held-out", "3"])),
    ("demo-seed-negative", lambda t: (["demo", "--out", str(t / "o"), "--seed", "-1"], ["--seed", "-1"])),
    # control: an upper bound on the rig size (the old code failed later, also naming the field)
    ("synth-cameras-huge", lambda t: (["synth", "--out", str(t / "o"), "--cameras", "1000000000"], ["cameras", "1000000000"])),
    ("synth-npz-lying-shape", lambda t: (["synth", "--out", str(t / "o"), "--head", f"npz:{npz_lying_header(t / 'h.npz')}"],
                                         ["h.npz", "vertices", "1000000"])),
    # ingest: options and manifests
    ("ingest-workers-huge", lambda t: (["ingest", str(t), "--out", str(t / "s"), "--workers", "1000000"], ["--workers", "1000000"])),
    ("ingest-stride-zero", lambda t: (["ingest", str(t), "--out", str(t / "s"), "--stride", "0"], ["--stride", "0"])),
    ("ingest-resize-huge", lambda t: (["ingest", str(t), "--out", str(t / "s"), "--resize", "90000x90000"], ["--resize", "90000x90000"])),
    # read outside the dataset: nerfstudio file_path / mask_path, NeRSemble --sequence
    ("nerfstudio-file-path-escape", lambda t: (["ingest", str(_nerfstudio_dataset(t, file_path="../secret.png")), "--out",
                                                str(t / "s"), "--format", "nerfstudio"],
                                               ["transforms.json", "frames[0].file_path", "../secret.png"])),
    ("nerfstudio-mask-path-absolute", lambda t: (["ingest", str(_nerfstudio_dataset(t, mask_path=str(t / "secret.png"))),
                                                  "--out", str(t / "s"), "--format", "nerfstudio"],
                                                 ["transforms.json", "frames[0].mask_path", "secret.png"])),
    ("nersemble-sequence-escape", lambda t: (["ingest", str(_nersemble_participant(t)), "--out", str(t / "s"), "--format",
                                              "nersemble", "--sequence", "../../elsewhere"], ["--sequence", "../../elsewhere"])),
    # cv2.error / MemoryError: a 389 KB PNG claiming 20000x20000 was decoded (2.6 GB) before any check
    ("ingest-png-bomb", lambda t: (["ingest", str(_png_bomb_folder(t)), "--out", str(t / "s"), "--format", "images",
                                    "--no-progress"], ["000.png", "20000x20000"])),
    ("calibrate-png-bomb", lambda t: (["calibrate", str(_png_bomb_folder(t)), "--out", str(t / "rig.json"),
                                       "--board", "charuco:5x7:0.04:0.02:DICT_6X6_250"],
                                      ["000.png", "20000x20000"])),
    # export / view: claimed counts and broken files
    ("export-ply-claims-1e20-vertices", lambda t: (["export", str(_ply(t, "99999999999999999999")), "--format", "splat-glb",
                                                    "--out", str(t / "o.glb")], ["big.ply", "99999999999999999999"])),
    # accepted: a 4-byte "glTF" file was embedded into a viewer page that showed nothing
    ("view-broken-glb", lambda t: (["view", str(_bytes(t / "bad.glb", b"glTF")), "--out", str(t / "v")],
                                   ["bad.glb", "too short"])),
    ("view-glb-negative-chunk", lambda t: (["view", str(_bytes(t / "bad.glb", b"glTF" + bytes([2, 0, 0, 0, 24, 0, 0, 0])
                                                                + bytes([255, 255, 255, 127]) + b"JSON" + b"{}  ")),
                                            "--out", str(t / "v")], ["bad.glb", "chunk"])),
    # argparse's two-line usage error
    ("usage-error", lambda t: (["rig", "convert", "only-one"], ["headcap rig convert", "required"])),
]


def _ply(tmp, count: str) -> Path:
    path = tmp / "big.ply"
    path.write_bytes(f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\nproperty float x\nend_header\n".encode())
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _session_with_loop(tmp) -> Path:
    root = tmp / "session"
    root.mkdir()
    os.symlink(root / "loop.json", root / "loop.json")
    write_json_text(root / "session.json", {"schema_version": 1, "name": "s", "fps": 30.0, "frame_count": 0,
                                            "cameras": ["cam00"], "frames": [], "rig": "loop.json"})
    return root


def _loop(tmp) -> Path:
    loop = tmp / "loop.json"
    os.symlink(loop, loop)
    return loop


def _assert_one_line(err: str, substrings) -> str:
    assert "Traceback" not in err, err
    # progress lines may come first; the error is one line, the last
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    line = errors[0]
    assert line.startswith("headcap "), line
    for text in substrings:
        assert text in line, (text, line)
    return line


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_named_line(case, tmp_path, capsys):
    argv, substrings = case(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    _assert_one_line(err, substrings)


def test_rich_markup_in_a_camera_id_prints_literally(tmp_path, capsys):
    """Old: rich parsed "[/]" in a camera id as markup (MarkupError traceback) or swallowed "[bold]"."""
    path = _rig_with(tmp_path, id="[/][bold]cam")
    assert main(["rig", "show", str(path)]) == 0
    assert "[/][bold]cam" in capsys.readouterr().out


def test_internal_error_is_one_line_with_a_debug_hint(monkeypatch, tmp_path, capsys):
    """An unexpected exception type exits 1 with one line; --debug shows the traceback."""
    import headcap.commands.rig as rig_command

    def broken(*args, **kwargs):
        raise AttributeError("simulated bug")

    monkeypatch.setattr(rig_command, "load_rig", broken)
    assert main(["rig", "show", "x.json"]) == 1
    err = capsys.readouterr().err
    line = _assert_one_line(err, ["internal error AttributeError", "--debug"])
    assert "simulated bug" in line
    assert main(["rig", "show", "x.json", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_bad_input(tmp_path, capsys):
    path = _rig_with(tmp_path, K=[[True, 0, 31.5], [0, True, 23.5], [0, 0, 1]])
    assert main(["--debug", "rig", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileFormatError" in err


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    import headcap.commands.rig as rig_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rig_command, "load_rig", interrupted)
    assert main(["rig", "show", "x.json"]) == 130
    assert capsys.readouterr().err.strip() == "headcap rig: interrupted"


# --- the old code's crashes and hangs, run out of process -------------------------------------
_RUNNER = """
import contextlib, io, json, sys
from headcap.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    print(json.dumps({"rc": rc, "err": err.getvalue()}), flush=True)
"""


@pytest.fixture(scope="module")
def crash_cases(tmp_path_factory):
    """The three cases that killed or hung the old process, run in one child process (one
    interpreter start-up); a case that crashes it shows up as a missing result."""
    tmp = tmp_path_factory.mktemp("crashes")
    yaml_path = tmp / "rig.yaml"
    yaml_path.write_text(deep_yaml(100_000))
    bomb = pickle_reference_bomb(tmp / "flame.pkl")
    tiny = ["--cameras", "1", "--frames", "1", "--resolution", "16", "--calib-frames", "0"]
    runs = {
        "deep-yaml": ["rig", "show", str(yaml_path)],
        "threads": ["synth", "--out", str(tmp / "o1"), "--threads", "1000000", *tiny],
        "flame-bomb": ["synth", "--out", str(tmp / "o2"), "--head", f"flame:{bomb}", *tiny],
    }
    try:
        result = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(list(runs.values()))],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        lines, status = result.stdout.splitlines(), result.returncode
    except subprocess.TimeoutExpired as exc:
        lines, status = (exc.stdout or b"").decode().splitlines(), "timeout (a hang)"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return {name: (records[i] if i < len(records) else {"rc": f"no result: process ended with {status}", "err": ""})
            for i, name in enumerate(runs)} | {"_tmp": tmp, "_bomb": bomb}


def test_deep_opencv_yaml_is_refused_not_a_segfault(crash_cases):
    """Old: cv2.FileStorage recursed through 100000 '[' and the process died of SIGSEGV."""
    record = crash_cases["deep-yaml"]
    assert record["rc"] == 2, record
    _assert_one_line(record["err"], ["rig.yaml", "nested"])


def test_synth_threads_million_is_refused_not_a_segfault(crash_cases):
    """Old: `synth --threads 1000000` reached torch.set_num_threads and crashed."""
    record = crash_cases["threads"]
    assert record["rc"] == 2, record
    _assert_one_line(record["err"], ["threads", "1000000"])
    assert not (crash_cases["_tmp"] / "o1").exists()


def test_flame_reference_bomb_is_refused_not_a_hang(crash_cases):
    """Old: a 450-byte FLAME pickle of one list shared 2**60 ways; to_plain walked every path."""
    assert crash_cases["_bomb"].stat().st_size < 600
    record = crash_cases["flame-bomb"]
    assert record["rc"] == 2, record
    _assert_one_line(record["err"], ["flame.pkl", "expand"])
