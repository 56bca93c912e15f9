"""Every test's decoded-frame cache default points into pytest's temporary folder, never into
the user's ``~/.cache``."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _frame_cache_in_tmp(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("EERCF_CACHE", str(tmp_path_factory.mktemp("eercf-cache")))
    yield
    patch.undo()
