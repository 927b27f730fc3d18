"""Incremental vector indexing: plan ids, train (or reuse) a codec per space, encode new documents into
shards, merge them, tombstone what left, compact when worthwhile.

A run never rewrites what a published snapshot references. It allocates item ids for documents new since
the parent snapshot (contiguous per document, in sha256 order, from the parent's ``next_id``, so a re-run
after a crash plans exactly the same ids and shards), encodes them into new shards with the parent's
codec, and tombstones the id ranges of documents that were removed or changed. Everything here is plain
Python; the flow runs :func:`run_shard_job` on Ray workers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mmrag_core.index.codec import CodecSpec, choose_codec, serialize_codec, train_codec, tune_nprobe
from mmrag_core.config import IndexSettings
from mmrag_core.storage.records import SPACES, read_record, record_counts, space_vectors
from mmrag_core.index.shards import encode_shard, merge_shards
from mmrag_core.ingest.sources import DocRef
from mmrag_core.storage.manifest import Manifest, SpaceMeta
from mmrag_core.storage.names import ids_digest, short_id
from mmrag_core.storage.store import Store
from mmrag_core.index.shard_files import (
    StoredCodec,
    StoredShard,
    codec_bytes,
    load_codec,
    load_shard_marker,
    open_shard,
    save_codec,
    save_shard,
)
from mmrag_core.index.tombstones import as_tombstones

log = logging.getLogger(__name__)
SEED = 0
TUNE_K = 10


@dataclass
class DocEntry:
    """A current document and the index ids its items hold."""

    uri: str
    sha256: str
    size: int
    id_start: int
    id_count: int
    vectors: dict[str, int]

    def ids(self) -> np.ndarray:
        return np.arange(self.id_start, self.id_start + self.id_count, dtype=np.int64)

    def row(self) -> dict:
        return {"uri": self.uri, "sha256": self.sha256, "size": self.size, "id_start": self.id_start,
                "id_count": self.id_count, **{f"vectors_{s}": self.vectors.get(s, 0) for s in SPACES}}


@dataclass
class IndexPlan:
    """What a run indexes: every current document with its ids, which are new, which ids are dead."""

    fresh: bool  # new codecs; every document encoded again; no tombstones carried over
    entries: list[DocEntry]  # every current document, in listing order
    new: list[DocEntry]  # documents to encode into new shards
    gone: list[DocEntry]  # documents of the parent that are no longer current
    next_id: int

    @property
    def gone_ids(self) -> np.ndarray:
        return as_tombstones(*[e.ids() for e in self.gone]) if self.gone else np.empty(0, np.int64)

    def live_vectors(self, space: str) -> int:
        return sum(e.vectors.get(space, 0) for e in self.entries)


def _entry_from_row(row: dict, uri: str | None = None) -> DocEntry:
    return DocEntry(uri or row["uri"], row["sha256"], int(row["size"]), int(row["id_start"]), int(row["id_count"]),
                    {s: int(row.get(f"vectors_{s}") or 0) for s in SPACES})


def plan_index(store: Store, docs: list[DocRef], parent: Manifest | None, parent_catalog: pa.Table | None,
               fresh: bool) -> IndexPlan:
    """Allocate ids to the documents new since ``parent`` (all of them when ``fresh``); their records must
    be stored already. Documents whose bytes the parent indexed keep their ids (under their current uri)."""
    before = {} if fresh or parent_catalog is None else {r["sha256"]: r for r in parent_catalog.to_pylist()}
    next_id = parent.next_id if parent else 0
    current = {d.sha256: d for d in docs}
    allocated: dict[str, DocEntry] = {}
    for sha in sorted(set(current) - set(before)):
        counts = record_counts(store, sha)
        d = current[sha]
        allocated[sha] = DocEntry(d.uri, sha, d.size, next_id, int(counts["items"]),
                                  {s: int(n) for s, n in counts["vectors"].items()})
        next_id += int(counts["items"])
    entries = [allocated.get(d.sha256) or _entry_from_row(before[d.sha256], d.uri) for d in docs]
    new = [e for e in entries if e.sha256 in allocated]
    gone = [_entry_from_row(r) for sha, r in before.items() if sha not in current]
    return IndexPlan(fresh, entries, new, gone, next_id)


# ---- reading vectors back from the document records ---------------------------------------------------------


def gather_vectors(store: Store, entries: Iterable[DocEntry], space: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(index ids, vectors) of ``space`` for these documents, read from their stored records."""
    id_parts, vec_parts = [], []
    for e in entries:
        if not e.vectors.get(space):
            continue
        record = read_record(store, e.sha256)
        if record is None:
            raise FileNotFoundError(f"the stored record of {e.uri} ({e.sha256}) is missing or unreadable")
        if record.table.num_rows != e.id_count:
            raise ValueError(f"record of {e.uri} holds {record.table.num_rows} items, its ids cover {e.id_count}")
        position = {int(i): n for n, i in enumerate(record.table.column("id").to_pylist())}
        item_ids, vecs = space_vectors(record.table, space)
        if vecs is None:
            continue
        id_parts.append(e.id_start + np.array([position[int(i)] for i in item_ids], dtype=np.int64))
        vec_parts.append(vecs)
    if not vec_parts:
        return np.empty(0, np.int64), None
    return np.concatenate(id_parts), np.concatenate(vec_parts)


def items_of(store: Store, entries: Iterable[DocEntry]) -> list[pa.Table]:
    """The published item rows of documents: ``id`` is the index id allocated to the row, ``item_key`` the
    record's content-derived id (stable across snapshots and re-indexing); current uri; no vectors or image
    bytes."""
    tables = []
    for e in entries:
        record = read_record(store, e.sha256)
        if record is None:
            raise FileNotFoundError(f"the stored record of {e.uri} ({e.sha256}) is missing or unreadable")
        t = record.table.select([c for c in record.table.column_names if c != "image_png" and not c.startswith("vec_")])
        t = t.set_column(t.column_names.index("id"), "id", pa.array(e.ids(), pa.int64()))
        t = t.append_column("item_key", record.table.column("id"))
        t = t.set_column(t.column_names.index("source_uri"), "source_uri", pa.array([e.uri] * t.num_rows, pa.string()))
        tables.append(t.replace_schema_metadata(None))
    return tables


# ---- codecs ----------------------------------------------------------------------------------------------


def train_space_codec(ids: np.ndarray, vectors: np.ndarray, settings: IndexSettings) -> tuple[CodecSpec, object]:
    """Choose a codec for this space's size, train it on a sample, and tune nprobe (and the refine factor)
    on held-out vectors to reach ``settings.target_recall`` recall@10 against exact search."""
    n, dim = vectors.shape
    spec = choose_codec(n, dim, settings.memory_budget_bytes_per_vector, settings.exact_threshold,
                        settings.index_factory)
    perm = np.random.default_rng(SEED).permutation(n)
    n_queries = 0 if spec.exact else min(settings.tune_queries, n // 10)
    queries, base = perm[:n_queries], np.sort(perm[n_queries:])
    sample = np.sort(base[np.random.default_rng(SEED + 1).permutation(len(base))[: max(spec.train_size, 1)]])
    index = train_codec(spec, vectors[sample], seed=SEED)
    if spec.exact:
        spec.recall = 1.0
    elif n_queries:
        held_out = encode_shard(serialize_codec(index), ids[base], vectors[base])
        tune_nprobe(held_out, vectors[queries], vectors[base], ids[base], settings.target_recall, TUNE_K, spec=spec)
        log.info("codec %s tuned on %d held-out vectors: nprobe %s, k_factor %s, recall@%d %.3f",
                 spec.factory, n_queries, spec.nprobe, spec.k_factor, TUNE_K, spec.recall)
    return spec, index


def ensure_codec(store: Store, space: str, plan: IndexPlan, parent: Manifest | None, settings: IndexSettings,
                 record_key: str) -> StoredCodec | None:
    """The parent's codec for ``space``, or a new one trained on every live vector of the space (when the
    plan is fresh or the space is new). None when the space has no vectors at all."""
    if not plan.fresh and parent and space in parent.spaces:
        return StoredCodec.from_dict(parent.spaces[space].codec)
    ids, vectors = gather_vectors(store, plan.entries, space)
    if vectors is None:
        return None
    codec_id = short_id("codec", space, record_key, settings.index_factory, settings.memory_budget_bytes_per_vector,
                          settings.exact_threshold, settings.target_recall, settings.tune_queries, ids_digest(ids), SEED)
    existing = load_codec(store, space, codec_id)
    if existing is not None:
        return existing
    spec, index = train_space_codec(ids, vectors, settings)
    return save_codec(store, space, codec_id, spec, index, len(ids))


# ---- shards ----------------------------------------------------------------------------------------------


@dataclass
class ShardJob:
    """Encode these documents' vectors of one space into one shard (a unit of work with its own marker)."""

    space: str
    shard_id: str
    codec: StoredCodec
    docs: list[DocEntry] = field(default_factory=list)

    @property
    def vectors(self) -> int:
        return sum(d.vectors.get(self.space, 0) for d in self.docs)


def shard_jobs(plan: IndexPlan, space: str, codec: StoredCodec, max_vectors: int) -> list[ShardJob]:
    """The plan's new documents with vectors in ``space``, grouped into shards of at most ``max_vectors``
    (a bigger single document gets a shard of its own)."""
    groups: list[list[DocEntry]] = []
    size = 0
    for e in plan.new:
        n = e.vectors.get(space, 0)
        if not n:
            continue
        if not groups or size + n > max_vectors:
            groups.append([])
            size = 0
        groups[-1].append(e)
        size += n
    return [ShardJob(space, short_id("shard", space, codec.id, [(d.sha256, d.id_start) for d in g]), codec, g)
            for g in groups]


def run_shard_job(store: Store, job: ShardJob) -> StoredShard:
    """Encode one planned shard, unless a finished copy (its marker) is already stored."""
    done = load_shard_marker(store, job.space, job.shard_id)
    if done is not None:
        return done
    ids, vectors = gather_vectors(store, job.docs, job.space)
    index = encode_shard(codec_bytes(store, job.codec), ids, vectors)
    refine = (ids, vectors.astype(np.float16)) if job.codec.spec.refine else None
    return save_shard(store, job.space, job.shard_id, job.codec.id, index, refine)


def combine_shards(store: Store, codec: StoredCodec, parts: list[StoredShard], drop_ids: np.ndarray | None = None,
                   purpose: str = "merge") -> StoredShard:
    """Merge shards list by list into one new shard, dropping ``drop_ids`` (compaction). A single part
    with nothing to drop is returned as it is."""
    drop = as_tombstones(drop_ids) if drop_ids is not None and len(drop_ids) else None
    if len(parts) == 1 and drop is None:
        return parts[0]
    space = codec.space
    shard_id = short_id(purpose, space, codec.id, [p.id for p in parts], ids_digest(drop) if drop is not None else "")
    done = load_shard_marker(store, space, shard_id)
    if done is not None:
        return done
    opened = [open_shard(store, p) for p in parts]
    merged = merge_shards([o.index for o in opened], codec_bytes(store, codec), drop)
    refine = None
    if codec.spec.refine:
        ids = np.concatenate([np.asarray(o.refine[0]) for o in opened])
        vecs = np.concatenate([np.asarray(o.refine[1]) for o in opened])
        keep = np.ones(len(ids), bool) if drop is None else ~np.isin(ids, drop)
        refine = (ids[keep], vecs[keep])
    return save_shard(store, space, shard_id, codec.id, merged, refine)


# ---- what a snapshot records about a space --------------------------------------------------------------


@dataclass
class SpaceState:
    """A space as a snapshot publishes it."""

    codec: StoredCodec
    shards: list[StoredShard]
    live: int  # vectors of current documents

    @property
    def stored(self) -> int:
        return sum(s.count for s in self.shards)

    def compaction_reason(self, settings: IndexSettings) -> str | None:
        dead = self.stored - self.live
        if len(self.shards) > settings.compact_max_shards:
            return f"{len(self.shards)} shards > compact_max_shards={settings.compact_max_shards}"
        if self.stored and dead / self.stored > settings.compact_tombstone_fraction:
            return (f"{dead} of {self.stored} vectors tombstoned > "
                    f"compact_tombstone_fraction={settings.compact_tombstone_fraction}")
        return None

    def retrain_reason(self, settings: IndexSettings) -> str | None:
        spec, trained = self.codec.spec, max(self.codec.trained_vectors, 1)
        if spec.exact and self.live >= settings.exact_threshold:
            return f"{self.live} vectors in an exact index >= exact_threshold={settings.exact_threshold}"
        if self.live >= settings.retrain_growth_factor * trained:
            return f"grew {self.live / trained:.1f}x since the codec was trained on {trained} vectors"
        return None

    def to_manifest(self, settings: IndexSettings) -> SpaceMeta:
        spec = self.codec.spec
        reason = self.retrain_reason(settings)
        return SpaceMeta(codec=self.codec.to_dict(), shards=[s.to_dict() for s in self.shards],
                         dim=self.codec.dim, metric=spec.metric, index_type=spec.factory,
                         count=self.live, stored=self.stored, tombstoned=self.stored - self.live,
                         nprobe=spec.nprobe, k_factor=spec.k_factor, recall_at_10=spec.recall,
                         retrain_recommended=reason is not None, retrain_reason=reason)


def space_state_from_manifest(meta: SpaceMeta) -> SpaceState:
    return SpaceState(StoredCodec.from_dict(meta.codec), [StoredShard.from_dict(s) for s in meta.shards], meta.count)


def compact_spaces(store: Store, spaces: dict[str, SpaceState], tombstones: np.ndarray) -> dict[str, SpaceState]:
    """Every space rewritten as one shard without the tombstoned ids (the tombstones can then be cleared)."""
    out = {}
    for name, state in spaces.items():
        merged = combine_shards(store, state.codec, state.shards, tombstones, purpose="compact")
        out[name] = SpaceState(state.codec, [merged], state.live)
    return out


def build_spaces(store: Store, plan: IndexPlan, parent: Manifest | None, settings: IndexSettings, record_key: str,
                 encode: Callable[[list[ShardJob]], list[StoredShard]]) -> dict[str, SpaceState]:
    """Codec, shards and live count of every space after this run. ``encode`` runs shard jobs (in
    parallel on Ray in the flow, in a loop in tests); the run's new shards are merged into one."""
    parent_spaces = parent.spaces if parent and not plan.fresh else {}
    states = {}
    for space in SPACES:
        codec = ensure_codec(store, space, plan, parent, settings, record_key)
        if codec is None:
            continue
        shards = [StoredShard.from_dict(s) for s in parent_spaces[space].shards] if space in parent_spaces else []
        jobs = shard_jobs(plan if space in parent_spaces else _all_new(plan), space, codec, settings.shard_max_vectors)
        if jobs:
            shards.append(combine_shards(store, codec, encode(jobs)))
        states[space] = SpaceState(codec, shards, plan.live_vectors(space))
    return states


def _all_new(plan: IndexPlan) -> IndexPlan:
    """A space the parent did not have: every current document's vectors go into its first shards."""
    return IndexPlan(plan.fresh, plan.entries, plan.entries, plan.gone, plan.next_id)
