"""Assemble a snapshot's content (metadata table and per-space indexes) from document records."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmrag_core.index import build_exact_index
from mmrag_core.items import Failure, failures_to_table
from mmrag_core.persist import SPACES, DocRecord, space_vectors
from mmrag_core.snapshot import SnapshotContent

_NOT_PUBLISHED = {"image_png"} | {f"vec_{s}" for s in SPACES}


def snapshot_content(
    records: list[DocRecord], failures: list[Failure], models: dict, source: str, stats: dict,
    catalog: pa.Table | None = None,
) -> SnapshotContent:
    """Concatenate records into one metadata table and build an exact index per space with vectors."""
    tables = [r.table.select([c for c in r.table.column_names if c not in _NOT_PUBLISHED]) for r in records]
    items = pa.concat_tables(tables) if tables else _empty_items()
    indexes = {}
    for space in SPACES:
        parts = [space_vectors(r.table, space) for r in records]
        parts = [(ids, vecs) for ids, vecs in parts if vecs is not None]
        if parts:
            ids = np.concatenate([p[0] for p in parts])
            vecs = np.concatenate([p[1] for p in parts])
            indexes[space] = build_exact_index(ids, vecs)
    all_failures = failures + [f for r in records for f in r.failures]
    return SnapshotContent(items.replace_schema_metadata(None), failures_to_table(all_failures), indexes,
                           models, source, stats, catalog)


def _empty_items() -> pa.Table:
    from mmrag_core.items import ITEM_SCHEMA

    return ITEM_SCHEMA.empty_table().drop_columns(["image_png"])
