"""Publish a snapshot from document records in one process, through the same code the indexing flow runs."""
from __future__ import annotations

from mmrag_core.config import Settings
from mmrag_core.storage.items import Failure
from mmrag_core.storage.records import DocRecord, write_record
from mmrag_core.snapshot.publish import IndexRequest, index_and_publish
from mmrag_core.snapshot.open import latest_manifest
from mmrag_core.ingest.sources import DocRef
from mmrag_core.storage.store import Store


def publish_records(store: Store, records: list[DocRecord], models: dict, source: str = "/corpus",
                    settings: Settings | None = None, failures: list[Failure] | None = None,
                    stats: dict | None = None, fresh: bool = False) -> dict:
    """Store ``records`` and publish them as the store's next snapshot (incremental against LATEST); returns
    the manifest as written (its JSON document), which the tests check key by key."""
    for r in records:
        write_record(store, r)
    parent = latest_manifest(store)
    docs = [DocRef(r.source_uri, 0, r.doc_sha256) for r in records]
    request = IndexRequest(docs, list(failures or []), models, "test-record-key", "test-config-key", source,
                           stats or {}, fresh or parent is None)
    return index_and_publish(store, request, parent, settings or Settings(store=store.uri)).to_json()


def publish_minilm_docs(store: Store, docs: list[tuple[str, str, list]]) -> None:
    """Publish documents given as (doc sha256, source uri, items) with real all-MiniLM-L6-v2 vectors of what the
    text space embeds (``embed.text_inputs``), offline; a text-only snapshot."""
    import pytest

    from mmrag_core.ingest.encoder_inputs import text_inputs
    from mmrag_core.storage.records import build_record
    from tests.tiny_models import force_hf_offline

    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        from mmrag_core.models.text_encoder import TextEncoder

        encoder = TextEncoder("all-MiniLM-L6-v2")
        records = []
        for sha, uri, items in docs:
            ids, texts = text_inputs(items)
            records.append(build_record(sha, uri, items, {"text": (ids, encoder.encode(texts))}, [], "k", {}))
        publish_records(store, records, {"text": {"name": "all-MiniLM-L6-v2", "dim": 384}})
    finally:
        mp.undo()
