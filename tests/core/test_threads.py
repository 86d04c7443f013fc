"""headcap.core.threads: thread counts from affinity and cgroup quotas, serial_torch_ops."""
from __future__ import annotations

import os

import pytest
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
    dynamic = threads.set_dynamic(False)  # the count below must not follow the machine's load
    try:
        _check_kernel_threads_and_serial_torch_ops()
    finally:
        threads.set_dynamic(dynamic)


def _check_kernel_threads_and_serial_torch_ops():
    before = torch.get_num_threads()
    expected = max(1, min(before, threads.available_cpus()))
    assert threads.kernel_threads() == expected
    with threads.serial_torch_ops() as count:
        assert count == expected
        assert torch.get_num_threads() == 1
        assert threads.kernel_threads() == expected  # the kernels keep their threads
    assert torch.get_num_threads() == before
    assert threads.kernel_threads() == expected


# ---------------------------------------------------------------- dynamic thread count
STAT = """cpu  {u} 500 {s} 9000 10 0 3 {st} 0 0
cpu0 {u0} 250 {s0} 4500 5 0 1 0 0 0
cpu1 {u1} 250 {s1} 4500 5 0 2 {st} 0 0
intr 12345 0 1
ctxt 999
procs_running 3
"""


def test_parse_proc_stat_leaves_out_nice_and_idle():
    text = STAT.format(u=300, s=100, st=7, u0=100, s0=40, u1=200, s1=60)
    busy, cpus = threads.parse_proc_stat(text, clk_tck=100)
    assert cpus == 2 and busy == (100 + 40 + 0 + 1 + 0 + 200 + 60 + 0 + 2 + 7) / 100
    busy1, cpus1 = threads.parse_proc_stat(text, {1}, clk_tck=100)  # affinity: cpu1 only
    assert cpus1 == 1 and busy1 == (200 + 60 + 2 + 7) / 100
    short = "cpu  10 0 5 100\ncpu0 10 0 5 100\n"  # no irq/softirq/steal columns
    assert threads.parse_proc_stat(short, clk_tck=100) == (0.15, 1)


def test_parse_proc_stat_errors_name_the_file():
    import pytest

    with pytest.raises(ValueError, match="/proc/stat"):
        threads.parse_proc_stat("intr 1 2\n")
    with pytest.raises(ValueError, match="none of the CPUs"):
        threads.parse_proc_stat("cpu  1 0 1 1\ncpu0 1 0 1 1\n", {5})


def test_others_busy_subtracts_own_time():
    a = threads.CpuSample(wall=10.0, busy=100.0, own=5.0, cpus=2)
    b = threads.CpuSample(wall=10.5, busy=101.5, own=6.0, cpus=2)  # 1.5 CPU-s, 1.0 ours
    assert threads.others_busy(a, b) == 1.0
    assert threads.others_busy(a, threads.CpuSample(10.5, 100.5, 6.0, 2)) == 0.0  # never < 0
    assert threads.others_busy(b, b) == 0.0


def test_dynamic_threads_rule():
    # quiet 2-core machine, or only niced jobs (not counted): the full cap
    assert threads.dynamic_threads(2, 2, 0.0) == 2 and threads.dynamic_threads(2, 2, 0.3) == 2
    # one busy neighbour: measured 1.0 while we ran 1 thread, 0.5-0.7 while we ran 2
    for busy in (0.5, 0.67, 1.0, 1.6, 5.0):
        assert threads.dynamic_threads(2, 2, busy) == 1
    assert threads.dynamic_threads(8, 8, 1.0) == 7 and threads.dynamic_threads(4, 8, 1.0) == 4
    assert threads.dynamic_threads(1, 2, 0.0) == 1


class _FakeMachine:
    """Readings of a 2-CPU machine advanced by hand: `run(seconds, others, own)`."""

    def __init__(self):
        self.t, self.busy, self.own, self.reads = 100.0, 0.0, 0.0, 0

    def run(self, seconds: float, others: float, own: float = 0.0):
        self.t += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def read(self):
        self.reads += 1
        return threads.CpuSample(self.t, self.busy, self.own, 2)

    def clock(self):
        return self.t


def test_load_monitor_follows_a_busy_neighbour():
    m = _FakeMachine()
    mon = threads.LoadMonitor(read=m.read, clock=m.clock, window=0.2, max_age=10.0)
    assert mon.threads(2) == 2  # no window yet: the cap
    m.run(0.5, others=0.0, own=2.0)  # quiet, our two threads busy
    assert mon.threads(2) == 2
    m.run(0.5, others=1.0, own=1.0)  # a neighbour appears
    assert mon.threads(2) == 1
    m.run(0.5, others=0.6, own=1.4)  # we got more than our share at 2 threads: still 1
    assert mon.threads(2) == 1
    m.run(0.5, others=0.0, own=1.0)  # it left
    assert mon.threads(2) == 2
    assert mon.decisions == {2: 3, 1: 2}


def test_load_monitor_rereads_at_most_once_per_window_and_forgets_old_readings():
    m = _FakeMachine()
    mon = threads.LoadMonitor(read=m.read, clock=m.clock, window=0.2, max_age=10.0)
    mon.prime()
    m.run(0.3, others=1.0)
    assert mon.threads(2) == 1 and m.reads == 2
    for _ in range(5):  # 5 calls within 0.1 s: the cached decision, no reading
        m.run(0.02, others=0.0)
        assert mon.threads(2) == 1
    assert m.reads == 2
    m.run(60.0, others=1.0)  # a reading a minute old says nothing about now: the cap
    assert mon.threads(2) == 2 and m.reads == 3
    m.run(0.3, others=1.0)
    assert mon.threads(2) == 1


def test_load_monitor_after_fork_starts_a_new_window():
    m = _FakeMachine()
    mon = threads.LoadMonitor(read=m.read, clock=m.clock)
    mon.prime()
    m.run(2.0, others=1.0, own=1.0)
    assert mon.threads(2) == 1
    m.own = 0.0  # own CPU time going back (a forked child's starts again from zero)
    m.run(0.5, others=0.0, own=1.0)
    assert mon.threads(2) == 2 and mon.busy_elsewhere() == (None, 2)
    m.run(0.5, others=1.0, own=1.0)
    assert mon.threads(2) == 1


def test_load_monitor_without_proc_stat_keeps_the_cap():
    mon = threads.LoadMonitor(read=lambda: None, clock=lambda: 0.0)
    assert mon.threads(2) == 2 and mon.busy_elsewhere() == (None, 0)


@pytest.fixture
def machine(monkeypatch):
    """A fake 2-CPU machine read by a primed LoadMonitor, dynamic counts on, torch at 2 threads;
    the previous settings restored after the test."""
    m = _FakeMachine()
    mon = threads.LoadMonitor(read=m.read, clock=m.clock)
    monkeypatch.setattr(threads, "LOAD_MONITOR", mon)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    previous = torch.get_num_threads()
    dynamic = threads.set_dynamic(True)
    try:
        torch.set_num_threads(2)
        mon.prime()
        yield m
    finally:
        threads.set_dynamic(dynamic)
        torch.set_num_threads(previous)


def test_kernel_threads_is_dynamic_only_for_its_default(machine):
    m = machine
    m.run(0.5, others=1.0)
    assert threads.kernel_threads() == 1
    assert threads.kernel_threads(2) == 2  # explicit: as given
    assert threads.kernel_threads(keep_under_load=True) == 2  # long calls keep the cap
    with threads.serial_torch_ops() as cap:
        assert cap == 2 and threads.kernel_threads() == 1  # the cap, lowered per call
        m.run(0.5, others=0.0, own=1.0)
        assert threads.kernel_threads() == 2
    threads.set_dynamic(False)
    m.run(0.5, others=1.0)
    assert threads.kernel_threads() == 2


def test_read_cpu_sample_on_this_machine():
    sample = threads.read_cpu_sample()
    if sample is None:  # not Linux
        return
    assert 1 <= sample.cpus <= (os.cpu_count() or 1)
    assert sample.busy > 0 and sample.own >= 0


def test_kernel_torch_threads_lowers_never_raises(machine):
    with threads.kernel_torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)  # inside serial_torch_ops: stays at one thread
    with threads.kernel_torch_threads(2) as n:
        assert n == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    machine.run(0.5, others=1.0)  # a busy neighbour: torch's ops on one thread too
    with threads.dynamic_torch_threads() as n:
        assert n == 1 and torch.get_num_threads() == 1
    machine.run(0.5, others=0.0)
    with threads.dynamic_torch_threads() as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_mesh_rasterizer_keeps_its_threads_only_for_large_images(machine):
    from headcap.reconstruct.rasterize_mesh import kernel_thread_count

    machine.run(0.5, others=1.0)
    assert kernel_thread_count(1024, 1024) == 2  # two long regions: the second thread pays
    assert kernel_thread_count(256, 256) == 1
