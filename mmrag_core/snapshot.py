"""Immutable, versioned index snapshots: publish (write, verify, then move LATEST) and open.

A snapshot folder holds ``items.parquet`` (metadata, no vectors), ``failures.parquet``, one
``<space>.faiss`` per indexed space and ``manifest.json`` listing every file with its sha256.
Readers trust only what the manifest lists and verifies.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import pyarrow as pa
import pyarrow.parquet as pq

from mmrag_core.index import read_index, write_index
from mmrag_core.items import Failure
from mmrag_core.models.fingerprint import sha256_file
from mmrag_core.store import Store, atomic_write_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class SnapshotError(RuntimeError):
    """A snapshot is missing, incomplete or fails verification."""


class NothingToPublish(SnapshotError):
    """No document of the source produced any item: publishing would replace a good snapshot with an empty one."""

    def __init__(self, source: str, failures: list[Failure]) -> None:
        lines = [f"  - {f.source_uri} [{f.stage}]: {f.reason}" for f in failures[:50]]
        super().__init__(f"nothing to publish: no document in {source} produced any item; LATEST is unchanged."
                         + ("\n" + "\n".join(lines) if lines else ""))
        self.failures = failures


def new_snapshot_id(now: datetime | None = None) -> str:
    """A time-ordered id, e.g. ``20261127T210501123456Z``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


@dataclass
class SnapshotContent:
    """Everything a snapshot publishes, before it is written."""

    items: pa.Table  # metadata rows, no vectors, no image bytes
    failures: pa.Table
    indexes: dict[str, faiss.Index]  # space -> index
    models: dict  # space -> model description (or {"skipped": reason})
    source: str
    stats: dict
    catalog: pa.Table | None = None  # uri, sha256, size of every listed document


def publish(store: Store, content: SnapshotContent, snapshot_id: str | None = None) -> dict:
    """Write a snapshot, verify every file against its checksum, then move ``LATEST`` to it."""
    snapshot_id = snapshot_id or new_snapshot_id()
    final = store.snapshot_dir(snapshot_id)
    if final.exists():
        raise SnapshotError(f"snapshot {snapshot_id} already exists")
    tmp = store.snapshots_dir / f".tmp-{snapshot_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files: dict[str, dict] = {}
        pq.write_table(content.items, tmp / "items.parquet", compression="zstd")
        pq.write_table(content.failures, tmp / "failures.parquet", compression="zstd")
        if content.catalog is not None:
            pq.write_table(content.catalog, tmp / "catalog.parquet", compression="zstd")
        spaces: dict[str, dict] = {}
        for space, index in content.indexes.items():
            name = f"{space}.faiss"
            write_index(index, tmp / name)
            spaces[space] = {"file": name, "count": int(index.ntotal), "dim": int(index.d), "metric": "inner_product",
                             "index_type": "IDMap2,Flat"}
        for f in sorted(tmp.iterdir()):
            files[f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        manifest = {
            "format": FORMAT_VERSION,
            "id": snapshot_id,
            "parent": store.latest_id(),
            "created_at": datetime.now(timezone.utc).isoformat(),
            "source": content.source,
            "models": content.models,
            "spaces": spaces,
            "files": files,
            "counts": _counts(content.items, content.failures),
            "stats": content.stats,
            "failures": content.failures.to_pylist(),
        }
        atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        verify(tmp, manifest)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(store.latest_path, (snapshot_id + "\n").encode())
    return manifest


def _counts(items: pa.Table, failures: pa.Table) -> dict:
    kinds = items.column("kind").to_pylist()
    docs = set(items.column("doc_sha256").to_pylist())
    pages = {(d, p) for d, p in zip(items.column("doc_sha256").to_pylist(), items.column("page").to_pylist())}
    return {
        "documents": len(docs),
        "pages_with_items": len(pages),
        "items": items.num_rows,
        "items_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
        "failures": failures.num_rows,
        "documents_failed": len({u for u, p in zip(failures.column("source_uri").to_pylist(),
                                                   failures.column("page").to_pylist()) if p is None}),
    }


def verify(folder: Path, manifest: dict) -> None:
    """Raise SnapshotError unless every listed file exists with its recorded size and sha256."""
    for name, meta in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise SnapshotError(f"snapshot {manifest['id']}: file {name} is missing")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise SnapshotError(f"snapshot {manifest['id']}: file {name} does not match its checksum")


@dataclass
class Snapshot:
    """An opened, verified snapshot."""

    id: str
    folder: Path
    manifest: dict
    items: pa.Table
    indexes: dict[str, faiss.Index]


def read_manifest(store: Store, snapshot_id: str | None = None) -> dict:
    """The manifest of ``snapshot_id`` (default: LATEST)."""
    snapshot_id = snapshot_id or store.latest_id()
    if snapshot_id is None:
        raise SnapshotError(f"no snapshot published in store {store.root} (run `mmrag index` first)")
    path = store.snapshot_dir(snapshot_id) / MANIFEST
    if not path.is_file():
        raise SnapshotError(f"snapshot {snapshot_id} not found in store {store.root}")
    return json.loads(path.read_text())


def read_catalog(store: Store, snapshot_id: str | None = None) -> pa.Table | None:
    """The catalog of ``snapshot_id`` (default: LATEST); None when nothing is published or the
    snapshot predates catalogs."""
    snapshot_id = snapshot_id or store.latest_id()
    if snapshot_id is None:
        return None
    path = store.snapshot_dir(snapshot_id) / "catalog.parquet"
    return pq.read_table(path) if path.is_file() else None


def open_snapshot(store: Store, snapshot_id: str | None = None, verify_files: bool = True) -> Snapshot:
    """Resolve LATEST (or a pinned id), verify the manifest's files, load metadata and indexes."""
    manifest = read_manifest(store, snapshot_id)
    folder = store.snapshot_dir(manifest["id"])
    if verify_files:
        verify(folder, manifest)
    items = pq.read_table(folder / "items.parquet")
    indexes = {space: read_index(folder / meta["file"]) for space, meta in manifest["spaces"].items()}
    return Snapshot(manifest["id"], folder, manifest, items, indexes)
