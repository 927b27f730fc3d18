"""The catalog: which documents (uri -> sha256) a snapshot was built from, and the diff of a new
listing against it. It is what makes a re-index cost what changed: unchanged documents are reused,
removed ones drop out, changed ones are processed again."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from mmrag_core.ingest.sources import DocRef

# id_start/id_count: the document's items hold the index ids [id_start, id_start + id_count), allocated
# when the document was first indexed; vectors_<space>: how many of them have a vector in that space.
CATALOG_SCHEMA = pa.schema([("uri", pa.string()), ("sha256", pa.string()), ("size", pa.int64()),
                            ("id_start", pa.int64()), ("id_count", pa.int64()),
                            ("vectors_text", pa.int64()), ("vectors_image", pa.int64())])


def catalog_table(rows: list[dict]) -> pa.Table:
    """The catalog of a snapshot, one row per document (missing id columns are null)."""
    return pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)


@dataclass
class CatalogDiff:
    """A listing compared with the previous snapshot's catalog, by uri and content hash."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("added", "changed", "removed", "unchanged")}


def diff_catalog(previous: pa.Table | None, current: list[DocRef]) -> CatalogDiff:
    """Classify each uri of ``current`` against ``previous`` (None: nothing published yet)."""
    before = dict(zip(previous.column("uri").to_pylist(), previous.column("sha256").to_pylist())) if previous else {}
    diff = CatalogDiff()
    for d in current:
        old = before.pop(d.uri, None)
        if old is None:
            diff.added.append(d.uri)
        elif old != d.sha256:
            diff.changed.append(d.uri)
        else:
            diff.unchanged.append(d.uri)
    diff.removed = sorted(before)
    return diff
