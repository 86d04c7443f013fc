"""tests/_ci_skips.py: under HEADCAP_REQUIRE_TEST_DATA=1 a skip fails unless the test is marked
`gpu`; every run ends with a line counting the skips."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]
# in-process runs: _ci_skips is already imported (so not assert-rewritten) in this process
QUIET = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")

INNER = """
import pytest

def test_plain_skip():
    pytest.skip("the thing is missing")

@pytest.mark.skipif(True, reason="condition")
def test_skipif():
    pass

@pytest.fixture
def needs_data():
    pytest.skip("no data")

def test_fixture_skip(needs_data):
    pass

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("no CUDA device")

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="nvcc is not on PATH")
def test_gpu_skipif():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def inner(pytester, monkeypatch):
    pytester.syspathinsert(TESTS)  # _ci_skips importable, as tests/conftest.py imports it
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU or toolkit\n")
    pytester.makepyfile(test_inner=INNER)

    def run(required: bool):
        if required:
            monkeypatch.setenv("HEADCAP_REQUIRE_TEST_DATA", "1")
        else:
            monkeypatch.delenv("HEADCAP_REQUIRE_TEST_DATA", raising=False)
        return pytester.runpytest("-p", "_ci_skips", *QUIET)

    return run


def test_skips_are_skips_without_the_flag(inner):
    result = inner(required=False)
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    result.stdout.fnmatch_lines([
        "headcap: 5 tests skipped (GPU-only: test_inner.py::test_gpu_skip, test_inner.py::test_gpu_skipif; "
        "not GPU-only, a failure under HEADCAP_REQUIRE_TEST_DATA=1: test_inner.py::test_fixture_skip, "
        "test_inner.py::test_plain_skip, test_inner.py::test_skipif)",
    ])
    assert result.ret == 0


def test_flag_turns_every_skip_but_the_gpu_ones_into_a_failure(inner):
    result = inner(required=True)
    # skipif is evaluated in setup, a fixture skips in setup: those read as errors
    result.assert_outcomes(passed=1, skipped=2, xfailed=1, failed=1, errors=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "skipped (the thing is missing), but HEADCAP_REQUIRE_TEST_DATA=1 makes a skip a failure" in out
    assert "skipped (condition), but" in out and "skipped (no data), but" in out
    result.stdout.fnmatch_lines([
        "headcap: 2 tests skipped (GPU-only: test_inner.py::test_gpu_skip, test_inner.py::test_gpu_skipif)",
        "headcap: 3 skips turned into failures by HEADCAP_REQUIRE_TEST_DATA=1: *test_plain_skip (the thing is missing)*",
    ])


def test_flag_fails_a_module_level_skip(pytester, inner, monkeypatch):
    pytester.makepyfile(test_module_skip="import pytest\npytest.importorskip('no_such_module_headcap')\n"
                                         "def test_x():\n    pass\n")
    pytester.path.joinpath("test_inner.py").unlink()
    result = inner(required=True)
    result.stdout.fnmatch_lines(["*ERROR*test_module_skip.py*",
                                 "headcap: 1 skip turned into a failure by *test_module_skip.py*no_such_module_headcap*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run


def test_zero_skips_still_print_the_count(pytester, monkeypatch):
    pytester.syspathinsert(TESTS)
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    monkeypatch.setenv("HEADCAP_REQUIRE_TEST_DATA", "1")
    result = pytester.runpytest("-p", "_ci_skips", *QUIET)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["headcap: 0 tests skipped"])
