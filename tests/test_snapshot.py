"""Persisted document records; publishing, opening, LATEST, the parent chain and verification of snapshots
(local folder and S3)."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmrag_core.snapshot.open as snapshot_mod
import mmrag_core.storage.store as store_mod
from mmrag_core.storage.items import Failure
from mmrag_core.storage.records import build_record, read_record, space_vectors, stored_record_key, write_record
from mmrag_core.snapshot.open import (
    MANIFEST,
    NothingToPublish,
    SnapshotError,
    new_snapshot_id,
    open_snapshot,
    read_manifest,
    snapshot_key,
)
from mmrag_core.storage.store import Store, doc_key
from tests.published import publish_records
from tests.synthetic_docs import (  # noqa: F401 - fixtures
    IMAGE_DIM,
    MODELS,
    TEXT_DIM,
    assert_finds,
    local_store_fixture,
    make_doc,
    mmrag,
    publish_docs,
    s3_store_fixture,
    store_fixture,
)


def leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted or unfinished atomic writes."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


def flip_a_byte(store: Store, key: str) -> None:
    """Same size, different content: only a checksum notices."""
    data = bytearray(store.read_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(key, bytes(data))


def shard_file(manifest: dict, space: str = "text", shard: int = 0) -> str:
    return next(k for k in manifest["spaces"][space]["shards"][shard]["files"] if k.endswith("index.faiss"))


# --- persist ---------------------------------------------------------------------------------------------


def test_record_round_trip(local_store: Store) -> None:
    doc = make_doc("a.pdf", n_chunks=4, n_images=2)
    failures = [Failure(doc.uri, "ocr", "tesseract failed", page=2, doc_sha256=doc.sha)]
    stats = {"pages": 4, "ocr_pages": 1, "seconds": 0.5}
    write_record(local_store, doc.record(failures, stats))
    assert local_store.exists(doc_key(doc.sha))
    assert leftovers(local_store.root) == []

    rec = read_record(local_store, doc.sha)
    assert rec is not None
    assert rec.doc_sha256 == doc.sha and rec.source_uri == doc.uri and rec.record_key == "mk-1"
    assert rec.failures == failures
    assert rec.stats == stats
    assert rec.table.column("id").to_pylist() == [it.id for it in doc.items]
    assert rec.table.column("image_png").to_pylist()[-1] == doc.items[-1].image_png
    assert rec.table.column("bbox").to_pylist()[0] == pytest.approx([10.0, 20.0, 300.5, 400.25])
    for space in ("text", "image"):
        ids, vecs = space_vectors(rec.table, space)
        want_ids, want_vecs = doc.vectors[space]
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(vecs, want_vecs)
        assert vecs.dtype == np.float32
    # rows without a vector in a space are null there
    kinds = rec.table.column("kind").to_pylist()
    assert rec.table.column("vec_text").is_valid().to_pylist() == [k == "chunk" for k in kinds]
    assert rec.table.column("vec_image").is_valid().to_pylist() == [k == "image" for k in kinds]


def test_record_vectors_follow_ids_not_positions(local_store: Store) -> None:
    doc = make_doc("b.pdf", n_chunks=3, n_images=0)
    ids, vecs = doc.vectors["text"]
    doc.vectors["text"] = (ids[::-1].copy(), vecs[::-1].copy())  # given in another order
    write_record(local_store, doc.record())
    got_ids, got_vecs = space_vectors(read_record(local_store, doc.sha).table, "text")
    assert dict(zip(got_ids.tolist(), map(tuple, got_vecs))) == dict(zip(ids.tolist(), map(tuple, vecs)))


def test_record_without_any_vectors(local_store: Store) -> None:
    doc = make_doc("c.pdf", n_chunks=2, n_images=0)
    write_record(local_store, build_record(doc.sha, doc.uri, doc.items, {}, [], "mk-1", {}))
    rec = read_record(local_store, doc.sha)
    for space in ("text", "image"):
        assert rec.table.column(f"vec_{space}").null_count == 2
        ids, vecs = space_vectors(rec.table, space)
        assert len(ids) == 0 and vecs is None


def test_read_record_missing_or_corrupt(local_store: Store) -> None:
    assert read_record(local_store, "0" * 64) is None
    local_store.write_bytes(doc_key("1" * 64), b"not parquet at all")
    assert read_record(local_store, "1" * 64) is None


def test_stored_record_key_reads_the_footer_only(local_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = make_doc("k.pdf")
    assert stored_record_key(local_store, doc.sha) is None
    write_record(local_store, doc.record(record_key="key-7"))

    def no_rows(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rows were read")

    with monkeypatch.context() as mp:
        mp.setattr(pq, "read_table", no_rows)
        assert stored_record_key(local_store, doc.sha) == "key-7"
    local_store.write_bytes(doc_key(doc.sha), b"not parquet")
    assert stored_record_key(local_store, doc.sha) is None


# --- publish / open --------------------------------------------------------------------------------------


def test_publish_and_open(store: Store) -> None:
    docs = [make_doc("a.pdf", 3, 1), make_doc("b.png", 0, 1), make_doc("c.pdf", 2, 0)]
    run_failure = Failure("/corpus/bad.docx", "discover", "unsupported file type '.docx'")
    manifest = publish_records(store, [d.record() for d in docs], MODELS, failures=[run_failure], stats={"run": 1})
    sid = manifest["id"]
    assert store.latest_id() == sid and store.list_snapshots() == [sid]
    assert manifest["parent"] is None and manifest["format"] == 2
    assert manifest["models"]["text"]["name"] == "fake-text"
    assert manifest["source"] == "/corpus" and manifest["stats"]["run"] == 1
    assert manifest["counts"] == {
        "documents": 3, "pages_with_items": 3 + 1 + 2, "items": 7,
        "items_by_kind": {"chunk": 5, "image": 2}, "failures": 1,
        "documents_failed": 0,  # an unsupported file type is skipped, not a failed document (still listed)
    }
    assert manifest["failures"][0]["source_uri"] == "/corpus/bad.docx"
    for space, count, dim in (("text", 5, TEXT_DIM), ("image", 2, IMAGE_DIM)):
        meta = manifest["spaces"][space]
        assert (meta["count"], meta["stored"], meta["tombstoned"], meta["dim"]) == (count, count, 0, dim)
        assert meta["index_type"] == "Flat" and meta["recall_at_10"] == 1.0 and len(meta["shards"]) == 1
    # every file it needs is listed with its checksum: its own, and the shared codec and shard files
    # (the lexical index: its BM25 files in the snapshot's folder, its shard of term counts shared)
    own = {snapshot_key(sid, n) for n in ("items.parquet", "catalog.parquet", "failures.parquet", "tombstones.npy")}
    own |= set(manifest["lexical"]["files"].values())
    assert own <= set(manifest["files"]) and len(own) > 4
    assert {k.split("/")[0] for k in set(manifest["files"]) - own} == {"codecs", "shards", "lexical"}
    for key, meta in manifest["files"].items():
        data = store.read_bytes(key)
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert json.loads(store.read_bytes(snapshot_key(sid, MANIFEST))) == manifest

    snap = open_snapshot(store)
    assert snap.id == sid
    assert not [c for c in snap.items.column_names if c.startswith("vec_") or c == "image_png"]
    assert sorted(snap.items.column("item_key").to_pylist()) == sorted(it.id for d in docs for it in d.items)
    assert snap.indexes["text"].ntotal == 5 and snap.indexes["image"].ntotal == 2
    for doc in docs:
        assert_finds(snap, doc)


def test_items_table_has_schema_types(local_store: Store) -> None:
    manifest = publish_docs(local_store, [make_doc("a.pdf")])
    schema = pq.read_schema(local_store.path(snapshot_key(manifest["id"], "items.parquet")))
    assert schema.field("id").type == pa.int64() and schema.field("item_key").type == pa.int64()
    assert schema.field("page").type == pa.int32()
    assert schema.metadata is None  # record metadata (failures, stats) is not copied into the snapshot


def test_no_temp_files_left_behind(local_store: Store) -> None:
    publish_docs(local_store, [make_doc("a.pdf")])
    publish_docs(local_store, [make_doc("a.pdf"), make_doc("b.pdf")])
    assert leftovers(local_store.root) == []
    assert not any(local_store.cache_dir.rglob("*"))  # a local store is read in place, never copied


def test_record_failures_reach_the_snapshot(local_store: Store) -> None:
    doc = make_doc("a.pdf")
    page_failure = Failure(doc.uri, "ocr", "page 7 unreadable", page=7, doc_sha256=doc.sha)
    manifest = publish_records(local_store, [doc.record([page_failure])], {},
                               failures=[Failure("/x", "discover", "too big")])
    assert {f["reason"] for f in manifest["failures"]} == {"too big", "page 7 unreadable"}
    assert manifest["counts"]["documents_failed"] == 1  # the page failure does not fail its document


def test_latest_moves_and_parent_chain(local_store: Store) -> None:
    corpus, published = [], []
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        corpus.append(make_doc(name))
        published.append(publish_docs(local_store, corpus))
        assert local_store.latest_id() == published[-1]["id"]
    ids = [m["id"] for m in published]
    assert [m["parent"] for m in published] == [None, ids[0], ids[1]]
    assert local_store.list_snapshots() == ids  # ids sort by time
    # a pinned id opens an older snapshot; LATEST is the default
    assert open_snapshot(local_store, ids[0]).items.num_rows == 4
    assert open_snapshot(local_store).id == ids[2]
    assert read_manifest(local_store, ids[2])["parent"] == ids[1]


def test_list_snapshots_needs_a_manifest(store: Store) -> None:
    assert store.list_snapshots() == []
    sid = publish_docs(store, [make_doc("a.pdf")])["id"]
    unfinished = new_snapshot_id(datetime.now(UTC) + timedelta(days=1))
    store.write_bytes(snapshot_key(unfinished, "items.parquet"), b"a publish that never finished")
    store.write_bytes(snapshot_key(".hidden", MANIFEST), b"{}")
    store.write_bytes("snapshots/stray-file", b"x")
    assert store.list_snapshots() == [sid]
    with pytest.raises(SnapshotError, match="not found"):
        open_snapshot(store, unfinished)


def test_snapshot_ids_are_time_ordered() -> None:
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a, b = new_snapshot_id(base), new_snapshot_id(base + timedelta(microseconds=1))
    assert a < b and a == "20260102T030405000000Z"


def test_publish_existing_id_refused(local_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_mod, "new_snapshot_id", lambda: "20260102T030405000000Z")
    publish_docs(local_store, [make_doc("a.pdf")])
    with pytest.raises(SnapshotError, match="already exists"):
        publish_docs(local_store, [make_doc("a.pdf"), make_doc("b.pdf")])
    assert open_snapshot(local_store).items.num_rows == 4  # the first one, untouched


def test_nothing_to_publish(local_store: Store) -> None:
    empty = make_doc("scan.pdf", n_chunks=0, n_images=0)
    failure = Failure(empty.uri, "ocr", "no text found", page=0, doc_sha256=empty.sha)
    with pytest.raises(NothingToPublish, match="no text found") as caught:
        publish_records(local_store, [empty.record([failure])], MODELS)
    assert caught.value.failures[0].source_uri == empty.uri
    assert local_store.latest_id() is None and local_store.list_snapshots() == []
    sid = publish_docs(local_store, [make_doc("a.pdf")])["id"]
    with pytest.raises(NothingToPublish):
        publish_docs(local_store, [empty])  # every document with items was removed: keep the good snapshot
    assert local_store.latest_id() == sid and local_store.list_snapshots() == [sid]


# --- verification ----------------------------------------------------------------------------------------


@pytest.fixture
def two_snapshots(store: Store) -> tuple[dict, dict]:
    """Two snapshots; the second shares the first's shards (and adds one of its own per space)."""
    first = publish_docs(store, [make_doc("a.pdf"), make_doc("b.pdf")])
    second = publish_docs(store, [make_doc("a.pdf"), make_doc("b.pdf"), make_doc("c.pdf")])
    assert shard_file(first) == shard_file(second)
    return first, second


@pytest.mark.parametrize("victim", ["own items file", "shared shard file"])
def test_tampered_file_refused(store: Store, two_snapshots: tuple[dict, dict], victim: str,
                               capsys: pytest.CaptureFixture) -> None:
    first, second = two_snapshots
    assert mmrag(store, "verify", "--all") == 0
    key = snapshot_key(second["id"], "items.parquet") if victim == "own items file" else shard_file(first)
    flip_a_byte(store, key)
    shared = victim == "shared shard file"
    for sid in (first["id"], second["id"]) if shared else (second["id"],):
        with pytest.raises(SnapshotError, match=f"{key} does not match its checksum"):
            open_snapshot(store, sid)
    capsys.readouterr()
    assert mmrag(store, "verify", "--all") == 1
    out = capsys.readouterr().out
    assert f"{second['id']}: FAILED" in out
    assert (f"{first['id']}: FAILED" in out) == shared and (f"{first['id']}: ok" in out) == (not shared)


def test_missing_file_refused(store: Store, two_snapshots: tuple[dict, dict]) -> None:
    first, _ = two_snapshots
    store.delete(shard_file(first, "image"))
    for sid in store.list_snapshots():
        with pytest.raises(SnapshotError, match="is missing"):
            open_snapshot(store, sid)
    assert mmrag(store, "verify") == 1


def test_s3_cache_serves_the_verified_copy(s3_store: Store, capsys: pytest.CaptureFixture) -> None:
    """A reader loads remote files through its download cache, each copy checked against the manifest on
    download: a store object corrupted after this reader cached it cannot reach it. `verify` checks the
    stored objects themselves, so it notices."""
    sid = publish_docs(s3_store, [make_doc("a.pdf")])["id"]
    before = open_snapshot(s3_store)
    key = snapshot_key(sid, "items.parquet")
    flip_a_byte(s3_store, key)
    assert open_snapshot(s3_store).items.equals(before.items)
    assert mmrag(s3_store, "verify") == 1
    assert f"{key} does not match its checksum" in capsys.readouterr().out


def test_open_without_snapshot(local_store: Store) -> None:
    with pytest.raises(SnapshotError, match="no snapshot published"):
        open_snapshot(local_store)
    with pytest.raises(SnapshotError, match="not found"):
        open_snapshot(local_store, "20200101T000000000000Z")


# --- atomic writes ---------------------------------------------------------------------------------------


def test_failed_write_keeps_the_old_content(local_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    local_store.set_latest("one")

    def no_replace(src: str, dst: str) -> None:
        raise OSError("rename failed")

    with monkeypatch.context() as mp:
        mp.setattr(store_mod.os, "replace", no_replace)
        with pytest.raises(OSError, match="rename failed"):
            local_store.set_latest("two")
    assert local_store.latest_id() == "one"
    assert os.listdir(local_store.root) == ["LATEST"]


@pytest.mark.parametrize("bad", ["../../../../etc", "a/b", "..", "x..y", "/abs", "", "id with space", "é"])
def test_snapshot_ids_that_could_leave_the_store_are_refused(tmp_path: Path, bad: str) -> None:
    from mmrag_core.storage.store import InvalidSnapshotId, check_snapshot_id

    store = Store(str(tmp_path))
    with pytest.raises(InvalidSnapshotId):
        check_snapshot_id(bad)
    with pytest.raises(snapshot_mod.SnapshotError, match="invalid snapshot id"):
        snapshot_mod.load_manifest(store, bad or "\n")


def test_a_latest_pointing_outside_the_store_is_refused(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.write_bytes("LATEST", b"../../../../etc\n")
    with pytest.raises(snapshot_mod.SnapshotError, match="invalid snapshot id"):
        snapshot_mod.open_snapshot(store)
