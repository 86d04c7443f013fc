"""How many threads headcap's C++ kernels use.

`torch.get_num_threads()` starts at the machine's core count; inside a container with a CPU
quota, or a process pinned to a few cores (taskset, Ray, Slurm), that is more threads than the
process can run at once, and the extra threads only wait for a turn. `available_cpus()` counts
what the process may really use: its affinity mask (`os.sched_getaffinity`), capped by the cgroup
CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, the tightest along
the process's cgroup path), rounded up, at least 1. `kernel_threads()` is what the kernels use:
an explicit count if given, else `min(torch.get_num_threads(), available_cpus())`; it never
changes torch's or the user's settings. `serial_torch_ops()` runs an optimisation loop's small
torch ops on one thread while the kernels keep theirs (see its docstring for why).

The kernels themselves (core/csrc/hc_parallel.h) wait passively and hand out work dynamically,
so a thread count above the free cores costs little; this keeps it from being far above.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Iterator

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _quota_v2(path: Path) -> float | None:
    try:
        quota, period = path.joinpath("cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
    except ValueError:
        return None


def _quota_v1(path: Path) -> float | None:
    try:
        quota = int(path.joinpath("cpu.cfs_quota_us").read_text())
        period = int(path.joinpath("cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"),
                     root: Path = _CGROUP_ROOT) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) on this process's cgroup path, or None."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # cgroup v2 unified hierarchy
            base, read = root, _quota_v2
        elif "cpu" in controllers.split(","):
            base = next((root / d for d in (controllers, "cpu,cpuacct", "cpu")
                         if (root / d).is_dir()), None)
            if base is None:
                continue
            read = _quota_v1
        else:
            continue
        # walk from the process's own cgroup up to the mount root: any level may set a quota
        path = base / rel.lstrip("/")
        while True:
            q = read(path)
            if q is not None:
                quotas.append(q)
            if path == base or base not in path.parents:
                break
            path = path.parent
    return min(quotas) if quotas else None


@lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process can run on at once: affinity mask, capped by the cgroup CPU quota."""
    count = _affinity_count()
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return count


def kernel_threads(requested: int | None = None) -> int:
    """Threads for one call of a headcap C++ kernel: `requested` if given (at least 1), else
    the count set by an enclosing `serial_torch_ops`, else torch's intra-op thread count capped
    by `available_cpus()`."""
    if requested is not None:
        return max(1, int(requested))
    override = _KERNEL_THREADS.get()
    if override is not None:
        return override
    import torch

    return max(1, min(torch.get_num_threads(), available_cpus()))


_KERNEL_THREADS = ContextVar("headcap_kernel_threads", default=None)


@contextmanager
def serial_torch_ops(kernel: int | None = None) -> Iterator[int]:
    """Inside: torch's own ops run on one thread, headcap's kernels on `kernel` threads
    (default: `kernel_threads()` as it was on entry); yields that count.

    For optimisation loops over small tensors (a static fit: Adam, losses, activations on
    ~10^4-10^5 elements). Each of those ops opens a parallel region of torch's OpenMP pool, whose
    threads spin-wait at its end; with one other busy process on the machine a spinning thread
    waits for a descheduled one for a whole time slice, hundreds of times per step (the demo's
    fit fell from 57 to 4-9 it/s at 2 threads, 30-38 at 1). headcap's kernels wait passively
    (core/csrc/hc_parallel.h) and keep their threads. torch's count is restored on exit; it is
    per calling thread (OpenMP), so other Python threads are not affected.
    """
    import torch

    count = kernel_threads(kernel)
    previous = torch.get_num_threads()
    token = _KERNEL_THREADS.set(count)
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield count
    finally:
        if previous != 1:
            torch.set_num_threads(previous)
        _KERNEL_THREADS.reset(token)


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """torch's own ops on `count` threads inside, the previous count restored on exit (per
    calling thread, as torch's OpenMP setting is)."""
    import torch

    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
