"""Every test's cache root (``EERCF_HOME``: downloads, models, decoded frames) points into
pytest's temporary folder, never into the user's ``~/.cache``. Tests that read the research
data beside the repository (``../shared/data``: MSR-VTT clips, frame folders, csv files) are
marked ``needs_shared`` and skip, saying why, in a clone that has none. Tests marked ``slow``
run only with ``--run-slow``."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (minutes each; run on purpose)")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_shared: reads ../shared/data (skipped without it)")
    config.addinivalue_line("markers", "slow: minutes long; skipped unless --run-slow")


def pytest_runtest_setup(item):
    if item.get_closest_marker("slow") and not item.config.getoption("--run-slow"):
        pytest.skip("slow test: run with --run-slow")
    if item.get_closest_marker("needs_shared") and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the research data in {SHARED_DATA} (MSR-VTT clips and annotations), "
                    "which a clone of the repository alone does not have")


@pytest.fixture(autouse=True, scope="session")
def _frame_cache_in_tmp(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("EERCF_HOME", str(tmp_path_factory.mktemp("eercf-cache")))
    yield
    patch.undo()
