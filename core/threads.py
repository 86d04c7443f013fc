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

Dynamic thread count (like OpenMP's OMP_DYNAMIC, but headcap's own and per call): where the
count is not given explicitly, `kernel_threads()` also subtracts the CPUs that other processes
keep busy right now (`LoadMonitor`: /proc/stat over the last >= 200 ms, minus this process's
own CPU time). With one busy neighbour on a 2-core machine a 2-thread call then runs on 1
thread: every join at the end of a kernel phase otherwise waits for whichever of the three
runnable threads the OS has descheduled. Work of niced processes (`nice 19` batch jobs) is not
counted, as the scheduler gives it next to nothing against ours. `HEADCAP_DYNAMIC_THREADS=0` or
`set_dynamic(False)` turns it off; an explicit `n_threads` is always used as given. The kernel
wrappers run torch's own ops in a call (output allocation, fills, copies) on no more threads
than the kernel (`kernel_torch_threads`): torch's OpenMP pool spins at the end of each of them.
"""
from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

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


def kernel_threads(requested: int | None = None, *, keep_under_load: bool = False) -> int:
    """Threads for one call of a headcap C++ kernel: `requested` if given (at least 1, used as
    given), else the count set by an enclosing `serial_torch_ops` or torch's intra-op thread count
    capped by `available_cpus()`, lowered to the CPUs other processes leave free
    (`dynamic_threads`) unless dynamic counts are off (`set_dynamic`) or the caller says the
    call is long enough to gain from its threads beside busy processes (`keep_under_load`: few
    parallel regions, each many time slices long, so that a join's wait for a descheduled
    thread is small against the CPU share the extra threads win)."""
    if requested is not None:
        return max(1, int(requested))
    cap = thread_cap()
    if cap <= 1 or keep_under_load or not dynamic_enabled():
        return cap
    return LOAD_MONITOR.threads(cap)


def thread_cap() -> int:
    """The most threads a kernel call may use: the count set by an enclosing `serial_torch_ops`,
    else torch's intra-op thread count capped by `available_cpus()`."""
    override = _KERNEL_THREADS.get()
    if override is not None:
        return override
    import torch

    return max(1, min(torch.get_num_threads(), available_cpus()))


@contextmanager
def kernel_torch_threads(count: int) -> Iterator[int]:
    """torch's own ops inside on at most `count` threads (a kernel call's count: the tensors it
    allocates and fills, the copies around it), torch's count restored on exit. Never raises
    torch's count: a loop in `serial_torch_ops` keeps its one thread."""
    import torch

    with torch_threads(max(1, min(torch.get_num_threads(), int(count)))) as n:
        yield n


@contextmanager
def dynamic_torch_threads() -> Iterator[int]:
    """torch's own ops inside on no more threads than `kernel_threads()` gives now: with a busy
    neighbour, 1 (torch's OpenMP pool spin-waits at the end of every parallel op, the collapse
    `serial_torch_ops` describes); on a quiet machine, torch's count unchanged."""
    with kernel_torch_threads(kernel_threads()) as n:
        yield n


# ---------------------------------------------------------------- dynamic thread count
@dataclass(frozen=True)
class CpuSample:
    """One reading: `wall` (s, monotonic), `busy` (s of CPU time that non-niced work used on the
    CPUs this process may run on, since boot: user + system + irq + softirq + steal), `own` (s of
    this process's CPU time counted in `busy`), `cpus` (how many CPUs `busy` covers)."""

    wall: float
    busy: float
    own: float
    cpus: int


def parse_proc_stat(text: str, cpus: set[int] | None = None, clk_tck: int = 100) -> tuple[float, int]:
    """(busy seconds, CPU count) from /proc/stat text: user + system + irq + softirq + steal
    summed over the `cpuN` lines of `cpus` (all CPUs if None), niced (`nice`) and idle time left
    out. Raises ValueError if no line matches."""
    busy, count, total = 0, 0, None
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        fields = line.split()
        values = [int(v) for v in fields[1:9]]
        values += [0] * (8 - len(values))  # kernels before 2.6.11 have no steal column
        user, _nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
        ticks = user + system + irq + softirq + steal
        if fields[0] == "cpu":
            total = ticks
            continue
        if cpus is None or int(fields[0][3:]) in cpus:
            busy += ticks
            count += 1
    if count == 0:
        if total is None:
            raise ValueError("/proc/stat: no cpu lines")
        raise ValueError(f"/proc/stat: none of the CPUs {sorted(cpus or ())} listed")
    return busy / clk_tck, count


def read_cpu_sample(stat_path: Path = Path("/proc/stat")) -> CpuSample | None:
    """This machine's `CpuSample` now, or None where /proc/stat cannot be read (not Linux)."""
    try:
        text = stat_path.read_text()
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = None
        busy, count = parse_proc_stat(text, cpus, os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None
    # A niced process's user time is counted as `nice`, not `user`, in /proc/stat.
    own = time.process_time() if os.getpriority(os.PRIO_PROCESS, 0) <= 0 else os.times().system
    return CpuSample(time.monotonic(), busy, own, count)


def others_busy(before: CpuSample, after: CpuSample) -> float:
    """CPUs other non-niced processes kept busy between two samples (0 if none elapsed)."""
    dt = after.wall - before.wall
    if dt <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / dt)


def dynamic_threads(cap: int, cpus: int, busy_elsewhere: float, slack: float = 0.35) -> int:
    """Threads for a call allowed `cap`: the CPUs left free by `busy_elsewhere` of `cpus`,
    rounded up from `slack` of a CPU, at least 1 and at most `cap`.

    `slack` is below one half because the busy time is what the others got, not what they
    wanted: while this process ran 2 threads beside one busy process on 2 cores, that process
    got 0.5-0.7 of a CPU (measured), so a CPU counts as taken from 1 - slack = 0.65 of it."""
    free = cpus - busy_elsewhere
    return max(1, min(cap, math.floor(free + slack)))


class LoadMonitor:
    """How busy the CPUs are with other processes' work, re-read at most every `window` s.

    `threads(cap)` is `dynamic_threads` over the busy time since the previous reading (/proc/stat
    counts in 10 ms ticks, so a window much shorter than 0.2 s is mostly rounding); a reading
    older than `max_age` s says little about now, so the call after a long pause gets `cap` and
    starts a new window. `prime()` takes a first reading (at import, so that a process's first
    kernel call already has a window). `read` and `clock` are injectable (tests)."""

    def __init__(self, read: Callable[[], CpuSample | None] = read_cpu_sample,
                 clock: Callable[[], float] = time.monotonic, window: float = 0.2,
                 max_age: float = 10.0, slack: float = 0.35):
        self.read, self.clock = read, clock
        self.window, self.max_age, self.slack = window, max_age, slack
        self._lock = threading.Lock()
        self._last: CpuSample | None = None
        self._busy: float | None = None  # CPUs busy elsewhere over the last window
        self._pid = os.getpid()
        self.decisions: dict[int, int] = {}  # thread count -> calls (benchmarks report it)

    def prime(self) -> None:
        with self._lock:
            if self._last is None:
                self._last = self.read()

    def busy_elsewhere(self) -> tuple[float | None, int]:
        """(CPUs busy with others' work over the latest window or None, CPUs covered)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's reading holds its own time
                self._pid, self._last, self._busy = os.getpid(), None, None
            last = self._last
            if last is not None and self.clock() - last.wall < self.window:
                return self._busy, last.cpus
            sample = self.read()
            if sample is None:
                return None, 0
            if (last is None or sample.wall - last.wall > self.max_age or sample.cpus != last.cpus
                    or sample.own < last.own):
                self._busy = None
            else:
                self._busy = others_busy(last, sample)
            self._last = sample
            return self._busy, sample.cpus

    def threads(self, cap: int) -> int:
        busy, cpus = self.busy_elsewhere()
        n = cap if busy is None else dynamic_threads(cap, cpus, busy, self.slack)
        self.decisions[n] = self.decisions.get(n, 0) + 1
        return n


LOAD_MONITOR = LoadMonitor()
LOAD_MONITOR.prime()
_DYNAMIC = [os.environ.get("HEADCAP_DYNAMIC_THREADS", "1").strip().lower() not in ("0", "false", "no", "off")]


def dynamic_enabled() -> bool:
    """Whether `kernel_threads()` lowers its default count to the free CPUs (default: yes;
    `HEADCAP_DYNAMIC_THREADS=0` at import turns it off)."""
    return _DYNAMIC[0]


def set_dynamic(enabled: bool) -> bool:
    """Turns the dynamic thread count on or off for this process; returns the previous setting."""
    previous = _DYNAMIC[0]
    _DYNAMIC[0] = bool(enabled)
    return previous


_KERNEL_THREADS = ContextVar("headcap_kernel_threads", default=None)


@contextmanager
def serial_torch_ops(kernel: int | None = None) -> Iterator[int]:
    """Inside: torch's own ops run on one thread, headcap's kernels on up to `kernel` threads
    (default: torch's count capped by `available_cpus()` as on entry; each call still lowered to
    the free CPUs, see `kernel_threads`); yields that cap.

    For optimisation loops over small tensors (a static fit: Adam, losses, activations on
    ~10^4-10^5 elements). Each of those ops opens a parallel region of torch's OpenMP pool, whose
    threads spin-wait at its end; with one other busy process on the machine a spinning thread
    waits for a descheduled one for a whole time slice, hundreds of times per step (the demo's
    fit fell from 57 to 4-9 it/s at 2 threads, 30-38 at 1). headcap's kernels wait passively
    (core/csrc/hc_parallel.h) and keep their threads. torch's count is restored on exit; it is
    per calling thread (OpenMP), so other Python threads are not affected.
    """
    import torch

    count = max(1, int(kernel)) if kernel is not None else thread_cap()
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
