"""`headcap doctor`: what this machine offers headcap (versions, toolchain, optional backends).

Cheap by design: it imports nothing heavy beyond torch/numpy/cv2 and compiles nothing.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import shutil
import subprocess
import sys

OPTIONAL = ("gsplat", "pycolmap", "open3d", "pytorch3d", "tinycudann", "ray")


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="report versions, the C++ toolchain and optional backends")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=_run)


def _version(dist: str, module: str | None = None) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        if module and importlib.util.find_spec(module) is not None:
            return "present (version unknown)"
        return None


def _tool(name: str, *args: str) -> str | None:
    exe = shutil.which(name)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{exe} (does not run: {exc})"
    line = (out.stdout or out.stderr).strip().splitlines()
    return f"{exe}: {line[0] if line else 'no version output'}"


def collect() -> dict:
    import cv2
    import numpy
    import torch

    report = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "cuda": (f"{torch.version.cuda}, {torch.cuda.device_count()} device(s): "
                 + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                 if torch.cuda.is_available() else None),
        "g++": _tool("g++", "--version"),
        "ninja": _tool("ninja", "--version"),
        "nvcc": _tool("nvcc", "--version"),
        "openmp": torch.backends.openmp.is_available(),
    }
    report["cpp_extensions"] = bool(report["g++"] and report["ninja"])
    from headcap.core.extension import simd_flags

    # What the Gaussian kernel is built with here: AVX2 (8 lanes) or the portable 4-lane build.
    flags = simd_flags()
    report["cpu_simd"] = (f"torch capability {torch.backends.cpu.get_cpu_capability()}; Gaussian "
                          f"kernel built with {' '.join(flags) if flags else 'baseline flags'} "
                          f"({8 if flags else 4} float lanes)")
    for name in OPTIONAL:
        dist = {"tinycudann": "tinycudann", "pytorch3d": "pytorch3d"}.get(name, name)
        report[name] = _version(dist, name)
    return report


def _run(args) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="headcap doctor")
    table.add_column("item")
    table.add_column("status")
    for key, value in report.items():
        if value is None or value is False:
            shown = "[yellow]absent[/yellow]"
        elif value is True:
            shown = "[green]yes[/green]"
        else:
            shown = str(value).splitlines()[0]
        table.add_row(key, shown)
    Console().print(table)
    if not report["cpp_extensions"]:
        print("C++ kernels need g++ and ninja; without them headcap falls back to its pure-torch reference ops.")
    return 0
