"""Persisted document records, snapshot content, publish/open, LATEST, verification and atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import mmrag_core.snapshot as snapshot_mod
import mmrag_core.store as store_mod
from mmrag_core.build import snapshot_content
from mmrag_core.index import build_exact_index, read_index, search, write_index
from mmrag_core.items import Failure, Item, item_id
from mmrag_core.persist import build_record, read_record, space_vectors, stored_record_key, write_record
from mmrag_core.snapshot import (
    MANIFEST,
    SnapshotError,
    new_snapshot_id,
    open_snapshot,
    publish,
    read_manifest,
)
from mmrag_core.store import Store, atomic_write_bytes

TEXT_DIM = 16
IMAGE_DIM = 8


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_doc(rng: np.random.Generator, name: str, n_chunks: int = 3, n_images: int = 1) -> dict:
    """Items of one fake document: chunks with text vectors, images with image vectors."""
    sha = hashlib.sha256(name.encode()).hexdigest()
    uri = f"/corpus/{name}"
    items = [
        Item(item_id(sha, "chunk", p, 0), "chunk", uri, sha, p, (10.0, 20.0 + p, 300.5, 400.25), f"chunk {p} of {name}")
        for p in range(n_chunks)
    ]
    items += [
        Item(item_id(sha, "image", 0, o), "image", uri, sha, 0, (0.0, 0.0, 64.0, 48.0), f"ocr text {o}",
             ocr_confidence=88.5, text_source="ocr", ordinal=o, width=64, height=48,
             image_png=b"\x89PNG fake " + name.encode())
        for o in range(n_images)
    ]
    chunk_ids = np.array([it.id for it in items if it.kind == "chunk"], dtype=np.int64)
    image_ids = np.array([it.id for it in items if it.kind == "image"], dtype=np.int64)
    vectors = {
        "text": (chunk_ids, unit_vectors(rng, len(chunk_ids), TEXT_DIM)),
        "image": (image_ids, unit_vectors(rng, len(image_ids), IMAGE_DIM)),
    }
    return {"sha": sha, "uri": uri, "items": items, "vectors": vectors}


def make_record(doc: dict, failures: list[Failure] | None = None, stats: dict | None = None):
    return build_record(doc["sha"], doc["uri"], doc["items"], doc["vectors"], failures or [], "mk-1",
                        stats or {"pages": 3})


def content_for(store: Store, docs: list[dict], failures: list[Failure] | None = None):
    records = []
    for doc in docs:
        write_record(store, make_record(doc))
        records.append(read_record(store, doc["sha"]))
    models = {"text": {"name": "fake-text", "dim": TEXT_DIM}, "image": {"name": "fake-clip", "dim": IMAGE_DIM}}
    return snapshot_content(records, failures or [], models, "/corpus", {"run": 1})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def snapshot_ids(n: int) -> list[str]:
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return [new_snapshot_id(base + timedelta(seconds=i)) for i in range(n)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


# --- persist ---------------------------------------------------------------------------------------------


def test_record_round_trip(store: Store, rng: np.random.Generator) -> None:
    doc = make_doc(rng, "a.pdf", n_chunks=4, n_images=2)
    failures = [Failure(doc["uri"], "ocr", "tesseract failed", page=2, doc_sha256=doc["sha"])]
    stats = {"pages": 4, "ocr_pages": 1, "seconds": 0.5}
    write_record(store, make_record(doc, failures, stats))
    assert store.doc_path(doc["sha"]).is_file()
    assert leftovers(store.docs_dir) == []

    rec = read_record(store, doc["sha"])
    assert rec is not None
    assert rec.doc_sha256 == doc["sha"] and rec.source_uri == doc["uri"] and rec.record_key == "mk-1"
    assert rec.failures == failures
    assert rec.stats == stats
    assert rec.table.column("id").to_pylist() == [it.id for it in doc["items"]]
    assert rec.table.column("image_png").to_pylist()[-1] == doc["items"][-1].image_png
    assert rec.table.column("bbox").to_pylist()[0] == pytest.approx([10.0, 20.0, 300.5, 400.25])

    for space in ("text", "image"):
        ids, vecs = space_vectors(rec.table, space)
        want_ids, want_vecs = doc["vectors"][space]
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(vecs, want_vecs)
        assert vecs.dtype == np.float32

    # rows without a vector in a space are null there
    kinds = rec.table.column("kind").to_pylist()
    text_valid = rec.table.column("vec_text").is_valid().to_pylist()
    image_valid = rec.table.column("vec_image").is_valid().to_pylist()
    assert text_valid == [k == "chunk" for k in kinds]
    assert image_valid == [k == "image" for k in kinds]


def test_record_vectors_follow_ids_not_positions(store: Store, rng: np.random.Generator) -> None:
    doc = make_doc(rng, "b.pdf", n_chunks=3, n_images=0)
    ids, vecs = doc["vectors"]["text"]
    doc["vectors"]["text"] = (ids[::-1].copy(), vecs[::-1].copy())  # given in another order
    write_record(store, make_record(doc))
    got_ids, got_vecs = space_vectors(read_record(store, doc["sha"]).table, "text")
    assert dict(zip(got_ids.tolist(), map(tuple, got_vecs))) == dict(zip(ids.tolist(), map(tuple, vecs)))


def test_record_without_any_vectors(store: Store, rng: np.random.Generator) -> None:
    doc = make_doc(rng, "c.pdf", n_chunks=2, n_images=0)
    record = build_record(doc["sha"], doc["uri"], doc["items"], {}, [], "mk-1", {})
    write_record(store, record)
    rec = read_record(store, doc["sha"])
    for space in ("text", "image"):
        assert rec.table.column(f"vec_{space}").null_count == 2
        ids, vecs = space_vectors(rec.table, space)
        assert len(ids) == 0 and vecs is None


def test_read_record_missing_or_corrupt(store: Store) -> None:
    assert read_record(store, "0" * 64) is None
    path = store.doc_path("1" * 64)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet at all")
    assert read_record(store, "1" * 64) is None


# --- index -----------------------------------------------------------------------------------------------


def test_build_exact_index_search_and_io(tmp_path: Path, rng: np.random.Generator) -> None:
    ids = rng.integers(1, 2**62, size=20, dtype=np.int64)
    vecs = unit_vectors(rng, 20, TEXT_DIM)
    index = build_exact_index(ids, vecs)
    assert index.ntotal == 20 and index.d == TEXT_DIM
    scores, found = search(index, vecs[5], k=3)
    assert found[0][0] == ids[5] and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0][0] >= scores[0][1] >= scores[0][2]
    # k larger than the index is clamped
    scores, found = search(index, vecs[:2], k=100)
    assert found.shape == (2, 20) and (found >= 0).all()
    write_index(index, tmp_path / "x.faiss")
    again = read_index(tmp_path / "x.faiss")
    np.testing.assert_array_equal(search(again, vecs, 1)[1][:, 0], ids)


def test_build_exact_index_rejects_bad_input(rng: np.random.Generator) -> None:
    vecs = unit_vectors(rng, 3, 4)
    with pytest.raises(ValueError, match="duplicate"):
        build_exact_index(np.array([1, 2, 1], dtype=np.int64), vecs)
    with pytest.raises(ValueError, match="do not match"):
        build_exact_index(np.array([1, 2], dtype=np.int64), vecs)
    with pytest.raises(ValueError, match="do not match"):
        build_exact_index(np.array([1, 2, 3, 4], dtype=np.int64), vecs[0])


# --- publish / open ----------------------------------------------------------------------------------------


def test_publish_and_open(store: Store, rng: np.random.Generator) -> None:
    docs = [make_doc(rng, "a.pdf", 3, 1), make_doc(rng, "b.png", 0, 1), make_doc(rng, "c.pdf", 2, 0)]
    run_failures = [Failure("/corpus/bad.docx", "discover", "unsupported file type '.docx'")]
    content = content_for(store, docs, run_failures)
    assert "vec_text" not in content.items.column_names and "image_png" not in content.items.column_names

    manifest = publish(store, content)
    sid = manifest["id"]
    assert store.latest_id() == sid
    assert store.list_snapshots() == [sid]
    assert manifest["parent"] is None
    assert manifest["models"]["text"]["name"] == "fake-text"
    assert manifest["source"] == "/corpus" and manifest["stats"] == {"run": 1}
    assert manifest["counts"] == {
        "documents": 3, "pages_with_items": 3 + 1 + 2, "items": 7,
        "items_by_kind": {"chunk": 5, "image": 2}, "failures": 1, "documents_failed": 1,
    }
    assert manifest["spaces"]["text"]["count"] == 5 and manifest["spaces"]["text"]["dim"] == TEXT_DIM
    assert manifest["spaces"]["image"]["count"] == 2 and manifest["spaces"]["image"]["dim"] == IMAGE_DIM
    assert manifest["failures"][0]["source_uri"] == "/corpus/bad.docx"
    folder = store.snapshot_dir(sid)
    assert set(manifest["files"]) == {"items.parquet", "failures.parquet", "text.faiss", "image.faiss"}
    for name, meta in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert leftovers(store.root) == []

    snap = open_snapshot(store)
    assert snap.id == sid and snap.folder == folder
    assert not [c for c in snap.items.column_names if c.startswith("vec_") or c == "image_png"]
    assert snap.items.num_rows == 7
    assert sorted(snap.items.column("id").to_pylist()) == sorted(it.id for d in docs for it in d["items"])
    assert snap.indexes["text"].ntotal == 5 and snap.indexes["image"].ntotal == 2
    for space in ("text", "image"):
        for doc in docs:
            ids, vecs = doc["vectors"][space]
            if len(ids):
                scores, found = search(snap.indexes[space], vecs, k=2)
                np.testing.assert_array_equal(found[:, 0], ids)
                np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_record_failures_reach_the_snapshot(store: Store, rng: np.random.Generator) -> None:
    doc = make_doc(rng, "a.pdf")
    page_failure = Failure(doc["uri"], "ocr", "page 7 unreadable", page=7, doc_sha256=doc["sha"])
    write_record(store, make_record(doc, [page_failure]))
    content = snapshot_content([read_record(store, doc["sha"])], [Failure("/x", "discover", "too big")], {}, "/c", {})
    assert content.failures.num_rows == 2
    manifest = publish(store, content)
    assert {f["reason"] for f in manifest["failures"]} == {"too big", "page 7 unreadable"}


def test_publish_empty_content(store: Store) -> None:
    content = snapshot_content([], [], {}, "/empty", {})
    manifest = publish(store, content)
    assert manifest["counts"]["items"] == 0 and manifest["spaces"] == {}
    snap = open_snapshot(store)
    assert snap.items.num_rows == 0 and snap.indexes == {}


def test_latest_moves_and_parent_chain(store: Store, rng: np.random.Generator) -> None:
    ids = snapshot_ids(3)
    published = []
    for sid in (ids[1], ids[0], ids[2]):  # publish order differs from id order
        published.append(publish(store, content_for(store, [make_doc(rng, f"{sid}.pdf")]), snapshot_id=sid))
        assert store.latest_id() == sid
    assert [m["parent"] for m in published] == [None, ids[1], ids[0]]
    assert store.list_snapshots() == ids  # sorted, oldest id first
    # a pinned id opens an older snapshot; LATEST is the default
    assert open_snapshot(store, ids[1]).id == ids[1]
    assert open_snapshot(store).id == ids[2]
    assert read_manifest(store, ids[0])["parent"] == ids[1]


def test_list_snapshots_ignores_hidden_and_files(store: Store, rng: np.random.Generator) -> None:
    assert store.list_snapshots() == []
    sid = publish(store, content_for(store, [make_doc(rng, "a.pdf")]))["id"]
    (store.snapshots_dir / ".tmp-20990101T000000000000Z").mkdir()
    (store.snapshots_dir / "stray-file").write_text("x")
    assert store.list_snapshots() == [sid]


def test_snapshot_ids_are_time_ordered() -> None:
    a, b = snapshot_ids(2)
    assert a < b and a == "20260102T030405000000Z"


def test_publish_existing_id_refused(store: Store, rng: np.random.Generator) -> None:
    (sid,) = snapshot_ids(1)
    publish(store, content_for(store, [make_doc(rng, "a.pdf")]), snapshot_id=sid)
    with pytest.raises(SnapshotError, match="already exists"):
        publish(store, content_for(store, [make_doc(rng, "b.pdf")]), snapshot_id=sid)
    assert store.latest_id() == sid


@pytest.mark.parametrize("victim", ["items.parquet", "text.faiss", "image.faiss", "failures.parquet"])
def test_tampered_file_refused(store: Store, rng: np.random.Generator, victim: str) -> None:
    sid = publish(store, content_for(store, [make_doc(rng, "a.pdf")]))["id"]
    path = store.snapshot_dir(sid) / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        open_snapshot(store)
    # the caller may explicitly skip verification
    if victim == "failures.parquet":
        assert open_snapshot(store, verify_files=False).id == sid


def test_missing_or_truncated_file_refused(store: Store, rng: np.random.Generator) -> None:
    ids = snapshot_ids(2)
    publish(store, content_for(store, [make_doc(rng, "a.pdf")]), snapshot_id=ids[0])
    publish(store, content_for(store, [make_doc(rng, "b.pdf")]), snapshot_id=ids[1])
    (store.snapshot_dir(ids[0]) / "text.faiss").unlink()
    with pytest.raises(SnapshotError, match="missing"):
        open_snapshot(store, ids[0])
    with open(store.snapshot_dir(ids[1]) / "items.parquet", "ab") as f:
        f.write(b"\0")
    with pytest.raises(SnapshotError, match="checksum"):
        open_snapshot(store, ids[1])


def test_open_without_snapshot(store: Store) -> None:
    with pytest.raises(SnapshotError, match="no snapshot published"):
        open_snapshot(store)
    with pytest.raises(SnapshotError, match="not found"):
        open_snapshot(store, "20200101T000000000000Z")


def _assert_failed_publish_left_nothing(store: Store, before_latest: str | None, before: list[str]) -> None:
    assert store.latest_id() == before_latest
    assert store.list_snapshots() == before
    assert [p.name for p in store.snapshots_dir.iterdir() if p.name.startswith(".")] == []
    assert leftovers(store.root) == []


def test_failed_verify_leaves_latest_and_no_folder(
    store: Store, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = snapshot_ids(2)
    publish(store, content_for(store, [make_doc(rng, "a.pdf")]), snapshot_id=ids[0])
    content = content_for(store, [make_doc(rng, "b.pdf")])

    def broken_verify(folder: Path, manifest: dict) -> None:
        raise SnapshotError("disk lied")

    monkeypatch.setattr(snapshot_mod, "verify", broken_verify)
    with pytest.raises(SnapshotError, match="disk lied"):
        publish(store, content, snapshot_id=ids[1])
    _assert_failed_publish_left_nothing(store, ids[0], [ids[0]])
    monkeypatch.undo()
    assert open_snapshot(store).id == ids[0]  # the previous snapshot is still fine


def test_failed_index_write_leaves_latest_and_no_folder(
    store: Store, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = snapshot_ids(2)
    publish(store, content_for(store, [make_doc(rng, "a.pdf")]), snapshot_id=ids[0])
    content = content_for(store, [make_doc(rng, "b.pdf")])

    def failing_write(index, path: Path) -> None:  # noqa: ANN001
        path.write_bytes(b"half an ind")
        raise OSError("No space left on device")

    monkeypatch.setattr(snapshot_mod, "write_index", failing_write)
    with pytest.raises(OSError, match="No space left"):
        publish(store, content, snapshot_id=ids[1])
    _assert_failed_publish_left_nothing(store, ids[0], [ids[0]])


def test_unwritable_index_object_leaves_nothing(store: Store, rng: np.random.Generator) -> None:
    content = content_for(store, [make_doc(rng, "a.pdf")])
    content.indexes["text"] = object()  # not a FAISS index: writing it fails
    with pytest.raises(TypeError):
        publish(store, content)
    _assert_failed_publish_left_nothing(store, None, [])


# --- atomic writes -----------------------------------------------------------------------------------------


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "LATEST"
    atomic_write_bytes(target, b"one\n")
    atomic_write_bytes(target, b"two\n")
    assert target.read_bytes() == b"two\n"
    assert os.listdir(target.parent) == ["LATEST"]


def test_atomic_write_bytes_failure_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "LATEST"
    atomic_write_bytes(target, b"old\n")

    def no_replace(src: str, dst: str) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(store_mod.os, "replace", no_replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_bytes(target, b"new\n")
    monkeypatch.undo()
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["LATEST"]


def test_store_paths(tmp_path: Path) -> None:
    s = Store(f"file://{tmp_path}")
    assert s.root == tmp_path.resolve()
    assert s.doc_path("ab") == tmp_path.resolve() / "docs" / "ab.parquet"
    assert s.latest_id() is None
    (tmp_path / "LATEST").write_text("\n")
    assert s.latest_id() is None
    with pytest.raises(NotImplementedError):
        Store("s3://bucket/prefix")


def test_items_table_has_schema_types(store: Store, rng: np.random.Generator) -> None:
    content = content_for(store, [make_doc(rng, "a.pdf")])
    schema = content.items.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("page").type == pa.int32()
    assert schema.metadata is None  # record metadata (failures, stats) is not copied into the snapshot


def test_stored_record_key_reads_the_footer_only(store: Store, rng: np.random.Generator) -> None:
    doc = make_doc(rng, "k.pdf")
    assert stored_record_key(store, doc["sha"]) is None
    write_record(store, build_record(doc["sha"], doc["uri"], doc["items"], doc["vectors"], [], "key-7", {}))
    assert stored_record_key(store, doc["sha"]) == "key-7"
    store.doc_path(doc["sha"]).write_bytes(b"not parquet")
    assert stored_record_key(store, doc["sha"]) is None
