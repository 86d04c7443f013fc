"""The wheel, installed on its own: build it from the repository, install it into a fresh venv
(no editable install, no source folders on the path), import every module of it, run the
`headcap` console script, and live beside unrelated packages that own the bare names `capture`
and `avatar` (on PyPI: an old stdout-capture helper and an avatar generator).

The fresh venv sees this environment's third-party packages (torch, numpy, ...) through a .pth
file naming this interpreter's site-packages. A directory added by a .pth line does not have its
own .pth files processed, so the editable install's finder is never loaded there; the test
checks that too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

REQUIRED_PACKAGES = {
    "headcap", "headcap.core", "headcap.calib", "headcap.calib.formats", "headcap.capture",
    "headcap.reconstruct", "headcap.reconstruct.head_loaders", "headcap.avatar",
    "headcap.avatar.gaussians", "headcap.commands", "headcap.studio",
}
KERNEL_SOURCES = {
    "headcap/avatar/csrc/gauss_raster/gauss_raster.cpp",
    "headcap/reconstruct/csrc/mesh_raster/mesh_raster.cpp",
}
STRANGER = "not headcap: the unrelated PyPI package that owns this bare name"

RIG = {
    "schema_version": 1, "convention": "opencv", "units": "m",
    "cameras": [
        {"id": f"cam{i:02d}", "width": 640, "height": 480,
         "K": [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]],
         "distortion_model": "opencv", "distortion": [-0.1, 0.01, 0.0, 0.0, 0.0],
         "cam_from_world": [[1.0, 0.0, 0.0, 0.1 * i], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0],
                            [0.0, 0.0, 0.0, 1.0]]}
        for i in range(2)
    ],
}

# Run inside the fresh venv: the strangers first, then every module of the installed wheel.
PROBE = textwrap.dedent("""
    import importlib, json, sys
    import capture, avatar                      # the strangers, bare names
    modules = json.loads(sys.argv[1])
    files = {}
    for name in modules:
        files[name] = importlib.import_module(name).__file__
    import headcap.capture, headcap.avatar
    print(json.dumps({
        "files": files,
        "capture": getattr(sys.modules["capture"], "STRANGER", None),
        "avatar": getattr(sys.modules["avatar"], "STRANGER", None),
        "capture_file": capture.__file__, "avatar_file": avatar.__file__,
        "editable": sorted(m for m in sys.modules if "editable" in m)
                    + [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
        "sys_path": sys.path,
    }))
""")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """`pip wheel` of the repository; setuptools' build/ and egg-info go to tmp_path, not the tree."""
    out, work = tmp_path / "dist", tmp_path / "build"
    work.mkdir()
    extra = work / "extra.cfg"
    extra.write_text(f"[build]\nbuild_base = {work / 'build'}\n[egg_info]\negg_base = {work}\n")
    env = _env()
    env["DIST_EXTRA_CONFIG"] = str(extra)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "-w", str(out), str(ROOT)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("headcap-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _modules_in(names: list[str]) -> tuple[list[str], set[str]]:
    """(every importable module, the packages) named by the wheel's files."""
    modules, packages = [], set()
    for name in names:
        if not (name.startswith("headcap/") and name.endswith(".py")):
            continue
        parts = name[:-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        elif parts[-1] == "__main__":  # runs the CLI when imported
            continue
        modules.append(".".join(parts))
    return sorted(modules), packages


def _third_party_paths(tmp_path: Path) -> list[str]:
    """This interpreter's site-packages and the rest of its path, less the repository's own folders
    (its root, tests/; a venv inside it stays) and tmp_path. The editable install adds no path
    entry: it is a finder that a .pth file loads."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += [p for p in sys.path if p and Path(p).is_dir()]
    keep, tmp = [], tmp_path.resolve()
    for p in paths:
        real = Path(p).resolve()
        if real in (ROOT, tmp) or tmp in real.parents:
            continue
        if ROOT in real.parents and not {"site-packages", "dist-packages"} & set(real.parts):
            continue
        if str(real) not in keep:
            keep.append(str(real))
    return keep


def _site_packages(venv: Path) -> Path:
    found = list(venv.glob("lib/python*/site-packages"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow  # about 15-25 s: a wheel build, a venv, every module imported
def test_wheel_installs_and_runs_on_its_own_beside_the_bare_name_strangers(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        recorded = [line.split(",")[0] for line in zf.read(record).decode().splitlines() if line]
    assert set(recorded) == set(names)
    missing = KERNEL_SOURCES - set(names)
    assert not missing, f"C++ kernel sources missing from the wheel: {sorted(missing)}"
    # nothing but headcap (and its metadata) at the top of the wheel: the stage folders are not bare
    assert {n.split("/")[0] for n in names} == {"headcap", record.split("/")[0]}
    modules, packages = _modules_in(names)
    assert REQUIRED_PACKAGES <= packages, sorted(REQUIRED_PACKAGES - packages)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    # the wheel alone, before this environment becomes visible (its editable headcap would read as
    # "already installed")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", wheel],
         cwd=tmp_path)
    site = _site_packages(venv)
    (site / "zz_parent_env.pth").write_text("".join(f"{p}\n" for p in _third_party_paths(tmp_path)))
    for name in ("capture", "avatar"):
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(f"STRANGER = {STRANGER!r}\n")

    probe = _run([python, "-c", PROBE, json.dumps(modules)], cwd=tmp_path, timeout=300)
    report = json.loads(probe.stdout.splitlines()[-1])
    real_venv = os.path.realpath(venv)
    outside = {m: f for m, f in report["files"].items() if not os.path.realpath(f).startswith(real_venv + os.sep)}
    assert not outside, f"modules imported from outside the fresh venv: {outside}"
    assert set(report["files"]) == set(modules)
    assert report["editable"] == [], report["editable"]
    assert str(ROOT) not in report["sys_path"]
    for name in ("capture", "avatar"):
        assert report[name] == STRANGER, f"`import {name}` did not give the stranger: {report}"
        assert Path(report[f"{name}_file"]).resolve() == (site / name / "__init__.py").resolve()
    assert Path(report["files"]["headcap.capture"]).resolve() == (site / "headcap" / "capture" / "__init__.py").resolve()

    headcap = venv / "bin" / "headcap"
    help_text = _run([headcap, "--help"], cwd=tmp_path).stdout
    for command in ("demo", "synth", "rig", "calibrate", "ingest", "doctor"):
        assert command in help_text, help_text
    rig = tmp_path / "rig.json"
    rig.write_text(json.dumps(RIG))
    shown = _run([headcap, "rig", "show", rig], cwd=tmp_path).stdout
    assert "cam00" in shown and "cam01" in shown and "500.0" in shown, shown
