"""The C++ kernel builder (headcap.core.extension): the cache key covers what the build depends
on, a finished build is imported without rebuilding, a build killed with -9 leaves torch's build
lock that the next build clears (instead of hanging), and two processes building at once both
get the module. Uses a tiny pybind11 module so a build takes seconds."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headcap.core import extension

TINY = """#include <pybind11/pybind11.h>
int add(int a, int b) { return a + b; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add", &add); }
"""


def _loader(source: Path) -> str:
    return ("import sys\n"
            "from headcap.core.extension import load_extension\n"
            f"m = load_extension('tiny', [{str(source)!r}], extra_cflags=('-O0',))\n"
            "print('result', m.add(2, 3), flush=True)\n")


def _start(script: str, ext_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "HEADCAP_EXT_DIR": str(ext_dir)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("a kernel load hung (a stale build lock?)")
    assert proc.returncode == 0, err[-3000:]
    assert "result 5" in out
    return out, err


def _build_dir(ext_dir: Path) -> Path:
    [folder] = [p for p in ext_dir.glob("*/headcap_tiny_*") if p.is_dir()]
    return folder


def test_kill_9_during_a_build_then_two_builders_at_once(tmp_path, monkeypatch, capfd):
    ext_dir = tmp_path / "ext"
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY)
    script = _loader(source)
    # 1. kill -9 the first build once torch has taken its build lock (the compiler is running)
    proc = _start(script, ext_dir)
    deadline = time.monotonic() + 120
    while not list(ext_dir.glob(f"*/headcap_tiny_*/{extension.TORCH_BATON}")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = _build_dir(ext_dir)
    assert (folder / extension.TORCH_BATON).exists() and not (folder / extension.STAMP).exists()
    # 2. two processes at once: one clears the dead builder's lock and builds, the other waits
    first, second = _start(script, ext_dir), _start(script, ext_dir)
    logs = [_finish(first)[1], _finish(second)[1]]
    assert sum("removed the build lock" in log for log in logs) == 1, logs
    assert sum("built C++ kernel 'tiny' in" in log for log in logs) == 1, logs
    assert any("building C++ kernel 'tiny' (first use, ~" in log for log in logs), logs
    stamp = json.loads((folder / extension.STAMP).read_text())
    assert stamp["kernel"] == "tiny" and stamp["seconds"] > 0
    # 3. a later process (another clone: the source at another path) imports it, no build
    clone = tmp_path / "clone" / "tiny.cpp"
    clone.parent.mkdir()
    clone.write_text(TINY)
    monkeypatch.setenv("HEADCAP_EXT_DIR", str(ext_dir))
    before = extension.build_seconds()
    assert extension.load_extension("tiny", [clone], extra_cflags=("-O0",)).add(2, 3) == 5
    err = capfd.readouterr().err
    assert "building" not in err and "built" not in err and extension.build_seconds() == before, err
    assert [p for p in ext_dir.glob("*/headcap_tiny_*") if p.is_dir()] == [folder]


def test_the_key_covers_torch_compiler_python_and_flags(tmp_path, monkeypatch):
    import torch

    source = tmp_path / "k.cpp"
    source.write_text(TINY)

    def digest(cflags=("-O3",)):
        key = extension.build_key([source], (), list(cflags), ["-fopenmp"])
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    base = digest()
    assert digest() == base
    assert digest(("-O3", f"-I{tmp_path}")) == base  # an include path (clone-specific) is not in it
    assert digest(("-O2",)) != base
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert digest() != base
    monkeypatch.undo()
    monkeypatch.setitem(extension._COMPILER, os.environ.get("CXX", "c++"), "/usr/bin/g++-99 | g++ 99.1")
    assert digest() != base
    monkeypatch.undo()
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    assert digest() != base


def test_repeated_loads_skip_hashing_until_a_source_changes(tmp_path, monkeypatch):
    """Kernels call load_extension on every use: the second call returns the module without
    hashing the sources again (build_key not called), and a source edited on disk (size and
    mtime change) is hashed and built again in the same process."""
    monkeypatch.setenv("HEADCAP_EXT_DIR", str(tmp_path / "ext"))
    source = tmp_path / "k.cpp"
    source.write_text(TINY)
    first = extension.load_extension("tiny", [source], extra_cflags=("-O0",))
    assert first.add(2, 3) == 5
    calls = []
    real = extension.build_key
    monkeypatch.setattr(extension, "build_key", lambda *a: calls.append(a) or real(*a))
    assert extension.load_extension("tiny", [str(source)], extra_cflags=("-O0",)) is first
    assert calls == []
    source.write_text(TINY.replace("return a + b;", "return a * b + 0;"))
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = extension.load_extension("tiny", [source], extra_cflags=("-O0",))
    assert len(calls) == 1 and second is not first and second.add(2, 3) == 6


def test_a_torch_build_lock_whose_owner_lives_or_is_unknown_is_not_removed(tmp_path):
    folder = tmp_path / "build"
    folder.mkdir()
    baton = folder / extension.TORCH_BATON
    baton.touch()
    (folder / extension.OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(RuntimeError, match=f"held by pid {os.getpid()}"):
        extension._clear_stale_baton(folder)
    assert baton.exists()
    (folder / extension.OWNER).unlink()
    with pytest.raises(RuntimeError, match="unknown process"):
        extension._clear_stale_baton(folder)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / extension.OWNER).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    extension._clear_stale_baton(folder)
    assert not baton.exists()


def test_a_damaged_finished_build_is_built_again_not_imported(tmp_path, capsys):
    folder = tmp_path / "headcap_x_0"
    folder.mkdir()
    (folder / extension.STAMP).write_text("{}")
    (folder / "headcap_x_0.so").write_bytes(b"not a library")
    assert extension._import_built("headcap_x_0", folder) is None
    assert "rebuilding it" in capsys.readouterr().err
    assert not (folder / extension.STAMP).exists()  # the next load builds it under the build lock
