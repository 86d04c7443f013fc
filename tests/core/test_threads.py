"""headcap.core.threads: thread counts from affinity and cgroup quotas, serial_torch_ops."""
from __future__ import annotations

import os

import torch

from headcap.core import threads


def _cgroup(tmp_path, proc_lines: str, files: dict[str, str]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_lines)
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, root


def test_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path):
    proc, root = _cgroup(tmp_path, "0::/jobs/job7\n", {
        "jobs/job7/cpu.max": "max 100000\n",
        "jobs/cpu.max": "150000 100000\n",
        "cpu.max": "400000 100000\n",
    })
    assert threads.cgroup_cpu_quota(proc, root) == 1.5


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    proc, root = _cgroup(tmp_path, "4:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    })
    assert threads.cgroup_cpu_quota(proc, root) == 0.5
    proc, root = _cgroup(tmp_path / "none", "0::/\n", {"cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_quota(proc, root) is None
    assert threads.cgroup_cpu_quota(tmp_path / "missing", root) is None


def test_available_cpus_respects_affinity():
    n = threads.available_cpus()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_kernel_threads_and_serial_torch_ops():
    assert threads.kernel_threads(3) == 3 and threads.kernel_threads(0) == 1
    before = torch.get_num_threads()
    expected = max(1, min(before, threads.available_cpus()))
    assert threads.kernel_threads() == expected
    with threads.serial_torch_ops() as count:
        assert count == expected
        assert torch.get_num_threads() == 1
        assert threads.kernel_threads() == expected  # the kernels keep their threads
    assert torch.get_num_threads() == before
    assert threads.kernel_threads() == expected
