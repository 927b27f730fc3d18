"""Immutable, versioned index snapshots: publish (write, verify, then move LATEST), open, verify.

A snapshot's own folder holds ``items.parquet`` (metadata, no vectors), ``catalog.parquet`` (documents and
their id ranges), ``failures.parquet``, ``tombstones.npy``, ``lexical/`` (the BM25 matrix of its live items,
:mod:`mmrag_core.index.lexical`) and, written last, ``manifest.json``. The manifest lists every file the
snapshot needs with its sha256 and size: its own files and the codec, shard and lexical shard files it shares
with other snapshots. Readers trust only what the manifest lists and verifies.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmrag_core.config import IndexSettings
from mmrag_core.storage.faults import crash_point
from mmrag_core.index.build import SpaceState, space_state_from_manifest
from mmrag_core.storage.items import UNSUPPORTED, Failure
from mmrag_core.storage.manifest import FORMAT_VERSION, Counts, FileMeta, Manifest
from mmrag_core.index.lexical import LEXICAL, LexicalIndex, LexicalState
from mmrag_core.index.search import SpaceIndex
from mmrag_core.storage.store import MANIFEST, ChecksumMismatch, InvalidSnapshotId, Store, snapshot_key
from mmrag_core.index.shard_files import open_shard

OWN_FILES = ("items.parquet", "catalog.parquet", "failures.parquet", "tombstones.npy")


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
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


@dataclass
class SnapshotContent:
    """Everything a snapshot publishes, before it is written."""

    items: pa.Table  # metadata rows, no vectors, no image bytes
    catalog: pa.Table
    failures: pa.Table
    tombstones: np.ndarray
    spaces: dict[str, SpaceState]
    models: dict  # space -> model description (or {"skipped": reason})
    source: str
    stats: dict
    record_key: str = ""
    config_key: str = ""
    next_id: int = 0
    compacted: dict[str, str] | None = None  # space -> why it was compacted, when it was
    lexical: LexicalState | None = None  # the BM25 index over the items' text (its shards and files)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.int64))
    return buf.getvalue()


def _parquet_bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def publish(store: Store, content: SnapshotContent, settings: IndexSettings, parent: str | None = None,
            snapshot_id: str | None = None, move_latest: bool = True) -> Manifest:
    """Write the snapshot's own files, verify every file it references, write the manifest, move LATEST.
    Without ``move_latest`` the snapshot is published as a candidate: complete and readable by id, LATEST
    unchanged (the fine-tuning gate moves LATEST only when the candidate evaluates better)."""
    snapshot_id = snapshot_id or new_snapshot_id()
    if store.exists(snapshot_key(snapshot_id, MANIFEST)):
        raise SnapshotError(f"snapshot {snapshot_id} already exists")
    own = {"items.parquet": _parquet_bytes(content.items), "catalog.parquet": _parquet_bytes(content.catalog),
           "failures.parquet": _parquet_bytes(content.failures), "tombstones.npy": _npy_bytes(content.tombstones)}
    if content.lexical is not None:
        own.update({f"{LEXICAL}/{name}": data for name, data in content.lexical.files.items()})
    files: dict[str, FileMeta] = {}
    for name, data in own.items():
        store.write_bytes(snapshot_key(snapshot_id, name), data)
        files[snapshot_key(snapshot_id, name)] = FileMeta(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    spaces = {name: state.to_manifest(settings) for name, state in content.spaces.items()}
    shared: dict[str, dict] = {}  # codec, shard and lexical shard files: {sha256, bytes} as their markers list them
    for state in content.spaces.values():
        shared.update(state.codec.files)
        for shard in state.shards:
            shared.update(shard.files)
    if content.lexical is not None:
        for lexical_shard in content.lexical.shards:
            shared.update(lexical_shard.files)
    files.update({key: FileMeta(**meta) for key, meta in shared.items()})
    manifest = Manifest(
        format=FORMAT_VERSION,
        id=snapshot_id,
        parent=parent,
        created_at=datetime.now(UTC).isoformat(),
        source=content.source,
        models=content.models,
        record_key=content.record_key,
        config_key=content.config_key,
        next_id=int(content.next_id),
        spaces=spaces,
        lexical=content.lexical.to_manifest(snapshot_id) if content.lexical is not None else None,
        tombstones=len(content.tombstones),
        files=files,
        counts=_counts(content.items, content.failures),
        stats=content.stats,
        failures=content.failures.to_pylist(),
        compacted=content.compacted,
    )
    verify(store, manifest, checksums=False)  # every referenced file is there with its size
    for key, meta in files.items():  # the files this publish wrote are read back and hashed
        if key.startswith(snapshot_key(snapshot_id)) and store.checksum(key) != meta.sha256:
            raise SnapshotError(f"snapshot {snapshot_id}: {key} does not match its checksum after writing")
    crash_point("snapshot-files-written")
    store.write_bytes(snapshot_key(snapshot_id, MANIFEST),
                      json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode())
    crash_point("manifest-written")
    if move_latest:
        store.set_latest(snapshot_id)
    return manifest


def _counts(items: pa.Table, failures: pa.Table) -> Counts:
    kinds = items.column("kind").to_pylist()
    docs = set(items.column("doc_sha256").to_pylist())
    pages = {(d, p) for d, p in zip(items.column("doc_sha256").to_pylist(), items.column("page").to_pylist())}
    return Counts(
        documents=len(docs),
        pages_with_items=len(pages),
        items=items.num_rows,
        items_by_kind={k: kinds.count(k) for k in sorted(set(kinds))},
        failures=failures.num_rows,
        documents_failed=len({u for u, p, r in zip(failures.column("source_uri").to_pylist(),
                                                   failures.column("page").to_pylist(),
                                                   failures.column("reason").to_pylist())
                              if p is None and not str(r).startswith(UNSUPPORTED)}),  # skipped: not failed
    )


def verify(store: Store, manifest: Manifest | dict, checksums: bool = True, cached: bool = False) -> None:
    """Raise SnapshotError unless every listed file exists with its recorded size (and sha256).

    With ``cached``, a remote file's checksum may be vouched for by the local download cache (a copy is
    kept by content hash only once it matched): enough before loading *from that cache*, as
    :func:`open_snapshot` does, but not a check of the stored object itself, which is what the default
    (streaming every object's bytes) is.
    """
    manifest = Manifest.of(manifest)
    for key, meta in manifest.files.items():
        if not store.exists(key):
            raise SnapshotError(f"snapshot {manifest.id}: file {key} is missing")
        if store.size(key) != meta.bytes:
            raise SnapshotError(f"snapshot {manifest.id}: file {key} has {store.size(key)} bytes, "
                                f"its manifest says {meta.bytes}")
        if checksums:
            try:
                ok = bool(store.local_file(key, meta.sha256)) if cached and store.remote else \
                    store.checksum(key) == meta.sha256
            except ChecksumMismatch:
                ok = False
            if not ok:
                raise SnapshotError(f"snapshot {manifest.id}: file {key} does not match its checksum "
                                    "(corrupt or modified); refusing to load it")


@dataclass
class Snapshot:
    """An opened, verified snapshot."""

    id: str
    manifest: Manifest
    items: pa.Table
    indexes: dict[str, SpaceIndex]
    lexical: LexicalIndex | None = None  # BM25 over the items' text; None for a snapshot without one
    store: Store | None = None  # where it was opened from (a fine-tuned text model lives there too)


def load_manifest(store: Store, snapshot_id: str | None = None) -> Manifest:
    """The manifest of ``snapshot_id`` (default: LATEST)."""
    snapshot_id = snapshot_id or store.latest_id()
    if snapshot_id is None:
        published = store.list_snapshots()
        if published:  # LATEST deleted or lost: the snapshots are still there, name one
            raise SnapshotError(f"LATEST is missing in store {store.uri}, though {len(published)} snapshot(s) are "
                                f"published: pass --snapshot {published[-1]} (the newest), or run `mmrag index` "
                                "to publish a new LATEST")
        raise SnapshotError(f"no snapshot published in store {store.uri} (run `mmrag index` first)")
    try:
        manifest = json.loads(store.read_bytes(snapshot_key(snapshot_id, MANIFEST)))
    except InvalidSnapshotId as e:
        raise SnapshotError(f"{e} (store {store.uri})") from None
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {snapshot_id} not found in store {store.uri}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise SnapshotError(f"snapshot {snapshot_id} has format {manifest.get('format')}, this mmrag reads "
                            f"{FORMAT_VERSION}: re-index the source into a new store")
    return Manifest.from_json(manifest)


def latest_manifest(store: Store) -> Manifest | None:
    """LATEST's manifest, or None when nothing is published yet."""
    return load_manifest(store) if store.latest_id() else None


def read_manifest(store: Store, snapshot_id: str | None = None) -> dict:
    """The manifest of ``snapshot_id`` (default: LATEST) as its JSON document, for JSON output and run reports
    (the CLI, the indexing flow); code reads :func:`load_manifest`'s model."""
    return load_manifest(store, snapshot_id).to_json()


def read_latest_manifest(store: Store) -> dict | None:
    """LATEST's manifest as its JSON document (see :func:`read_manifest`), or None when nothing is published."""
    return read_manifest(store) if store.latest_id() else None


def _own_file(store: Store, manifest: Manifest, name: str) -> str:
    """A local path of one of the snapshot's own files: remote ones come through the download cache,
    checked against the manifest's sha256, so what is read is what :func:`verify` vouched for."""
    key = snapshot_key(manifest.id, name)
    return str(store.local_file(key, manifest.files[key].sha256))


def read_table(store: Store, manifest: Manifest, name: str) -> pa.Table:
    """One of a snapshot's own Parquet tables (items, catalog, failures)."""
    return pq.read_table(_own_file(store, manifest, name))


def read_tombstones(store: Store, manifest: Manifest) -> np.ndarray:
    return np.load(_own_file(store, manifest, "tombstones.npy"))


def spaces_of(manifest: Manifest) -> dict[str, SpaceState]:
    return {name: space_state_from_manifest(meta) for name, meta in manifest.spaces.items()}


def open_snapshot(store: Store, snapshot_id: str | None = None, verify_files: bool = True) -> Snapshot:
    """Resolve LATEST (or a pinned id), verify every file's checksum, load metadata and indexes."""
    manifest = load_manifest(store, snapshot_id)
    if verify_files:
        verify(store, manifest, cached=True)
    items = read_table(store, manifest, "items.parquet")
    tombstones = read_tombstones(store, manifest)
    indexes = {}
    for name, state in spaces_of(manifest).items():
        indexes[name] = SpaceIndex([open_shard(store, s) for s in state.shards], state.codec.spec,
                                   tombstones, state.live)
    return Snapshot(manifest.id, manifest, items, indexes, LexicalIndex.open(store, manifest), store)
