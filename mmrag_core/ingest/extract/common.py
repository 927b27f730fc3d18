"""What the PDF and image extractors share: the result type, the per-document context, and the
making of chunk items and stored thumbnails."""
from __future__ import annotations

import time
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mmrag_core.ingest.extract.chunking import TokenCounter, Word, chunk_words
from mmrag_core.config import IngestSettings
from mmrag_core.ingest.extract.context.page_context import PageContext
from mmrag_core.storage.items import Failure, Item, ItemKind, item_id
from mmrag_core.ingest.extract.ocr import OcrResult, eight_bit, ocr_image


def empty_stats() -> dict[str, float]:
    return {
        "pages": 0,
        "ocr_pages": 0,
        "text_pages": 0,
        "figures": 0,
        "seconds_extract": 0.0,
        "seconds_ocr": 0.0,
    }


@dataclass
class ExtractResult:
    """Items of one document, what could not be extracted (whole file or single pages), and counts."""

    items: list[Item] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=empty_stats)
    started: float = field(default_factory=time.perf_counter)

    def over_budget(self, ctx: DocContext, done: int, total: int) -> bool:
        """True (and a ``budget`` failure row naming the skipped pages) once the document's work budget is spent
        with pages left: checked between pages, so no document runs much past ``max_doc_seconds``."""
        spent = time.perf_counter() - self.started
        if done >= total or spent <= ctx.settings.max_doc_seconds:
            return False
        self.failures.append(ctx.failure(
            "budget", f"work budget of {ctx.settings.max_doc_seconds:g} s per document spent after {done} of {total} "
            f"pages ({spent:.0f} s); pages {done}-{total - 1} (0-based) not indexed (max_doc_seconds)"))
        self.stats["pages_skipped"] = total - done
        return True


@dataclass(frozen=True)
class DocContext:
    """The document being extracted and how: passed to every extractor function."""

    source_uri: str
    doc_sha256: str
    settings: IngestSettings
    count_tokens: TokenCounter
    page_items: bool = False  # also a 'page' item (a small render) per PDF page: see page_render.wants_page_items
    on_page: Callable[[int, int], None] | None = None  # (pages done, page count) after each page, for progress

    def page_done(self, done: int, total: int) -> None:
        """Report a finished page to ``on_page``; a failing report never fails the extraction."""
        if self.on_page is not None:
            try:
                self.on_page(done, total)
            except Exception:  # noqa: BLE001 - progress is for watching only
                pass

    def failure(self, stage: str, reason: str, page: int | None = None) -> Failure:
        return Failure(self.source_uri, stage, reason, page, self.doc_sha256)

    def failed(self, stage: str, reason: str) -> ExtractResult:
        """The result for a file that yields nothing at all."""
        return ExtractResult(failures=[self.failure(stage, reason)])

    def ocr(self, img: Image.Image) -> OcrResult:
        """OCR with the configured language and rotation handling."""
        return ocr_image(
            img,
            lang=self.settings.ocr_lang,
            rotation=self.settings.ocr_rotation,
            min_confidence_for_no_rotation=self.settings.ocr_min_confidence_for_no_rotation,
        )

    def chunk_items(
        self, words: Sequence[Word], page: int, text_source: str, ocr_confidence: float | None,
        context: PageContext | None = None,
    ) -> list[Item]:
        """Chunk one page's words into ``kind="chunk"`` items, numbered from 0 on that page; with a page
        ``context``, each item gets its context prefix (``Item.context``)."""
        chunks = chunk_words(words, self.settings.chunk_tokens, self.settings.chunk_overlap, self.count_tokens)
        return [
            Item(
                id=item_id(self.doc_sha256, ItemKind.CHUNK, page, ordinal),
                kind=ItemKind.CHUNK,
                source_uri=self.source_uri,
                doc_sha256=self.doc_sha256,
                page=page,
                bbox=chunk.bbox,
                text=chunk.text,
                ocr_confidence=ocr_confidence,
                text_source=text_source,
                ordinal=ordinal,
                context=context.for_chunk(chunk.bbox) if context is not None else None,
            )
            for ordinal, chunk in enumerate(chunks)
        ]

    def outline_item(self, page: int, bbox: tuple[float, float, float, float], text_source: str,
                     context: PageContext | None) -> Item | None:
        """The page's ``kind="outline"`` item (:meth:`PageContext.outline`, within ``chunk_tokens``), or None
        when ``page_outline`` is off or the page has no headings."""
        outline = context.outline(self.settings.chunk_tokens) if context and self.settings.page_outline else None
        if not outline:
            return None
        return Item(id=item_id(self.doc_sha256, ItemKind.OUTLINE, page, 0), kind=ItemKind.OUTLINE, source_uri=self.source_uri,
                    doc_sha256=self.doc_sha256, page=page, bbox=bbox, text=outline, text_source=text_source)


def uniform(pixels: np.ndarray) -> bool:
    """Every value the same: a blank render or frame (all white, all black, one flat colour)."""
    return pixels.size == 0 or int(pixels.min()) == int(pixels.max())


def png_thumbnail(img: Image.Image, max_side: int) -> tuple[bytes, int, int]:
    """PNG bytes of ``img`` shrunk to ``max_side`` (longest side), with its width and height."""
    img = eight_bit(img)
    if img.mode == "1":  # 1-bit images only resize by nearest neighbour: go grey first
        img = img.convert("L")
    elif img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    thumb = img
    if max(img.size) > max_side:  # resize, not thumbnail(): that would need a full-size copy first
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        thumb = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    thumb.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), thumb.width, thumb.height
