"""Build-on-first-use loader for headcap's C++ kernels.

Every kernel package (reconstruct, avatar) keeps its sources in `<package>/csrc/` and calls
`load_extension` once; the compiled module is cached under `HEADCAP_EXT_DIR` (default
`~/.cache/headcap/ext`), in a folder named by a hash of everything the build depends on, so only
the first use pays the compile and no later process, venv or clone rebuilds it:

- the key: the sources and headers (content), the compiler and linker flags, the compiler's
  identity (`$CXX` or `c++`, resolved, and its `--version`), torch (version, git revision,
  C++11 ABI), Python (cache tag, extension-module suffix) and the machine. Two venvs with
  different torch (or compilers) get different folders; the same build inputs find their folder.
- a finished build leaves `headcap_build.json` beside the module; a folder that holds it is
  imported directly (no ninja, no torch build lock), so another clone or venv never rebuilds it.
- a build runs under an flock on `<folder>.lock` (a second process waits, then imports), after
  writing its owner (pid, host) to `<folder>/owner.json`. torch's own build lock
  (`<folder>/lock`, which torch waits on forever) left by a builder that was killed is removed
  when its recorded owner is dead on this host; any other leftover stops with a message
  instead of hanging.
- a build says that it is building (with the expected time, from earlier builds of the kernel)
  and how long it took; `build_seconds()` is the time this process spent building, which the
  pipeline runner reports apart from a stage's own time.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from headcap.core.fileio import read_json_object_or_none

_LOCK = threading.Lock()
_CACHE: dict[str, object] = {}
_KEYS: dict[tuple, tuple[tuple, str]] = {}  # (name, files, flags) -> (the files' stat, module name)
_BUILD_SECONDS = 0.0
STAMP = "headcap_build.json"
OWNER = "owner.json"
TORCH_BATON = "lock"  # torch.utils.cpp_extension's FileBaton in the build folder
_DEFAULT_ESTIMATE_S = 60.0


def extension_dir() -> Path:
    """The cache folder of this torch and Python (each build is a subfolder named by its key)."""
    import torch

    root = os.environ.get("HEADCAP_EXT_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "headcap" / "ext"
    return base / f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info[0]}{sys.version_info[1]}"


def build_seconds() -> float:
    """Seconds this process has spent compiling kernels (or waiting for another process's
    build of one) so far."""
    return _BUILD_SECONDS


def simd_flags() -> list[str]:
    """Compiler flags for the vector width this CPU runs: `-mavx2 -mfma` where torch's own
    dispatch finds AVX2 (or AVX-512) on an x86-64 CPU, else none (SSE2 / NEON baseline).

    torch decides (`torch.backends.cpu.get_cpu_capability()`, which honours the
    ATEN_CPU_CAPABILITY override, e.g. `default` to build the baseline kernel).
    """
    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


_COMPILER: dict[str, str] = {}


def compiler_identity() -> str:
    """The C++ compiler torch's build would run (`$CXX` or `c++`): its resolved path and the
    first line of its `--version` (cached per process)."""
    cxx = os.environ.get("CXX", "c++")
    if cxx not in _COMPILER:
        path = shutil.which(cxx.split()[0]) if cxx.strip() else None
        resolved = os.path.realpath(path) if path else cxx
        try:
            version = subprocess.run([*cxx.split(), "--version"], capture_output=True, text=True,
                                     timeout=30).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            version = "unknown"
        _COMPILER[cxx] = f"{resolved} | {version}"
    return _COMPILER[cxx]


def build_key(sources: list[Path], headers: tuple[Path, ...], cflags: list[str], ldflags: list[str]) -> dict:
    """Everything a build depends on (the folder name is a hash of it)."""
    import torch

    return {
        "sources": [[Path(s).name, hashlib.sha256(Path(s).read_bytes()).hexdigest()] for s in sources],
        "headers": [[Path(h).name, hashlib.sha256(Path(h).read_bytes()).hexdigest()] for h in headers],
        "cflags": [f for f in cflags if not f.startswith("-I")],
        "ldflags": list(ldflags),
        "compiler": compiler_identity(),
        "torch": [torch.__version__, getattr(torch.version, "git_version", ""),
                  bool(torch._C._GLIBCXX_USE_CXX11_ABI)],
        "python": [sys.implementation.cache_tag, sysconfig.get_config_var("EXT_SUFFIX") or "", sys.abiflags],
        "machine": [platform.system(), platform.machine()],
    }


def load_extension(name: str, sources: list[Path], extra_cflags: tuple[str, ...] = (),
                   headers: tuple[Path, ...] = (), simd: bool = False):
    """Compile (once) and import a C++ torch extension built from `sources`.

    The module's name and folder carry a hash of `build_key` (sources, the `headers` they
    include, flags, compiler, torch, Python), so an edited kernel or header is rebuilt instead of
    a stale one being loaded, and a finished build is never rebuilt. simd=True adds
    `simd_flags()`; as they are part of the key, a cache shared by machines of different CPU
    generations holds one build per instruction set instead of handing AVX2 code to a CPU
    without it. (`-I` flags are left out of the key: the headers' content is in it.)
    """
    global _BUILD_SECONDS
    # kernels call this on every use: while no source or header changed on disk (same size and
    # mtime), the module found last time is returned without hashing the files again
    files = tuple(map(os.fspath, (*sources, *headers)))
    memo = (name, files, tuple(extra_cflags), simd)
    stat = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, files))
    known = _KEYS.get(memo)
    if known is not None and known[0] == stat and known[1] in _CACHE:
        return _CACHE[known[1]]
    sources = [Path(s) for s in sources]
    cflags = ["-O3", "-fopenmp", "-std=c++17", *extra_cflags, *(simd_flags() if simd else [])]
    ldflags = ["-fopenmp"]
    key = build_key(sources, tuple(map(Path, headers)), cflags, ldflags)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    full_name = f"headcap_{name}_{digest[:16]}"
    with _LOCK:
        _KEYS[memo] = (stat, full_name)
        if full_name in _CACHE:
            return _CACHE[full_name]
        build_dir = extension_dir() / full_name
        module = _import_built(full_name, build_dir)
        if module is None:
            tic = time.perf_counter()
            build_dir.mkdir(parents=True, exist_ok=True)
            try:
                with _BuildLock(build_dir.with_name(build_dir.name + ".lock"), name):
                    module = _import_built(full_name, build_dir)  # another process built it meanwhile
                    if module is None:
                        module = _build(name, full_name, sources, cflags, ldflags, build_dir, key)
            finally:
                _BUILD_SECONDS += time.perf_counter() - tic
        _CACHE[full_name] = module
        return module


def _import_built(full_name: str, build_dir: Path):
    """The module of a finished build (its stamp and library present), else None."""
    library = build_dir / f"{full_name}.so"
    if not ((build_dir / STAMP).is_file() and library.is_file()):
        return None
    import torch  # noqa: F401 - the module links against libtorch

    spec = importlib.util.spec_from_file_location(full_name, library)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:  # a damaged library: build it again
        print(f"headcap: {library} does not load ({exc}); rebuilding it", file=sys.stderr, flush=True)
        (build_dir / STAMP).unlink(missing_ok=True)
        library.unlink(missing_ok=True)
        return None
    return module


def _build(name, full_name, sources, cflags, ldflags, build_dir: Path, key: dict):
    from torch.utils import cpp_extension

    _clear_stale_baton(build_dir)
    _write_json(build_dir / OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"headcap: building C++ kernel '{name}' (first use, ~{_estimate(name):.0f} s) in {build_dir}",
          file=sys.stderr, flush=True)
    tic = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=full_name,
            sources=[str(s) for s in sources],
            extra_cflags=cflags,
            extra_ldflags=ldflags,
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # surface the compiler output instead of hiding it
        raise RuntimeError(
            f"headcap: failed to build C++ kernel '{name}' from {[str(s) for s in sources]}: {exc}"
        ) from exc
    seconds = time.perf_counter() - tic
    _write_json(build_dir / STAMP, {"kernel": name, "seconds": round(seconds, 2), "key": key,
                                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    (build_dir / OWNER).unlink(missing_ok=True)
    print(f"headcap: built C++ kernel '{name}' in {seconds:.1f} s", file=sys.stderr, flush=True)
    return module


def _clear_stale_baton(build_dir: Path) -> None:
    """Remove torch's build lock left by a builder that died (we hold the build flock, so no
    headcap process is building here); refuse, instead of hanging, when its owner is unknown."""
    baton = build_dir / TORCH_BATON
    if not baton.exists():
        return
    owner = read_json_object_or_none(build_dir / OWNER) or {}
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        baton.unlink(missing_ok=True)
        print(f"headcap: removed the build lock {baton} left by pid {pid} on {host}, which died while building",
              file=sys.stderr, flush=True)
        return
    who = f"pid {pid} on {host}" if pid else "an unknown process"
    raise RuntimeError(f"headcap: {baton} is held by {who}, which headcap cannot see finishing; "
                       "if no build is running, delete that file and retry")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _estimate(name: str) -> float:
    """Seconds the last build of this kernel took on this machine (any key), else a default."""
    stamps = []
    base = extension_dir().parent
    for stamp in base.glob(f"*/headcap_{name}_*/{STAMP}"):
        data = read_json_object_or_none(stamp)
        if data and isinstance(data.get("seconds"), (int, float)):
            stamps.append((stamp.stat().st_mtime, float(data["seconds"])))
    return max(stamps)[1] if stamps else _DEFAULT_ESTIMATE_S


class _BuildLock:
    """A blocking flock on `path`; says whom it waits for."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            print(f"headcap: waiting for {holder}, which is building C++ kernel '{self.name}'",
                  file=sys.stderr, flush=True)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
