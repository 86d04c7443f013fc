"""`headcap doctor`: the report is complete JSON and names the SIMD build the kernels get."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _doctor(**env):
    proc = subprocess.run([sys.executable, "-m", "headcap.cli", "doctor", "--json"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_doctor_reports_toolchain_and_simd_build():
    report = _doctor()
    for key in ("python", "torch", "numpy", "opencv", "g++", "openmp", "cpp_extensions",
                "cpu_simd", "gsplat"):
        assert key in report, key
    import torch

    from headcap.core.extension import simd_flags

    lanes = 8 if simd_flags() else 4
    assert torch.backends.cpu.get_cpu_capability() in report["cpu_simd"]
    assert f"({lanes} float lanes)" in report["cpu_simd"]


def test_doctor_follows_the_capability_override():
    report = _doctor(ATEN_CPU_CAPABILITY="default")
    assert "baseline flags (4 float lanes)" in report["cpu_simd"]
