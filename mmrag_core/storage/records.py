"""Per-document Parquet records: items plus their vectors, keyed by the document's sha256.

They are the durable intermediate: a later run whose models are unchanged reuses them instead of
extracting and embedding again, and an index can be rebuilt from them without any model.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmrag_core.storage.items import Failure, Item, Space, items_to_table
from mmrag_core.storage.store import Store, doc_key

SPACES: tuple[str, ...] = tuple(Space)


@dataclass
class DocRecord:
    """One document's items (as a table, with ``vec_<space>`` columns) and page-level failures."""

    doc_sha256: str
    source_uri: str
    table: pa.Table
    failures: list[Failure]
    record_key: str
    stats: dict


def vector_column(ids: np.ndarray, vecs: np.ndarray | None, all_ids: np.ndarray) -> pa.Array:
    """A fixed-size-list column aligned with ``all_ids``; rows without a vector are null."""
    if vecs is None or len(ids) == 0:
        return pa.nulls(len(all_ids), type=pa.list_(pa.float32()))
    dim = vecs.shape[1]
    pos = {int(i): n for n, i in enumerate(ids)}
    flat = np.zeros((len(all_ids), dim), dtype=np.float32)
    mask = np.ones(len(all_ids), dtype=bool)
    for row, i in enumerate(all_ids):
        n = pos.get(int(i))
        if n is not None:
            flat[row] = vecs[n]
            mask[row] = False
    values = pa.array(flat.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(mask))


def build_record(
    doc_sha256: str,
    source_uri: str,
    items: list[Item],
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    failures: list[Failure],
    record_key: str,
    stats: dict,
) -> DocRecord:
    """Assemble a document's record from extraction and embedding outputs."""
    table = items_to_table(items)
    all_ids = table.column("id").to_numpy()
    for space in SPACES:
        ids, vecs = vectors.get(space, (np.zeros(0, np.int64), None))
        table = table.append_column(f"vec_{space}", vector_column(ids, vecs, all_ids))
    return DocRecord(doc_sha256, source_uri, table, failures, record_key, stats)


def write_record(store: Store, record: DocRecord) -> None:
    """Persist atomically, with failures, models and stats in the file's metadata."""
    meta = {
        b"mmrag.record_key": record.record_key.encode(),
        b"mmrag.source_uri": record.source_uri.encode(),
        b"mmrag.failures": json.dumps([asdict(f) for f in record.failures]).encode(),
        b"mmrag.stats": json.dumps(record.stats).encode(),
        b"mmrag.counts": json.dumps(table_counts(record.table)).encode(),
    }
    table = record.table.replace_schema_metadata({**(record.table.schema.metadata or {}), **meta})
    store.write_parquet(doc_key(record.doc_sha256), table)


def read_record(store: Store, doc_sha256: str) -> DocRecord | None:
    """The persisted record of a document, or None when there is none (or it is unreadable)."""
    try:
        table = store.read_parquet(doc_key(doc_sha256))
    except (OSError, pa.ArrowInvalid):  # FileNotFoundError is an OSError
        return None
    meta = table.schema.metadata or {}
    failures = [Failure(**f) for f in json.loads(meta.get(b"mmrag.failures", b"[]"))]
    return DocRecord(
        doc_sha256=doc_sha256,
        source_uri=meta.get(b"mmrag.source_uri", b"").decode(),
        table=table,
        failures=failures,
        record_key=meta.get(b"mmrag.record_key", b"").decode(),
        stats=json.loads(meta.get(b"mmrag.stats", b"{}")),
    )


def stored_record_key(store: Store, doc_sha256: str) -> str | None:
    """The key of a document's persisted record, read from the Parquet footer alone (no rows), or
    None when there is no readable record: deciding what to reuse must not load every vector."""
    try:
        with store.open(doc_key(doc_sha256)) as f:
            meta = pq.read_schema(f).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    return meta.get(b"mmrag.record_key", b"").decode()


def table_counts(table: pa.Table) -> dict:
    """Items and vectors per space of a record table: what id allocation and live counts need."""
    return {"items": table.num_rows,
            "vectors": {s: int(table.column(f"vec_{s}").is_valid().to_numpy(zero_copy_only=False).sum())
                        for s in SPACES if f"vec_{s}" in table.column_names}}


def record_counts(store: Store, doc_sha256: str) -> dict:
    """:func:`table_counts` of a stored record, from its Parquet footer (no rows are read)."""
    with store.open(doc_key(doc_sha256)) as f:
        meta = pq.read_schema(f).metadata or {}
    if b"mmrag.counts" in meta:
        return json.loads(meta[b"mmrag.counts"])
    record = read_record(store, doc_sha256)
    if record is None:
        raise FileNotFoundError(f"no readable record for document {doc_sha256}")
    return table_counts(record.table)


def space_vectors(table: pa.Table, space: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids, vectors) of the rows that have a vector in ``space``."""
    col = table.column(f"vec_{space}")
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return np.zeros(0, np.int64), None
    ids = table.column("id").to_numpy()[valid]
    chunks = col.filter(pa.array(valid)).combine_chunks()
    dim = chunks.type.list_size if pa.types.is_fixed_size_list(chunks.type) else len(chunks[0])
    vecs = np.asarray(chunks.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    return ids.astype(np.int64), vecs
