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


def load_extension(name: str, sources: list[Path], extra_cflags: tuple[str, ...] = (),
                   headers: tuple[Path, ...] = ()):
    """Compile (once) and import a C++ torch extension built from `sources`.

    The module name carries a hash of the sources, the `headers` they include and the flags, so
    an edited kernel or header is rebuilt instead of a stale one being loaded.
    """
    sources = [Path(s) for s in sources]
    digest = hashlib.sha1()
    for src in [*sources, *map(Path, headers)]:
        digest.update(src.read_bytes())
    flags = ["-O3", "-fopenmp", "-std=c++17", *extra_cflags]
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
