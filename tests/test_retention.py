"""Snapshot retention and garbage collection (local folder and S3): what the rule keeps, what no kept snapshot
references, the grace period for unpublished files, and the CLI's dry run. Time is simulated through ``now``."""
from __future__ import annotations

import time
from datetime import datetime

import pytest

from mmrag_core.snapshot.retention import plan_gc, run_gc
from mmrag_core.storage.manifest import Manifest
from mmrag_core.snapshot.open import new_snapshot_id, open_snapshot, read_manifest, read_table, snapshot_key, verify
from mmrag_core.storage.store import LATEST, MANIFEST, Store, doc_key
from mmrag_core.index.shard_files import CODEC_MARKER, SHARD_MARKER, codec_dir, shard_dir
from tests.synthetic_docs import (  # noqa: F401 - fixtures
    assert_finds,
    local_store_fixture,
    make_doc,
    mmrag,
    publish_docs,
    store_fixture,
)

HOUR = 3600.0


@pytest.fixture
def history(store: Store) -> list[dict]:
    """Four snapshots: [a, b]; c added (a second shard); a changed and everything retrained (new codecs, one
    new shard per space); d added (a shard beside the retrained one, which it shares)."""
    a, b, c, d = (make_doc(n) for n in ("a.pdf", "b.pdf", "c.pdf", "d.pdf"))
    a2 = make_doc("a.pdf", version=1)
    steps = ([a, b], [a, b, c], [a2, b, c], [a2, b, c, d])
    return [publish_docs(store, docs, fresh=n == 2) for n, docs in enumerate(steps)]


def files_of(manifests: list[dict]) -> set[str]:
    return {key for m in manifests for key in m["files"]}


def later(seconds: float) -> float:
    return time.time() + seconds


def created(manifest: dict) -> float:
    return datetime.fromisoformat(manifest["created_at"]).timestamp()


@pytest.mark.parametrize(("store", "rule"), [("local", "keep_last"), ("local", "keep_days"), ("local", "latest"),
                                            ("s3", "keep_last")], indirect=["store"])
def test_gc_keeps_the_rule_and_what_it_references(store: Store, history: list[dict], rule: str) -> None:
    """Three ways of keeping the last two snapshots; the files only the other two used go."""
    old, kept = history[:2], history[2:]
    now = later(2 * HOUR)
    if rule == "keep_last":
        plan = plan_gc(store, keep_last=2, keep_days=0, grace_seconds=HOUR, now=now)
    elif rule == "keep_days":  # the age limit falls between the second and the third snapshot
        age = now - (created(history[1]) + created(history[2])) / 2
        plan = plan_gc(store, keep_last=1, keep_days=age / 86400, grace_seconds=HOUR, now=now)
    else:  # LATEST rolled back to the third snapshot; keep_last adds the newest
        store.set_latest(history[2]["id"])
        plan = plan_gc(store, keep_last=1, keep_days=0, grace_seconds=HOUR, now=now)
    assert plan.kept == [m["id"] for m in kept]
    assert plan.dropped_snapshots == [m["id"] for m in old]
    unreferenced = files_of(old) - files_of(kept)
    assert {k.split("/")[0] for k in unreferenced} == {"snapshots", "codecs", "shards", "lexical"}
    assert doc_key(make_doc("a.pdf").sha) in plan.delete  # a's first version: in no kept catalog
    assert unreferenced < set(plan.delete) and not files_of(kept) & set(plan.delete)
    latest = store.latest_id()

    assert run_gc(store, plan) == len(plan.delete)
    remaining = set(store.find(""))
    assert not remaining & set(plan.delete) and files_of(kept) <= remaining
    assert store.list_snapshots() == plan.kept and store.latest_id() == latest
    for m in kept:
        open_snapshot(store, m["id"])
    assert mmrag(store, "verify", "--all") == 0
    # the next incremental run finds everything it needs
    docs = [make_doc(n, version=v) for n, v in (("a.pdf", 1), ("b.pdf", 0), ("c.pdf", 0), ("d.pdf", 0), ("e.pdf", 0))]
    store.set_latest(history[3]["id"])
    publish_docs(store, docs)
    snap = open_snapshot(store)
    for doc in docs:
        assert_finds(snap, doc)


def test_unreferenced_files_wait_for_the_grace_period(store: Store, history: list[dict]) -> None:
    """Dropped snapshots go at once; files no kept snapshot lists go only once older than the grace period:
    an indexing run may be about to publish them."""
    unfinished = [snapshot_key(new_snapshot_id(), "items.parquet"), "shards/text/0123456789abcdef/index.faiss"]
    for key in unfinished:
        store.write_bytes(key, b"written by a run that has not published yet")
    soon = plan_gc(store, keep_last=1, keep_days=0, grace_seconds=HOUR, now=later(60))
    assert soon.dropped_snapshots == [m["id"] for m in history[:3]]
    assert {k.split("/")[0] for k in soon.delete} == {"snapshots"}
    assert {"shards/text/0123456789abcdef", unfinished[0].rsplit("/", 1)[0]} <= set(soon.young)
    run_gc(store, soon)
    assert all(store.exists(k) for k in unfinished) and store.list_snapshots() == [history[3]["id"]]

    late = plan_gc(store, keep_last=1, keep_days=0, grace_seconds=HOUR, now=later(2 * HOUR))
    assert late.young == [] and set(unfinished) <= set(late.delete)
    run_gc(store, late)
    assert set(store.find("")) == needed_by(store, history[3])
    assert mmrag(store, "verify", "--all") == 0


def needed_by(store: Store, manifest: dict) -> set[str]:
    """Every object a snapshot needs: LATEST, its folder, its documents' records, and its codec, shard and
    lexical shard folders (the files its manifest lists and their markers)."""
    keys = {LATEST, snapshot_key(manifest["id"], MANIFEST), *manifest["files"]}
    keys |= {doc_key(sha) for sha in read_table(store, Manifest.of(manifest), "catalog.parquet").column("sha256").to_pylist()}
    for meta in manifest["spaces"].values():
        keys.add(f"{codec_dir(meta['codec']['space'], meta['codec']['id'])}/{CODEC_MARKER}")
        keys |= {f"{shard_dir(s['space'], s['id'])}/{SHARD_MARKER}" for s in meta["shards"]}
    keys |= {f"lexical/{s['id']}/shard.json" for s in manifest["lexical"]["shards"]}  # the lexical shards' markers
    return keys


def test_gc_dry_run_deletes_nothing(store: Store, history: list[dict], capsys: pytest.CaptureFixture) -> None:
    before = store.find("")
    args = ("gc", "--keep-last", "1", "--keep-days", "0", "--grace-seconds", "0")
    assert mmrag(store, *args, "--dry-run") == 0
    assert "would delete 3 snapshot(s)" in capsys.readouterr().out
    assert store.find("") == before
    assert mmrag(store, *args) == 0
    assert "deleted 3 snapshot(s)" in capsys.readouterr().out
    assert store.list_snapshots() == [history[3]["id"]] and mmrag(store, "verify") == 0


def test_interrupted_gc_leaves_every_listed_snapshot_whole(local_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests are deleted first: at every point of a gc, each snapshot still listed has all its files."""
    for docs in (["a.pdf"], ["a.pdf", "b.pdf"], ["b.pdf", "c.pdf"]):
        publish_docs(local_store, [make_doc(n) for n in docs])
    plan = plan_gc(local_store, keep_last=1, keep_days=0, grace_seconds=0, now=later(60))
    delete = local_store.delete
    checked = []

    def delete_then_check(key: str) -> None:
        delete(key)
        for sid in local_store.list_snapshots():
            verify(local_store, read_manifest(local_store, sid), checksums=False)
        checked.append(key)

    monkeypatch.setattr(local_store, "delete", delete_then_check)
    run_gc(local_store, plan)
    assert len(checked) == len(plan.delete) > 2
