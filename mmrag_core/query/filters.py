"""Metadata filters of a query: which items may be returned, decided from the snapshot's items table.

A filter becomes the set of allowed item ids that the search passes to FAISS as an id selector (with the
tombstones), so top-k is taken among allowed items: an allowed item ranked beyond k overall is still found.

Fields (all optional; several given must all hold; a list means any of its values):

- ``source``: source URI prefixes (``/corpus/reports/``, ``s3://bucket/2024/``);
- ``doc``: documents, by file name (``report.pdf``), name without extension (``report``) or sha256;
- ``kind``: item kinds (``chunk``, ``figure``, ``image``);
- ``pages``: an inclusive, 0-based page range ``(first, last)``; ``"A-B"``, ``"A-"``, ``"-B"`` or ``"A"``
  as text.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmrag_core.storage.items import ItemKind
from mmrag_core.storage.names import file_name, file_stem

KINDS: tuple[str, ...] = (ItemKind.CHUNK, ItemKind.FIGURE, ItemKind.IMAGE)  # what a filter may name
FILTER_KEYS: tuple[str, ...] = ("source", "doc", "kind", "pages")
_PAGES = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$|^\s*(\d+)\s*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class QueryFilters:
    """What a query's hits must match; hashable, so the allowed ids of a filter are computed once."""

    source: tuple[str, ...] = ()
    doc: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    pages: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.kind if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kind filter {bad}; choose among {list(KINDS)}")
        if self.pages is not None:
            first, last = self.pages
            if first < 0 or last < first:
                raise ValueError(f"page range {first}-{last} is empty or negative (pages are 0-based)")
        if any(not s for s in self.source + self.doc):
            raise ValueError("source and doc filters cannot be empty strings")

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return not (self.source or self.doc or self.kind or self.pages is not None)

    @classmethod
    def parse(cls, value: QueryFilters | Mapping | None) -> QueryFilters:
        """Filters from a mapping (JSON, CLI): unknown keys and badly typed values are a ``ValueError``."""
        if value is None:
            return cls()
        if isinstance(value, QueryFilters):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"filters must be an object with keys among {list(FILTER_KEYS)}")  # noqa: TRY004 - a 4xx
        unknown = sorted(set(value) - set(FILTER_KEYS))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; choose among {list(FILTER_KEYS)}")
        return cls(source=_strings(value.get("source"), "source"), doc=_strings(value.get("doc"), "doc"),
                   kind=_strings(value.get("kind"), "kind"), pages=parse_pages(value.get("pages")))

    def to_dict(self) -> dict:
        """The JSON form (only the fields that filter)."""
        out: dict = {}
        for name in ("source", "doc", "kind"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.pages is not None:
            out["pages"] = list(self.pages)
        return out

    def mask(self, items: pa.Table) -> np.ndarray:
        """Which rows of ``items`` pass the filters (a boolean array)."""
        keep = np.ones(items.num_rows, dtype=bool)
        if self.source:
            uris = items.column("source_uri")
            hit = np.zeros(items.num_rows, dtype=bool)
            for prefix in self.source:
                hit |= pc.starts_with(uris, prefix).to_numpy(zero_copy_only=False)
            keep &= hit
        if self.doc:
            keep &= _doc_mask(items, self.doc)
        if self.kind:
            keep &= pc.is_in(items.column("kind"), value_set=pa.array(list(self.kind))).to_numpy(zero_copy_only=False)
        if self.pages is not None:
            pages = items.column("page").to_numpy(zero_copy_only=False)
            keep &= (pages >= self.pages[0]) & (pages <= self.pages[1])
        return keep


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A string or a list of strings as a tuple (a comma-free single value stays one value)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        values = tuple(value)
        if all(isinstance(v, str) for v in values):
            return values
    raise ValueError(f"filter {name!r} must be a string or a list of strings")


def parse_pages(value: object) -> tuple[int, int] | None:
    """An inclusive 0-based page range from ``"A-B"`` (either end may be left out), ``"A"``, an int, or a
    two-item list; ``None`` for no range."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"bad page range {value!r}")  # noqa: TRY004 - bad input, answered with a 4xx
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, str):
        m = _PAGES.match(value)
        if m and (m.group(1) or m.group(2) or m.group(3)):
            if m.group(3):
                return (int(m.group(3)), int(m.group(3)))
            return (int(m.group(1) or 0), int(m.group(2)) if m.group(2) else 2**31 - 1)
    raise ValueError(f"bad page range {value!r}: use 'A-B' (0-based, inclusive), 'A-', '-B', 'A' or [A, B]")


def _doc_mask(items: pa.Table, docs: tuple[str, ...]) -> np.ndarray:
    """Rows whose document is one of ``docs``: by sha256, file name or file name without extension (each
    distinct URI is looked at once, so a large snapshot costs its number of documents, not of items)."""
    shas = [d.lower() for d in docs if _SHA256.match(d.lower())]
    names = set(docs)
    uris = [u for u in pc.unique(items.column("source_uri")).to_pylist()
            if file_name(u) in names or file_stem(u) in names]
    by_uri = pc.is_in(items.column("source_uri"), value_set=pa.array(uris, pa.string()))
    by_sha = pc.is_in(items.column("doc_sha256"), value_set=pa.array(shas, pa.string()))
    return pc.or_(by_uri, by_sha).to_numpy(zero_copy_only=False)
