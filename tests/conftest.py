"""Shared test setup: an offline, isolated environment, and where the real test data lives."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before any library reads them: no model hub, no telemetry, a private Prefect home for the session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="mmrag-prefect-"))


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared data folder (``MMRAG_TEST_DATA``, default ``<repo>/../shared/data``)."""
    root = Path(os.environ.get("MMRAG_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not root.is_dir():
        if os.environ.get("MMRAG_REQUIRE_TEST_DATA") == "1":
            pytest.fail(f"test data not found at {root} (MMRAG_REQUIRE_TEST_DATA=1)")
        pytest.skip(f"test data not found at {root}; set MMRAG_TEST_DATA to the shared data folder")
    return root
