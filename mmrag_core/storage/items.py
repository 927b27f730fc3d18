"""Items: the unit everything is indexed as, with its provenance, and failures.

An item is a text chunk, a figure, a standalone image, the render of a whole PDF page, or a page's outline (the
document's facts and the page's headings, for the text space). Its id is a
stable int64 derived from (document sha256, kind, page, ordinal), so re-extracting the same bytes gives the same ids and
vectors persisted by an earlier run stay addressable.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import pyarrow as pa


class ItemKind(StrEnum):
    """What an item can be; which space each kind goes into is decided in ``mmrag_core.ingest.encoder_inputs``.
    The values are what Parquet files, manifests and the API hold (a StrEnum compares equal to its value)."""

    CHUNK = "chunk"
    FIGURE = "figure"
    IMAGE = "image"
    PAGE = "page"
    OUTLINE = "outline"


class Space(StrEnum):
    """The vector spaces: ``text`` (the text encoder) and ``image`` (CLIP, whose text tower encodes queries)."""

    TEXT = "text"
    IMAGE = "image"


def item_id(doc_sha256: str, kind: str, page: int, ordinal: int) -> int:
    """Stable, positive int64 id (63 bits of blake2b) for an item."""
    key = f"{doc_sha256}:{kind}:{page}:{ordinal}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Item:
    """One indexable piece of a document. ``page`` is 0-based; ``bbox`` is in PDF points (x0,y0,x1,y1)
    for PDF pages and in pixels for image files."""

    id: int
    kind: ItemKind
    source_uri: str
    doc_sha256: str
    page: int
    bbox: tuple[float, float, float, float] | None
    text: str
    ocr_confidence: float | None = None  # mean word confidence 0-100 when the text came from OCR
    text_source: str = "text_layer"  # text_layer | ocr | none
    ordinal: int = 0
    width: int | None = None  # pixel size of the image bytes, for figures/images
    height: int | None = None
    image_png: bytes | None = field(default=None, repr=False)  # downscaled image, for the image space
    caption: str | None = None  # generated (BLIP-2) description of the image, embedded in the text space
    # Where a chunk comes from (document, issuer, period, headings, page): indexed with ``text``, not displayed.
    context: str | None = None

    def indexed_text(self) -> str:
        """The text the text space and the lexical index see: :func:`indexed_text` of this item."""
        return indexed_text(self.text, self.context)

    def to_row(self) -> dict:
        row = asdict(self)
        row["bbox"] = list(self.bbox) if self.bbox is not None else None
        return row


@dataclass
class Failure:
    """A file (or one page of it) that could not be processed, and why."""

    source_uri: str
    stage: str  # discover | open | extract | ocr | embed | ...
    reason: str
    page: int | None = None
    doc_sha256: str | None = None


UNSUPPORTED = "unsupported file type"  # how a file that is not a PDF or image is refused: skipped, not failed


def is_skipped(failure: Failure | dict) -> bool:
    """Whether a failure row is a file skipped as an unsupported type (counted apart from real failures)."""
    reason = failure.reason if isinstance(failure, Failure) else failure.get("reason", "")
    return str(reason).startswith(UNSUPPORTED)


ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("kind", pa.string()),
        ("source_uri", pa.string()),
        ("doc_sha256", pa.string()),
        ("page", pa.int32()),
        ("bbox", pa.list_(pa.float32(), 4)),
        ("text", pa.string()),
        ("ocr_confidence", pa.float32()),
        ("text_source", pa.string()),
        ("ordinal", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_png", pa.binary()),
        ("caption", pa.string()),
        ("context", pa.string()),
    ]
)


def indexed_text(text: str | None, context: str | None) -> str:
    """A chunk's context prefix and its raw text, as one string to embed or to index lexically. The raw
    ``text`` alone is what hits display."""
    text = text or ""
    return f"{context}\n{text}" if context else text

FAILURE_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("page", pa.int32()),
        ("doc_sha256", pa.string()),
    ]
)


def items_to_table(items: list[Item]) -> pa.Table:
    return pa.Table.from_pylist([it.to_row() for it in items], schema=ITEM_SCHEMA)


def failures_to_table(failures: list[Failure]) -> pa.Table:
    return pa.Table.from_pylist([asdict(f) for f in failures], schema=FAILURE_SCHEMA)
