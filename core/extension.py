"""Build-on-first-use loader for headcap's C++ kernels.

Every kernel package (reconstruct, avatar) keeps its sources in `<package>/csrc/` and calls
`load_extension` once; the compiled module is cached under `HEADCAP_EXT_DIR` (default
`~/.cache/headcap/ext/<torch version>`), so only the first use pays the ~30 s compile.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

_LOCK = threading.Lock()
_CACHE: dict[str, object] = {}


def extension_dir() -> Path:
    import torch

    root = os.environ.get("HEADCAP_EXT_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "headcap" / "ext"
    return base / f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info[0]}{sys.version_info[1]}"


def simd_flags() -> list[str]:
    """Compiler flags for the vector width this CPU runs: `-mavx2 -mfma` where torch's own
    dispatch finds AVX2 (or AVX-512) on an x86-64 CPU, else none (SSE2 / NEON baseline).

    torch decides (`torch.backends.cpu.get_cpu_capability()`, which honours the
    ATEN_CPU_CAPABILITY override, e.g. `default` to build the baseline kernel).
    """
    import platform

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


def load_extension(name: str, sources: list[Path], extra_cflags: tuple[str, ...] = (),
                   headers: tuple[Path, ...] = (), simd: bool = False):
    """Compile (once) and import a C++ torch extension built from `sources`.

    The module name carries a hash of the sources, the `headers` they include and the flags, so
    an edited kernel or header is rebuilt instead of a stale one being loaded. simd=True adds
    `simd_flags()`; as they are part of the hash, a cache shared by machines of different CPU
    generations holds one build per instruction set instead of handing AVX2 code to a CPU
    without it.
    """
    sources = [Path(s) for s in sources]
    digest = hashlib.sha1()
    for src in [*sources, *map(Path, headers)]:
        digest.update(src.read_bytes())
    flags = ["-O3", "-fopenmp", "-std=c++17", *extra_cflags, *(simd_flags() if simd else [])]
    digest.update(" ".join(flags).encode())
    full_name = f"headcap_{name}_{digest.hexdigest()[:12]}"
    with _LOCK:
        if full_name in _CACHE:
            return _CACHE[full_name]
        from torch.utils import cpp_extension

        build_dir = extension_dir() / full_name
        build_dir.mkdir(parents=True, exist_ok=True)
        built = any(build_dir.glob("*.so"))
        if not built:
            print(f"headcap: building C++ kernel '{name}' (first use only, ~30 s) in {build_dir}",
                  file=sys.stderr, flush=True)
        try:
            module = cpp_extension.load(
                name=full_name,
                sources=[str(s) for s in sources],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as exc:  # surface the compiler output instead of hiding it
            raise RuntimeError(
                f"headcap: failed to build C++ kernel '{name}' from {[str(s) for s in sources]}: {exc}"
            ) from exc
        _CACHE[full_name] = module
        return module
