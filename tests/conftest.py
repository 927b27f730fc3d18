"""Shared fixtures: where the real test data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The shared data folder (``MMRAG_TEST_DATA``, default ``<repo>/../shared/data``)."""
    root = Path(os.environ.get("MMRAG_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"test data not found at {root}; set MMRAG_TEST_DATA to the shared data folder")
    return root
