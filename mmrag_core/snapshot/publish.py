"""From stored document records to a published snapshot: plan, encode, tombstone, compact, publish.

Shared by the indexing flow (which encodes shards on Ray) and by anything that runs in one process
(tests, tools): the ``encode`` callable is the only difference.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmrag_core.ingest.catalog import catalog_table
from mmrag_core.config import IndexSettings
from mmrag_core.index.build import (
    IndexPlan,
    ShardJob,
    SpaceState,
    build_spaces,
    compact_spaces,
    items_of,
    plan_index,
    run_shard_job,
)
from mmrag_core.storage.items import ITEM_SCHEMA, Failure, failures_to_table
from mmrag_core.storage.manifest import Manifest
from mmrag_core.index.lexical import build_state, lexical_for_run
from mmrag_core.snapshot.open import (
    NothingToPublish,
    SnapshotContent,
    publish,
    read_table,
    read_tombstones,
    spaces_of,
)
from mmrag_core.ingest.sources import DocRef
from mmrag_core.storage.store import Store, doc_key
from mmrag_core.index.shard_files import StoredShard
from mmrag_core.index.tombstones import as_tombstones

Encoder = Callable[[list[ShardJob]], list[StoredShard]]


def encode_locally(store: Store) -> Encoder:
    """Run shard jobs one after another in this process."""
    return lambda jobs: [run_shard_job(store, job) for job in jobs]


@dataclass
class IndexRequest:
    """One indexing run's inputs beyond the stored records."""

    docs: list[DocRef]
    discovery_failures: list[Failure]
    models: dict
    record_key: str
    config_key: str
    source: str
    stats: dict
    fresh: bool  # retrain codecs and encode everything again
    move_latest: bool = True  # False: publish a candidate snapshot, LATEST unchanged


def index_and_publish(store: Store, request: IndexRequest, parent: Manifest | None, settings: IndexSettings,
                      encode: Encoder | None = None) -> Manifest:
    """Index the current documents (their records stored) against ``parent`` and publish a snapshot."""
    encode = encode or encode_locally(store)
    base = None if request.fresh else parent
    catalog = read_table(store, parent, "catalog.parquet") if base else None
    plan = plan_index(store, request.docs, parent, catalog, request.fresh)  # ids continue from the parent's
    items = _items(store, plan, base)
    failures = _failures(store, plan, base, request.discovery_failures)
    if items.num_rows == 0:
        raise NothingToPublish(request.source, [Failure(**f) for f in failures.to_pylist()])
    t0 = time.perf_counter()
    spaces = build_spaces(store, plan, base, settings, request.record_key, encode)
    tombstones = as_tombstones(read_tombstones(store, base), plan.gone_ids) if base else np.empty(0, np.int64)
    t_index = time.perf_counter() - t0
    reasons = {name: r for name, s in spaces.items() if (r := s.compaction_reason(settings))}
    if reasons:
        spaces, tombstones = compact_spaces(store, spaces, tombstones), np.empty(0, np.int64)
    t_lexical = time.perf_counter()
    lexical_shards = lexical_for_run(store, items, {e.sha256 for e in plan.new}, base, request.record_key)
    lexical = build_state(store, lexical_shards, items.column("id").to_numpy(), settings,
                          compact="the vector spaces were compacted" if reasons else None)
    stats = {**request.stats, "seconds_index": round(t_index, 3),
             "seconds_compact": round(t_lexical - t0 - t_index, 3),
             "seconds_lexical": round(time.perf_counter() - t_lexical, 3),
             "documents_encoded": len(plan.new), "documents_tombstoned": len(plan.gone)}
    content = SnapshotContent(items, catalog_table([e.row() for e in plan.entries]), failures, tombstones, spaces,
                              request.models, request.source, stats, request.record_key, request.config_key,
                              plan.next_id, reasons or None, lexical)
    return publish(store, content, settings, parent=parent.id if parent else None, move_latest=request.move_latest)


def _items(store: Store, plan: IndexPlan, base: Manifest | None) -> pa.Table:
    """Kept documents' rows from the parent (under their current uri), then the new documents' rows."""
    tables = []
    if base:
        parent_items = read_table(store, base, "items.parquet")
        new = {e.sha256 for e in plan.new}
        uri_of = {e.sha256: e.uri for e in plan.entries if e.sha256 not in new}
        keep = pc.is_in(parent_items.column("doc_sha256"), pa.array(list(uri_of), pa.string()))
        kept = parent_items.filter(keep)
        uris = [uri_of[s] for s in kept.column("doc_sha256").to_pylist()]
        tables.append(kept.set_column(kept.column_names.index("source_uri"), "source_uri", pa.array(uris, pa.string())))
    tables.extend(items_of(store, plan.new))
    if not tables:
        empty = ITEM_SCHEMA.empty_table().drop_columns(["image_png"])
        return empty.append_column("item_key", pa.array([], pa.int64()))
    return pa.concat_tables(tables)


def _record_failures(store: Store, sha: str, uri: str) -> list[Failure]:
    """A document's failures, read from its record's Parquet footer."""
    with store.open(doc_key(sha)) as f:
        meta = pq.read_schema(f).metadata or {}
    out = [Failure(**f) for f in json.loads(meta.get(b"mmrag.failures", b"[]"))]
    for f in out:
        f.source_uri, f.doc_sha256 = uri, f.doc_sha256 or sha
    return out


def _failures(store: Store, plan: IndexPlan, base: Manifest | None, discovery: list[Failure]) -> pa.Table:
    """This listing's refusals, the parent's failures of kept documents, the new documents' failures."""
    rows: list[Failure] = list(discovery)
    new = {e.sha256 for e in plan.new}
    if base:
        uri_of = {e.sha256: e.uri for e in plan.entries if e.sha256 not in new}
        for f in read_table(store, base, "failures.parquet").to_pylist():
            if f.get("doc_sha256") in uri_of:
                rows.append(Failure(**{**f, "source_uri": uri_of[f["doc_sha256"]]}))
    for e in plan.new:
        rows.extend(_record_failures(store, e.sha256, e.uri))
    return failures_to_table(rows)


def compact_and_publish(store: Store, parent: Manifest, settings: IndexSettings, reason: str = "requested") -> Manifest:
    """A new snapshot with the parent's content, every space rewritten as one shard without tombstones."""
    tombstones = read_tombstones(store, parent)
    spaces: dict[str, SpaceState] = compact_spaces(store, spaces_of(parent), tombstones)
    items = read_table(store, parent, "items.parquet")
    shards = lexical_for_run(store, items, set(), parent, parent.record_key)  # all items if the parent has none
    lexical = build_state(store, shards, items.column("id").to_numpy(), compact=reason)
    content = SnapshotContent(
        items, read_table(store, parent, "catalog.parquet"),
        read_table(store, parent, "failures.parquet"), np.empty(0, np.int64), spaces, parent.models,
        parent.source, {**parent.stats, "compaction_of": parent.id}, parent.record_key,
        parent.config_key, parent.next_id, {name: reason for name in spaces}, lexical,
    )
    return publish(store, content, settings, parent=parent.id)
