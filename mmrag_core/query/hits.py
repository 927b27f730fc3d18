"""What a query returns, and the snapshot's item rows it is read from.

A hit names its item by index id and carries the provenance a reader needs to find it (source, page, box,
snippet, how its text was obtained). :class:`SnapshotItems` keeps the id -> row lookups the ranked lists, page
deduplication and hydration all need, built once per snapshot rather than once per query.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class Hit:
    """One result with its provenance. ``page`` is 0-based; ``bbox`` is (x0, y0, x1, y1) in PDF points
    (pixels for image files)."""

    id: int  # index id within this snapshot's lineage
    score: float
    kind: str
    source_uri: str
    page: int
    bbox: list[float] | None
    snippet: str
    ocr_confidence: float | None
    text_source: str
    ranks: dict[str, int] = field(default_factory=dict)
    similarities: dict[str, float] = field(default_factory=dict)
    key: int | None = None  # the item's content-derived id: the same item has the same key in every snapshot
    caption: str | None = None  # a generated caption of a figure or image, when the snapshot has one

    def to_dict(self) -> dict:
        return asdict(self)


def snippet_of(text: str | None, limit: int = 240) -> str:
    """A one-line excerpt for display."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class SnapshotItems:
    """A snapshot's items table, looked up by index id: an item's row, document and page, and its hit."""

    def __init__(self, items: pa.Table) -> None:
        self.table = items
        self.ids = np.asarray(items.column("id").to_numpy(zero_copy_only=False), dtype=np.int64)
        self._row = {int(i): n for n, i in enumerate(self.ids.tolist())}
        self._docs: list[str] | None = None  # doc sha256 per row, for routing
        self._pages: tuple[list[str], list[int]] | None = None  # (source_uri, page) per row, for dedup

    def row(self, item: int) -> dict | None:
        """The metadata row of item ``item`` (an index id of this snapshot), or None when it has none."""
        row = self._row.get(int(item))
        return None if row is None else self.table.slice(row, 1).to_pylist()[0]

    def doc_column(self) -> list[str]:
        """The document (sha256) of every row, in row order."""
        if self._docs is None:
            self._docs = self.table.column("doc_sha256").to_pylist()
        return self._docs

    def doc_of(self, item: int) -> str | None:
        """The document (sha256) an item belongs to."""
        row = self._row.get(int(item))
        return None if row is None else self.doc_column()[row]

    def page_of(self, item: int) -> tuple[str, int] | int:
        """The page an item is on, (source_uri, page): the unit hits are deduplicated by."""
        if self._pages is None:
            cols = self.table.select(["source_uri", "page"]).to_pydict()
            self._pages = (cols["source_uri"], cols["page"])
        row = self._row.get(int(item))
        return item if row is None else (self._pages[0][row], self._pages[1][row])

    def hydrate(self, item: int, score: float, ranks: dict, sims: dict) -> Hit:
        """The hit of item ``item``: its row's provenance with the score, ranks and similarities it was found by."""
        row = self.row(item)
        return Hit(
            id=item,
            score=round(score, 6),
            kind=row["kind"],
            source_uri=row["source_uri"],
            page=row["page"],
            bbox=[round(float(v), 2) for v in row["bbox"]] if row["bbox"] is not None else None,
            snippet=snippet_of(row["text"]),
            ocr_confidence=row["ocr_confidence"],
            text_source=row["text_source"],
            ranks=dict(ranks),
            similarities={s: round(v, 6) for s, v in sims.items()},
            key=row.get("item_key"),
            caption=row.get("caption"),
        )
