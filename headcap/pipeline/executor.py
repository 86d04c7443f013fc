"""Where per-frame and per-session work runs: in this process, in local worker processes, or on a
Ray cluster. A stage asks for `ctx.map(fn, items)`; `headcap batch` maps whole sessions. The
three executors give the same results for the same work: `fn` is a module-level function of one
picklable item, results come back in item order, and every worker computes with the same thread
count and seeds, so the artefacts do not depend on where they were computed.

    serial                      one item after another in this process (default)
    local  --workers N          N worker processes on this machine (spawned, not forked: torch
                                and OpenMP state do not survive a fork), threads split between them
    ray    --address ADDR       Ray tasks on a cluster (`ray start --head` on one machine, `ray start
                                --address ...` on the others); ADDR 'local' starts a private cluster
                                of N CPUs for this run. Ray is an extra: pip install "headcap[ray]".

A failing item raises `WorkError` naming the item and the original error, after the items
already running have finished (nothing is left running behind the caller's back).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

EXECUTORS = ("serial", "local", "ray")


class WorkError(RuntimeError):
    """One item of a map failed: names the item and keeps the original error as __cause__."""

    def __init__(self, label: str, error: BaseException):
        super().__init__(f"{label}: {type(error).__name__}: {error}")
        self.label = label
        self.error = error


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "serial"
    """serial | local | ray."""
    workers: int = 2
    """Worker processes (local) or CPUs of a private Ray cluster (ray with address 'local')."""
    address: str = "local"
    """Ray cluster address (ray://host:10001 or host:6379), or 'local' for a private cluster."""
    threads_per_worker: int = 1
    """Torch/OpenMP threads in each worker (workers x threads should not exceed the cores)."""

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor: kind {self.kind!r} not in {list(EXECUTORS)}")
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise ValueError(f"executor: {name} must be an integer in 1..1024, got {value!r}")


def _call(fn: Callable, item, threads: int):
    """Run one item in a worker with a fixed thread count (same numerics on every worker)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(item)


class Executor:
    kind = "serial"

    def map(self, fn: Callable, items: Sequence, labels: Sequence[str] | None = None,
            on_done: Callable[[int, int], None] | None = None) -> list:
        """[fn(item) for item in items], in order; on_done(done, total) after each item."""
        items = list(items)
        labels = list(labels) if labels is not None else [repr(i)[:80] for i in items]
        out = []
        for k, item in enumerate(items):
            try:
                out.append(fn(item))
            except Exception as exc:  # noqa: BLE001 - re-raised with the item named
                raise WorkError(labels[k], exc) from exc
            if on_done:
                on_done(k + 1, len(items))
        return out

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        return {"kind": self.kind}


class LocalExecutor(Executor):
    """Worker processes on this machine (spawn context), created on first use, reused."""

    kind = "local"

    def __init__(self, workers: int, threads_per_worker: int = 1):
        self.workers, self.threads = workers, threads_per_worker
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map(self, fn, items, labels=None, on_done=None) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        items = list(items)
        labels = list(labels) if labels is not None else [repr(i)[:80] for i in items]
        if not items:
            return []
        pool = self._get_pool()
        futures = [pool.submit(_call, fn, item, self.threads) for item in items]
        done_count = 0
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            done_count += len(done)
            if on_done:
                on_done(done_count, len(items))
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for f in pending:
                    f.cancel()
                wait(pending)
                first = min(failed, key=futures.index)
                exc = first.exception()
                raise WorkError(labels[futures.index(first)], exc) from exc
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> dict:
        return {"kind": self.kind, "workers": self.workers, "threads_per_worker": self.threads}


class RayExecutor(Executor):
    """Ray tasks; a private local cluster when address is 'local' (shut down on close)."""

    kind = "ray"

    def __init__(self, address: str = "local", workers: int = 2, threads_per_worker: int = 1):
        try:
            import ray
        except ImportError:
            raise ValueError("executor 'ray' needs Ray: pip install \"headcap[ray]\" (ray>=2.40)") from None
        self.ray, self.address, self.workers, self.threads = ray, address, workers, threads_per_worker
        self._owned = False
        if not ray.is_initialized():
            env = {"env_vars": {"OMP_NUM_THREADS": str(threads_per_worker)}}
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, runtime_env=env)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=env)
            self._owned = True
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)

    def map(self, fn, items, labels=None, on_done=None) -> list:
        ray = self.ray
        items = list(items)
        labels = list(labels) if labels is not None else [repr(i)[:80] for i in items]
        refs = [self._remote.remote(fn, item, self.threads) for item in items]
        index = {ref: k for k, ref in enumerate(refs)}
        pending, done_count, first_error = list(refs), 0, None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done_count += 1
            if on_done:
                on_done(done_count, len(items))
            try:
                ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error
                cause = getattr(exc, "cause", None) or exc
                if first_error is None:
                    first_error = (index[ready[0]], cause)
                for ref in pending:
                    ray.cancel(ref)
                pending = []
        if first_error is not None:
            k, cause = first_error
            raise WorkError(labels[k], cause) from cause
        return ray.get(refs)

    def close(self) -> None:
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
            self._owned = False

    def describe(self) -> dict:
        return {"kind": self.kind, "address": self.address, "workers": self.workers,
                "threads_per_worker": self.threads}


def make_executor(config: ExecutorConfig | None = None) -> Executor:
    config = config or ExecutorConfig()
    if config.kind == "local":
        return LocalExecutor(config.workers, config.threads_per_worker)
    if config.kind == "ray":
        return RayExecutor(config.address, config.workers, config.threads_per_worker)
    return Executor()


def default_workers() -> int:
    """The CPUs this process may use (affinity and cgroup quota)."""
    from headcap.core.threads import available_cpus

    return max(1, available_cpus())
