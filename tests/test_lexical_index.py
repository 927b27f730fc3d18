"""The lexical (BM25) index published with every snapshot: tokenized incrementally into shards shared between
snapshots, BM25 statistics of the live items only, removed and changed documents never found again,
compaction, verification and gc of its files (local folder and S3)."""
from __future__ import annotations

import numpy as np
import pytest

from mmrag_core.index.lexical import LEXICAL, index_terms
from mmrag_core.snapshot.publish import compact_and_publish
from mmrag_core.storage.manifest import Manifest
from mmrag_core.snapshot.retention import plan_gc, run_gc
from mmrag_core.snapshot.open import Snapshot, SnapshotError, open_snapshot, verify
from mmrag_core.storage.store import Store
from tests.synthetic_docs import (  # noqa: F401 - fixtures
    NO_COMPACTION,
    SyntheticDoc,
    local_store_fixture,
    make_doc,
    publish_docs,
    s3_store_fixture,
    settings_for,
    store_fixture,
)
from tests.vectors import one_thread  # noqa: F401 - FAISS on one thread

TEXTS = {
    "a.pdf": ["the zebra grazes on the savanna", "quarterly revenue grew in FY2018", "a table of cash flows"],
    "b.pdf": ["the lighthouse keeper logs the storm", "revenue fell sharply", "operating margin and capex"],
    "c.pdf": ["glacier ice cores record the climate", "capex rose with new plants", "the zebra crossing"],
}


def text_doc(name: str, version: int = 0, texts: list[str] | None = None) -> SyntheticDoc:
    """A synthetic document whose chunks carry ``texts`` (one chunk per text) and one OCR'd image."""
    texts = texts if texts is not None else TEXTS[name]
    doc = make_doc(name, n_chunks=len(texts), version=version)
    for item, text in zip([it for it in doc.items if it.kind == "chunk"], texts):
        item.text = text
    return doc


def found(snapshot: Snapshot, query: str, k: int = 100) -> list[tuple[str, float]]:
    """(document uri and chunk text, score) of the lexical hits, best first."""
    rows = {i: (u, t) for i, u, t in zip(*(snapshot.items.column(c).to_pylist() for c in ("id", "source_uri", "text")))}
    return [(f"{rows[i][0]}: {rows[i][1]}", s) for i, s in snapshot.lexical.search(query, k)]


def uris(hits: list[tuple[str, float]]) -> set[str]:
    return {h.split(":", 1)[0] for h, _ in hits}


def live_terms(docs: list[SyntheticDoc]) -> list[list[str]]:
    """The term lists of every item the lexical index should hold (chunks and OCR'd images with terms)."""
    terms = [index_terms(it.text) for d in docs for it in d.items if it.kind in ("chunk", "image")]
    return [t for t in terms if t]


def test_index_terms() -> None:
    assert index_terms("The FY2018 Capex of 3M_2018_10K, in USD") == [
        "fy2018", "fy", "2018", "capex", "3m", "3", "m", "2018", "10k", "10", "k", "usd"]
    assert index_terms("a, the; of!") == []


def test_added_changed_removed(store: Store) -> None:
    """Each run tokenizes only its new documents into a shard of its own; a changed or removed document's
    items are never found again, and the statistics are those of the live items."""
    a, b, c = text_doc("a.pdf"), text_doc("b.pdf"), text_doc("c.pdf")
    settings = settings_for(store, **NO_COMPACTION)
    first = publish_docs(store, [a, b], settings)
    lex = first[LEXICAL]
    assert len(lex["shards"]) == 1 and lex["count"] == lex["stored"] == len(live_terms([a, b]))
    assert uris(found(open_snapshot(store), "zebra")) == {a.uri}

    second = publish_docs(store, [a, b, c], settings)
    assert second[LEXICAL]["shards"][0] == lex["shards"][0]  # shared, not rewritten
    assert len(second[LEXICAL]["shards"]) == 2 and second[LEXICAL]["shards"][1]["count"] == len(live_terms([c]))
    assert uris(found(open_snapshot(store), "zebra")) == {a.uri, c.uri}

    a2 = text_doc("a.pdf", version=1, texts=["the okapi hides in the forest", "revenue in FY2019"])
    third = publish_docs(store, [a2, b, c], settings)
    after = open_snapshot(store)
    assert third[LEXICAL]["count"] == len(live_terms([a2, b, c]))
    assert third[LEXICAL]["tombstoned"] == len(live_terms([a]))
    assert uris(found(after, "zebra")) == {c.uri}  # a's old text is gone, whatever k
    assert uris(found(after, "okapi")) == {a.uri}
    assert not found(after, "savanna grazes") and not found(after, "2018 quarterly")
    assert third[LEXICAL]["avgdl"] == pytest.approx(np.mean([len(t) for t in live_terms([a2, b, c])]), abs=1e-3)

    fourth = publish_docs(store, [a2, c], settings)
    latest = open_snapshot(store)
    assert not found(latest, "lighthouse storm keeper") and fourth[LEXICAL]["count"] == len(live_terms([a2, c]))
    assert uris(found(latest, "capex")) == {c.uri}
    # the parent snapshot still answers as it did
    assert uris(found(open_snapshot(store, third["id"]), "lighthouse")) == {b.uri}


def test_incremental_scores_equal_a_fresh_build(local_store: Store, tmp_path_factory: pytest.TempPathFactory) -> None:
    """N, document frequencies and average length follow the live items: after adds, a change and a removal,
    every query scores exactly as in an index built from scratch over the final documents."""
    a, b, c = text_doc("a.pdf"), text_doc("b.pdf"), text_doc("c.pdf")
    a2 = text_doc("a.pdf", version=1, texts=["zebra revenue", "capex capex table", "the storm"])
    settings = settings_for(local_store, **NO_COMPACTION)
    for docs in ([a, b], [a, b, c], [a2, b, c], [a2, c]):
        publish_docs(local_store, docs, settings)
    fresh_store = Store(tmp_path_factory.mktemp("fresh") / "store")
    publish_docs(fresh_store, [a2, c])
    incremental, fresh = open_snapshot(local_store), open_snapshot(fresh_store)
    assert incremental.manifest[LEXICAL]["tombstoned"] > 0 and len(incremental.manifest[LEXICAL]["shards"]) == 3
    for query in ("zebra", "capex revenue", "the storm table", "climate glacier", "ocr text"):
        hits_i, hits_f = dict(found(incremental, query)), dict(found(fresh, query))  # ties may order differently
        assert hits_i and sorted(hits_i) == sorted(hits_f)
        np.testing.assert_allclose([hits_i[h] for h in sorted(hits_i)], [hits_f[h] for h in sorted(hits_f)], rtol=1e-6)


def test_allowed_ids_restrict_the_ranking(local_store: Store) -> None:
    a, c = text_doc("a.pdf"), text_doc("c.pdf")
    publish_docs(local_store, [a, c])
    snapshot = open_snapshot(local_store)
    items = snapshot.items.to_pylist()
    only_c = [r["id"] for r in items if r["doc_sha256"] == c.sha]
    hits = snapshot.lexical.search("zebra", 10, allowed_ids=only_c)
    assert [i for i, _ in hits] and {i for i, _ in hits} <= set(only_c)
    assert snapshot.lexical.search("zebra", 10, allowed_ids=[]) == []
    assert len(snapshot.lexical.search("zebra", 1)) == 1


@pytest.mark.parametrize("how", ["automatic", "explicit"])
def test_compaction_keeps_only_live_rows(store: Store, how: str) -> None:
    a, b, c = text_doc("a.pdf"), text_doc("b.pdf"), text_doc("c.pdf")
    a2 = text_doc("a.pdf", version=1, texts=["the okapi hides in the forest"])
    publish_docs(store, [a, b, c], settings_for(store, **NO_COMPACTION))
    if how == "automatic":  # a's rows are over 20 % of the stored rows
        manifest = publish_docs(store, [a2, b, c], settings_for(store))
    else:
        parent = Manifest.of(publish_docs(store, [a2, b, c], settings_for(store, **NO_COMPACTION)))
        manifest = compact_and_publish(store, parent, settings_for(store)).to_json()
    lex = manifest[LEXICAL]
    assert len(lex["shards"]) == 1 and lex["stored"] == lex["count"] == len(live_terms([a2, b, c]))
    assert lex["tombstoned"] == 0 and lex["compacted"]
    snapshot = open_snapshot(store)
    assert uris(found(snapshot, "zebra")) == {c.uri} and uris(found(snapshot, "okapi")) == {a2.uri}
    # gc keeping LATEST only deletes the shards compaction replaced, and keeps the compacted one
    before = set(store.find(LEXICAL))
    run_gc(store, plan_gc(store, keep_last=1, keep_days=0, grace_seconds=0))
    left = set(store.find(LEXICAL))
    assert left < before and left == {k for sh in lex["shards"] for k in sh["files"]} | {
        f"{LEXICAL}/{sh['id']}/shard.json" for sh in lex["shards"]}
    assert uris(found(open_snapshot(store), "zebra")) == {c.uri}


def test_lexical_files_are_listed_verified_and_kept_by_gc(store: Store) -> None:
    a, b, c = text_doc("a.pdf"), text_doc("b.pdf"), text_doc("c.pdf")
    first = publish_docs(store, [a, b])
    second = publish_docs(store, [a, b, c])
    shard_keys = [k for s in second[LEXICAL]["shards"] for k in s["files"]]
    own_keys = list(second[LEXICAL]["files"].values())
    assert shard_keys and own_keys and set(shard_keys + own_keys) <= set(second["files"])
    assert all(k.startswith(f"{LEXICAL}/") and k.count("/") == 2 for k in shard_keys)
    assert all(k.startswith(f"snapshots/{second['id']}/{LEXICAL}/") for k in own_keys)
    assert next(iter(first[LEXICAL]["shards"][0]["files"])) in shard_keys  # shared

    # gc keeping only LATEST keeps the first run's shard (LATEST lists it) and drops the first snapshot's own files
    plan = plan_gc(store, keep_last=1, keep_days=0, grace_seconds=0)
    assert not set(plan.delete) & set(second["files"])
    assert any(k.startswith(f"snapshots/{first['id']}/{LEXICAL}/") for k in plan.delete)
    run_gc(store, plan)
    verify(store, second)
    assert uris(found(open_snapshot(store), "zebra")) == {a.uri, c.uri}

    # a modified shard file is refused
    data = bytearray(store.read_bytes(shard_keys[0]))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(shard_keys[0], bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        verify(store, second)


def test_rerun_reuses_the_finished_shard(local_store: Store) -> None:
    """A run published again from the same parent (as after a crash) plans the same shard and does not
    tokenize it again."""
    a, b = text_doc("a.pdf"), text_doc("b.pdf")
    parent = publish_docs(local_store, [a])
    once = publish_docs(local_store, [a, b])
    local_store.set_latest(parent["id"])
    marker = f"{LEXICAL}/{once[LEXICAL]['shards'][1]['id']}/shard.json"
    written = local_store.modified(marker)
    again = publish_docs(local_store, [a, b])
    assert again[LEXICAL]["shards"] == once[LEXICAL]["shards"] and local_store.modified(marker) == written
