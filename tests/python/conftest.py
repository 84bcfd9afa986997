"""pytest setup for the moreh package's tests: the package from the build tree (MOREH_PYTHONPATH,
set by ctest), the repository and build directories as fixtures."""
import os
import sys

import pytest

_BUILD = os.environ.get("MOREH_BUILD_DIR", "")
if _BUILD:
    sys.path.insert(0, os.path.join(_BUILD, "python"))
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def source():
    return SOURCE


@pytest.fixture(scope="session")
def build_dir():
    if not _BUILD:
        pytest.fail("MOREH_BUILD_DIR is not set (ctest sets it to the build directory)")
    return _BUILD


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in ("MOREH_SCHEDULER", "MOREH_ENABLE_ADVANCED_PARALLELIZATION", "MOREH_COMPUTE_DTYPE",
              "MOREH_ADVANCED_PARALLELIZATION_CONFIG", "MOREH_DEVICE_SIZE"):
        monkeypatch.delenv(k, raising=False)
