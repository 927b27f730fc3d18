"""Incremental indexing against the parent snapshot: added, changed, removed and renamed documents, automatic
and explicit compaction, IVF-PQ shards merged, retraining, and re-runs after a crash (local folder and S3)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmrag_core.index import build as indexing
from mmrag_core.snapshot import publish as publishing
from mmrag_core.config import Settings
from mmrag_core.snapshot.publish import compact_and_publish
from mmrag_core.storage.manifest import Manifest
from mmrag_core.snapshot.open import Snapshot, open_snapshot, read_table
from mmrag_core.storage.store import Store
from tests.synthetic_docs import (  # noqa: F401 - fixtures
    NO_COMPACTION,
    SyntheticDoc,
    assert_finds,
    assert_same_results,
    id_map,
    index_ids,
    local_store_fixture,
    make_doc,
    publish_docs,
    search_all,
    settings_for,
    store_fixture,
)
from tests.vectors import clustered, one_thread  # noqa: F401 - FAISS on one thread


def corpus(*names: str) -> list[SyntheticDoc]:
    return [make_doc(name) for name in names]


def everything(manifest: dict) -> int:
    """A k that asks for every stored vector, tombstoned ones included."""
    return max(meta["stored"] for meta in manifest["spaces"].values())


def returned_ids(snapshot: Snapshot, docs: list[SyntheticDoc], k: int) -> set[int]:
    """Every id any of the documents' vectors finds in any space within the top ``k``."""
    return {int(i) for _, ids in search_all(snapshot, docs, k).values() for i in ids.ravel() if i >= 0}


def catalog_uris(store: Store, manifest: dict) -> dict[str, str]:
    """sha256 -> uri of the snapshot's catalog."""
    catalog = read_table(store, Manifest.of(manifest), "catalog.parquet")
    return dict(zip(catalog.column("sha256").to_pylist(), catalog.column("uri").to_pylist()))


def shard_ids(manifest: dict) -> dict[str, list[str]]:
    return {space: [s["id"] for s in meta["shards"]] for space, meta in manifest["spaces"].items()}


# ---- added, changed, removed, renamed ----------------------------------------------------------------------


def test_added_document_gets_a_shard_of_its_own(store: Store) -> None:
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    first = publish_docs(store, [a, b])
    second = publish_docs(store, [a, b, c])
    assert second["parent"] == first["id"]
    for space in ("text", "image"):
        assert shard_ids(second)[space][:1] == shard_ids(first)[space]  # the parent's shard, shared
        assert len(shard_ids(second)[space]) == 2
    assert second["stats"]["documents_encoded"] == 1 and second["tombstones"] == 0
    before, after = open_snapshot(store, first["id"]), open_snapshot(store)
    assert id_map(after).keys() - id_map(before).keys() == {it.id for it in c.items}
    assert all(id_map(after)[k] == v for k, v in id_map(before).items())  # the old documents keep their ids
    for doc in (a, b, c):
        assert_finds(after, doc)
    assert not returned_ids(before, [c], everything(second)) & index_ids(after, c)  # the parent is unchanged


def test_changed_document_replaces_its_items(store: Store) -> None:
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    a2 = make_doc("a.pdf", version=1)  # same uri, new bytes
    settings = settings_for(store, **NO_COMPACTION)
    first = publish_docs(store, [a, b, c], settings)
    second = publish_docs(store, [a2, b, c], settings)
    before, after = open_snapshot(store, first["id"]), open_snapshot(store)
    old = index_ids(before, a)
    assert second["tombstones"] == len(old) == len(a.items)
    assert second["spaces"]["text"]["tombstoned"] == len(a.vectors["text"][0])
    assert second["spaces"]["image"]["tombstoned"] == len(a.vectors["image"][0])
    found = returned_ids(after, [a, a2, b, c], everything(second))
    assert not found & old  # even when k asks for every stored vector
    assert index_ids(after, a2) <= found
    assert_finds(after, a2)
    rows = after.items.filter(np.array(after.items.column("source_uri").to_pylist()) == a.uri)
    assert set(rows.column("doc_sha256").to_pylist()) == {a2.sha} and rows.num_rows == len(a2.items)
    assert after.items.num_rows == before.items.num_rows
    assert catalog_uris(store, second) == {a2.sha: a.uri, b.sha: b.uri, c.sha: c.uri}


def test_removed_document_disappears(store: Store) -> None:
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    settings = settings_for(store, **NO_COMPACTION)
    first = publish_docs(store, [a, b, c], settings)
    second = publish_docs(store, [a, c], settings)
    before, after = open_snapshot(store, first["id"]), open_snapshot(store)
    assert second["tombstones"] == len(b.items) and second["counts"]["documents"] == 2
    assert not returned_ids(after, [a, b, c], everything(second)) & index_ids(before, b)
    assert b.sha not in after.items.column("doc_sha256").to_pylist()
    assert b.uri not in after.items.column("source_uri").to_pylist()
    assert catalog_uris(store, second) == {a.sha: a.uri, c.sha: c.uri}


def test_renamed_document_keeps_its_vectors(store: Store) -> None:
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    moved = make_doc("c.pdf", uri="/corpus/archive/c.pdf")  # same bytes, new uri
    first = publish_docs(store, [a, b, c])
    second = publish_docs(store, [a, b, moved])
    assert shard_ids(second) == shard_ids(first)  # nothing encoded, nothing tombstoned
    assert second["stats"]["documents_encoded"] == 0 and second["tombstones"] == 0
    after = open_snapshot(store)
    assert id_map(after) == id_map(open_snapshot(store, first["id"]))
    _, hits = after.indexes["text"].search(c.queries("text"), k=1)
    uri_of = dict(zip(after.items.column("id").to_pylist(), after.items.column("source_uri").to_pylist()))
    assert {uri_of[i] for i in hits[:, 0].tolist()} == {moved.uri}
    assert catalog_uris(store, second)[c.sha] == moved.uri


# ---- compaction ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("store", "trigger"), [("local", "compact_tombstone_fraction"), ("local", "compact_max_shards"),
                                               ("s3", "compact_tombstone_fraction")], indirect=["store"])
def test_automatic_compaction_keeps_the_results(store: Store, trigger: str) -> None:
    """The same run published without and with compaction: one shard and no tombstones, same hits."""
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    if trigger == "compact_tombstone_fraction":  # 3 of 12 text and 1 of 4 image vectors dead > 0.2
        history, final, limits = [[a, b, c]], [make_doc("a.pdf", version=1), b, c], {}
    else:  # a third shard > 2
        history, final, limits = [[a], [a, b]], [a, b, c], {"compact_max_shards": 2}
    for docs in history:
        parent = publish_docs(store, docs, settings_for(store, **NO_COMPACTION))
    kept = publish_docs(store, final, settings_for(store, **NO_COMPACTION))
    store.set_latest(parent["id"])  # the same run again, from the same parent
    compacted = publish_docs(store, final, settings_for(store, **limits))

    assert "compacted" not in kept and compacted["parent"] == parent["id"]
    assert set(compacted["compacted"]) == {"text", "image"}
    assert trigger in compacted["compacted"]["text"]
    assert compacted["tombstones"] == 0
    for meta in compacted["spaces"].values():
        assert len(meta["shards"]) == 1 and meta["tombstoned"] == 0 and meta["stored"] == meta["count"]
    queries = [a, b, c, *final]
    k = everything(kept)
    assert_same_results(search_all(open_snapshot(store, kept["id"]), queries, k),
                        search_all(open_snapshot(store), queries, k))


def test_explicit_compaction_keeps_the_results(store: Store) -> None:
    a, b, c, d = corpus("a.pdf", "b.pdf", "c.pdf", "d.pdf")
    settings = settings_for(store, **NO_COMPACTION)
    publish_docs(store, [a, b, c], settings)
    parent = publish_docs(store, [make_doc("a.pdf", version=1), c, d], settings)
    assert parent["tombstones"] and len(parent["spaces"]["text"]["shards"]) == 2
    compacted = compact_and_publish(store, Manifest.of(parent), settings).to_json()
    assert compacted["parent"] == parent["id"] and compacted["compacted"] == {"text": "requested", "image": "requested"}
    assert compacted["tombstones"] == 0 and all(len(m["shards"]) == 1 for m in compacted["spaces"].values())
    assert compacted["counts"] == parent["counts"] and compacted["next_id"] == parent["next_id"]
    before, after = open_snapshot(store, parent["id"]), open_snapshot(store)
    assert after.items.equals(before.items)
    k = everything(parent)
    assert_same_results(search_all(before, [a, b, c, d], k), search_all(after, [a, b, c, d], k))


def test_ivf_pq_shards_merge_into_a_single_build(local_store: Store) -> None:
    """Above exact_threshold a space gets an OPQ/IVF/PQ codec with refine, tuned on held-out vectors; a later
    run's shard, searched beside the first with tombstones, answers as the compacted single index does."""
    vectors = clustered(3100, dim=16, n_clusters=30, seed=3)
    docs = [make_doc(f"d{n}.pdf", n_images=0, text_vectors=vectors[100 * n:100 * (n + 1)]) for n in range(31)]
    settings = settings_for(local_store, exact_threshold=200, tune_queries=300, target_recall=0.95)
    first = publish_docs(local_store, docs[:30], settings)
    text = first["spaces"]["text"]
    assert text["index_type"].startswith("OPQ") and "IVF" in text["index_type"] and "PQ" in text["index_type"]
    assert text["nprobe"] >= 1 and text["k_factor"] > 1 and text["shards"][0]["has_refine"]
    assert text["recall_at_10"] >= settings.target_recall
    assert text["codec"]["trained_vectors"] == 3000

    changed = make_doc("d0.pdf", version=1, n_images=0, text_vectors=vectors[:100][::-1])
    merged = publish_docs(local_store, [changed, *docs[1:]], settings)  # d0 changed, d30 added
    assert len(merged["spaces"]["text"]["shards"]) == 2 and merged["tombstones"] == 100
    single = compact_and_publish(local_store, Manifest.of(merged), settings).to_json()
    rng = np.random.default_rng(9)
    queries = vectors[rng.integers(0, len(vectors), 40)] + 0.05 * rng.standard_normal((40, 16)).astype(np.float32)
    results = [open_snapshot(local_store, m["id"]).indexes["text"].search(queries, 10) for m in (merged, single)]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert not set(results[0][1].ravel().tolist()) & index_ids(open_snapshot(local_store, first["id"]), docs[0])


# ---- retraining -------------------------------------------------------------------------------------------


def test_retrain_recommended_then_fresh_codecs(local_store: Store) -> None:
    a, b, c = corpus("a.pdf", "b.pdf", "c.pdf")
    settings = settings_for(local_store, retrain_growth_factor=2.0, **NO_COMPACTION)
    first = publish_docs(local_store, [a], settings)  # codecs trained on 3 text and 1 image vectors
    assert not any(m["retrain_recommended"] for m in first["spaces"].values())
    grown = publish_docs(local_store, [make_doc("a.pdf", version=1), b, c], settings)
    for meta in grown["spaces"].values():
        assert meta["retrain_recommended"] and meta["retrain_reason"].startswith("grew 3.0x")
    assert grown["tombstones"] == len(a.items)

    docs = [make_doc("a.pdf", version=1), b, c]
    fresh = publish_docs(local_store, docs, settings, fresh=True)
    assert fresh["parent"] == grown["id"] and fresh["tombstones"] == 0
    for space, meta in fresh["spaces"].items():
        assert meta["codec"]["id"] != grown["spaces"][space]["codec"]["id"]
        assert meta["codec"]["trained_vectors"] == meta["count"] == meta["stored"]
        assert len(meta["shards"]) == 1 and not meta["retrain_recommended"]
    snap = open_snapshot(local_store)
    assert min(snap.items.column("id").to_pylist()) >= grown["next_id"]  # new ids: nothing to tombstone
    for doc in docs:
        assert_finds(snap, doc)


# ---- re-runs after a crash --------------------------------------------------------------------------------


def crash_before_publishing(store: Store, docs: list[SyntheticDoc], settings: Settings,
                            monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Run an index that dies after encoding, before publishing; the shard markers it wrote, by key."""
    before = set(store.find("shards"))

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before publishing")

    with monkeypatch.context() as mp:
        mp.setattr(publishing, "publish", crash)
        with pytest.raises(RuntimeError, match="killed"):
            publish_docs(store, docs, settings)
    return {k: json.loads(store.read_bytes(k)) for k in sorted(set(store.find("shards")) - before)
            if k.endswith("/shard.json")}


@pytest.mark.parametrize(("store", "markers"), [("local", "kept"), ("local", "lost"), ("s3", "lost")],
                         indirect=["store"])
def test_rerun_after_a_crash(store: Store, monkeypatch: pytest.MonkeyPatch, markers: str) -> None:
    """Finished shards (marker written) are reused as they are; a shard folder without its marker (the
    crash hit while it was written) is encoded again, to the same bytes."""
    a, b, c, d = corpus("a.pdf", "b.pdf", "c.pdf", "d.pdf")
    settings = settings_for(store, shard_max_vectors=3)  # c and d: one text shard each, merged into one
    first = publish_docs(store, [a, b], settings)
    written = crash_before_publishing(store, [a, b, c, d], settings, monkeypatch)
    assert store.latest_id() == first["id"] and len(written) == 4  # text: 2 + merged, image: 1
    if markers == "lost":
        for key in written:
            store.delete(key)
            store.write_bytes(key.replace("shard.json", "index.faiss"), b"half an ind")

    encoded = []
    encode = indexing.encode_shard
    monkeypatch.setattr(indexing, "encode_shard", lambda *args: encoded.append(args) or encode(*args))
    manifest = publish_docs(store, [a, b, c, d], settings)
    assert len(encoded) == (0 if markers == "kept" else 3)
    new = [s for meta in manifest["spaces"].values() for s in meta["shards"][1:]]
    assert new == [written[f"shards/{s['space']}/{s['id']}/shard.json"] for s in new]  # the same files
    snap = open_snapshot(store)
    for doc in (a, b, c, d):
        assert_finds(snap, doc)
