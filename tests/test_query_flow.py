"""The ``query-snapshot`` Prefect task and the ``query`` flow over a small published snapshot, and the
``mmrag serve`` command as a real process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.query_corpus import SENTENCES, offline_query_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with offline_query_corpus(tmp_path_factory.mktemp("query-flow")) as corpus:
        yield corpus


def test_query_task_function(corpus: dict, tmp_path: Path) -> None:
    """The task's body without a Prefect API: text and image (a path) queries, hits as dicts."""
    from mmrag_core.config import Settings
    from tasks.query_tasks import engine_for, query_snapshot

    store = corpus["store"]
    settings = Settings(store=store.uri)
    hits = query_snapshot.fn(settings, text="storm damage closed the bridge", k=2)
    assert len(hits) == 2 and hits[0]["snippet"] == SENTENCES[2] and hits[0]["snapshot"] == store.latest_id()
    image = tmp_path / "q.png"
    image.write_bytes(corpus["pngs"][1])
    hits = query_snapshot.fn(settings, image=str(image), k=1, snapshot=store.latest_id())
    assert hits[0]["key"] == corpus["images"][1].id
    assert engine_for(store, settings) is engine_for(store, settings, store.latest_id())  # loaded once
    with pytest.raises(ValueError, match="max_file_bytes"):
        query_snapshot.fn(Settings(store=store.uri, max_file_bytes=10), image=str(image))


@pytest.mark.slow
def test_query_flow_returns_hits_as_dicts(corpus: dict, tmp_path: Path) -> None:
    """A real flow run (Prefect's temporary local API): hits as dicts and a table artifact."""
    from prefect.artifacts import Artifact
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.query_flow import query_flow

    store = corpus["store"]
    # Prefect's temporary API needs more than its default 20 s to start on a busy 2-core machine.
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}):
        _check_query_flow(query_flow, Artifact, store, corpus, tmp_path)


def _check_query_flow(query_flow, Artifact, store, corpus: dict, tmp_path: Path) -> None:
    hits = query_flow(text="How do plants turn light into sugar?", k=3, store=store.uri)
    assert len(hits) == 3 and all(isinstance(h, dict) for h in hits)
    assert hits[0]["snapshot"] == store.latest_id()
    assert hits[0]["snippet"] == SENTENCES[1] and hits[0]["page"] == 1 and hits[0]["kind"] == "chunk"
    artifact = Artifact.get("query-hits")
    assert artifact is not None and SENTENCES[1][:40] in str(artifact.data)

    image = tmp_path / "q.png"
    image.write_bytes(corpus["pngs"][2])
    hits = query_flow(image=str(image), k=1, store=store.uri, snapshot=store.latest_id())
    assert hits[0]["key"] == corpus["images"][2].id and hits[0]["ranks"] == {"image:image": 1}

    with pytest.raises(ValueError, match="text, an image"):
        query_flow(store=store.uri)


@pytest.mark.slow
def test_mmrag_serve_command(corpus: dict) -> None:
    """``mmrag serve --store ... --port ...`` answers over HTTP until terminated."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MMRAG_SERVICE_POLL_SECONDS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--store", corpus["store"].uri,
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mmrag serve did not become healthy"
            time.sleep(0.2)
        r = httpx.post(url + "/query", json={"text": "espresso coffee", "k": 2})
        assert r.status_code == 200 and r.json()["hits"][0]["snippet"] == SENTENCES[5]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_arguments_and_token_not_printed(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import build_parser, main

    args = build_parser().parse_args(["serve", "--store", "/s", "--host", "0.0.0.0", "--port", "9001"])
    assert (args.command, args.store, args.host, args.port, args.snapshot) == ("serve", "/s", "0.0.0.0", 9001, None)
    monkeypatch.setenv("MMRAG_SERVICE_TOKEN", "very-secret-value")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert '"service_token": "**********"' in out and "very-secret-value" not in out
