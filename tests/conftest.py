import os
from pathlib import Path

import pytest

import _ci_skips

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    # under HEADCAP_REQUIRE_TEST_DATA=1 (CI) a skip fails unless the test is marked `gpu`
    config.pluginmanager.register(_ci_skips, "headcap_ci_skips")


def _data_root() -> Path:
    return Path(os.environ.get("HEADCAP_TEST_DATA", str(_DEFAULT)))


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Root of the real test assets (../shared/data); skip when absent, fail under CI."""
    root = _data_root()
    if not (root / "README.md").is_file():
        msg = f"real test data not found at {root} (set HEADCAP_TEST_DATA)"
        if os.environ.get("HEADCAP_REQUIRE_TEST_DATA") == "1":
            pytest.fail(msg + "; HEADCAP_REQUIRE_TEST_DATA=1 makes this a failure")
        pytest.skip(msg)
    return root


@pytest.fixture(autouse=True)
def _small_threads():
    import torch

    torch.manual_seed(0)
    yield
