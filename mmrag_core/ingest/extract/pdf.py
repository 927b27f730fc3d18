"""PDF extraction with pymupdf: text-layer words (OCR for pages without a usable text layer),
chunked into items, and figures (embedded images and vector drawings).

All boxes are in PDF points in the page as displayed (``page.rect``: top-left origin, the page's
/Rotate applied), so they line up with a render of the page. Page numbers are 0-based.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import numpy as np
import pymupdf
from PIL import Image

from mmrag_core.ingest.extract.chunking import Word
from mmrag_core.ingest.extract.common import DocContext, ExtractResult, uniform
from mmrag_core.ingest.extract.context.page_context import PageContext, pdf_page_contexts
from mmrag_core.ingest.extract.figures import find_figures, render_figure, words_inside
from mmrag_core.ingest.extract.page_render import add_page_item
from mmrag_core.ingest.extract.tables import table_words
from mmrag_core.storage.items import Item, ItemKind, item_id
from mmrag_core.ingest.extract.ocr import OcrResult, OcrUnavailable

log = logging.getLogger(__name__)

# A complete PDF ends with %%EOF within its last bytes; a truncated one does not.
_EOF_WINDOW = 1024
_DAMAGED = "PDF is damaged (pymupdf had to repair it); skipped"
# A render this coarse shows whether anything at all is drawn on a page.
BLANK_CHECK_DPI = 20
BLANK_CHECK_PIXELS = 250_000


def extract_pdf(path: str | os.PathLike[str], ctx: DocContext) -> ExtractResult:
    """Extract every page of a PDF. Unreadable, encrypted, oversized or truncated files yield one
    failure and no items; a page that fails yields a page failure and the others go on."""
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # pymupdf raises FileDataError, RuntimeError, ... for broken files
        return ctx.failed("open", f"PDF cannot be opened (damaged beyond repair or not a PDF): {exc}")
    with doc:
        refusal = _refusal(doc, path, ctx)
        if refusal:
            return ctx.failed("open", refusal)
        result = ExtractResult()
        contexts = _page_contexts(doc, ctx, result)
        for pno in range(doc.page_count):
            if result.over_budget(ctx, pno, doc.page_count):
                break
            _extract_page(doc, pno, ctx, result, contexts.get(pno))
            ctx.page_done(pno + 1, doc.page_count)
        if _truncated(doc, path):  # damage can surface only once pages are read
            return ctx.failed("extract", _DAMAGED)
        if doc.is_repaired:
            log.warning("%s: pymupdf repaired the PDF (complete file, sloppy structure); indexed", ctx.source_uri)
    return result


def _refusal(doc: pymupdf.Document, path: str | os.PathLike[str], ctx: DocContext) -> str | None:
    """Why this PDF is not extracted at all, or None."""
    if doc.needs_pass:
        return "encrypted PDF: a password is needed"
    if _truncated(doc, path):
        return _DAMAGED
    if doc.page_count == 0:
        return _DAMAGED if doc.is_repaired else "PDF has no pages"
    if doc.page_count > ctx.settings.max_pdf_pages:
        return f"PDF has {doc.page_count} pages, over the limit of {ctx.settings.max_pdf_pages} (max_pdf_pages)"
    return None


def _truncated(doc: pymupdf.Document, path: str | os.PathLike[str]) -> bool:
    """Repaired and without a final %%EOF: the file was cut short (a download or copy that
    stopped), so part of it is missing. Repaired files that are complete (sloppy xref tables,
    common in real scanners' output) are read normally."""
    if not doc.is_repaired:
        return False
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - _EOF_WINDOW))
        return b"%%EOF" not in fh.read()


def _page_contexts(doc: pymupdf.Document, ctx: DocContext, result: ExtractResult) -> dict[int, PageContext]:
    """Per page, what its chunks' context prefixes are made from (none when ``chunk_context`` is off)."""
    if not ctx.settings.chunk_context:
        return {}
    started = time.perf_counter()
    try:
        return pdf_page_contexts(doc, ctx.source_uri, ctx.settings.chunk_context_tokens, ctx.count_tokens)
    finally:
        result.stats["seconds_context"] = result.stats.get("seconds_context", 0.0) + time.perf_counter() - started


def _chunk_words(words: list[Word], ctx: DocContext, result: ExtractResult) -> list[Word]:
    """The words to chunk: rewritten row by row when the page is laid out as a table (``table_structure``)."""
    if not ctx.settings.table_structure:
        return words
    started = time.perf_counter()
    rows = table_words(words)
    result.stats["seconds_tables"] = result.stats.get("seconds_tables", 0.0) + time.perf_counter() - started
    if rows is None:
        return words
    result.stats["table_pages"] = result.stats.get("table_pages", 0) + 1
    return rows


def _extract_page(doc: pymupdf.Document, pno: int, ctx: DocContext, result: ExtractResult,
                  context: PageContext | None = None) -> None:
    """Append one page's chunks and figures to ``result``, or a page failure."""
    try:
        page = doc.load_page(pno)
        words = text_layer_words(page)
    except Exception as exc:
        result.failures.append(ctx.failure("extract", f"page cannot be read: {exc}", pno))
        return
    result.stats["pages"] += 1
    source, confidence = "text_layer", None
    if _usable_chars(words) >= ctx.settings.ocr_min_text_chars:
        result.stats["text_pages"] += 1
    elif _blank(page):
        return
    else:
        ocr = _timed_ocr(page, pno, ctx, result)
        if ocr is None:
            return
        words, source, confidence = ocr.words, "ocr", ocr.confidence
    chunks = ctx.chunk_items(_chunk_words(words, ctx, result), pno, source, confidence, context)
    result.items.extend(chunks)
    outline = ctx.outline_item(pno, tuple(page.rect), source, context) if chunks else None
    if outline is not None:
        result.items.append(outline)
    add_page_item(page, pno, ctx, result)  # the whole page, for the image space (not for blank pages)
    try:
        figures = _figures(page, pno, words, source, ctx)
    except Exception as exc:
        result.failures.append(ctx.failure("figures", f"figures cannot be extracted: {exc}", pno))
        return
    result.items.extend(figures)
    result.stats["figures"] += len(figures)


def _timed_ocr(page: pymupdf.Page, pno: int, ctx: DocContext, result: ExtractResult) -> OcrResult | None:
    """OCR the page, counting it in ``result.stats``; None (and a page failure) if OCR fails."""
    started = time.perf_counter()
    try:
        ocr = ocr_page(page, ctx)
    except OcrUnavailable:
        raise
    except Exception as exc:
        result.failures.append(ctx.failure("ocr", f"OCR failed: {type(exc).__name__}: {exc}", pno))
        return None
    finally:
        result.stats["seconds_ocr"] += time.perf_counter() - started
    result.stats["ocr_pages"] += 1
    return ocr


def text_layer_words(page: pymupdf.Page) -> list[Word]:
    """The page's text-layer words in reading-stream order, boxes in the displayed page frame."""
    rotate = page.rotation_matrix if page.rotation else None
    words = []
    for x0, y0, x1, y1, text, block, line, _ in page.get_text("words"):
        rect = pymupdf.Rect(x0, y0, x1, y1)
        if rotate is not None:
            rect = rect * rotate  # text extraction reports unrotated coordinates
        words.append(Word(rect.x0, rect.y0, rect.x1, rect.y1, text, (block, line)))
    return words


def _usable_chars(words: list[Word]) -> int:
    """Non-space characters that are real text (U+FFFD marks glyphs without a Unicode mapping)."""
    return sum(len(w.text.replace("\ufffd", "")) for w in words)


def _blank(page: pymupdf.Page) -> bool:
    """Nothing drawn at all (separator pages): no need to spend a second of OCR on it. The check renders at most
    ``BLANK_CHECK_PIXELS`` (a huge page is shrunk further) and reads the pixels with numpy (pymupdf's own
    ``is_unicolor`` reads them one Python call at a time: 130 ms a page)."""
    rect = page.rect
    zoom = min(BLANK_CHECK_DPI / 72, math.sqrt(BLANK_CHECK_PIXELS / max(rect.width * rect.height, 1.0)))
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    return uniform(np.frombuffer(pix.samples, dtype=np.uint8))


def ocr_page(page: pymupdf.Page, ctx: DocContext) -> OcrResult:
    """Render the page in grey at ``ocr_dpi`` (less if that would exceed ``max_image_pixels``) and
    OCR it; word boxes come back in page points."""
    settings = ctx.settings
    rect = page.rect
    zoom = settings.ocr_dpi / 72
    zoom = min(zoom, math.sqrt(settings.max_image_pixels / max(rect.width * rect.height, 1.0)))
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    ocr = ctx.ocr(img)
    sx, sy = rect.width / pix.width, rect.height / pix.height  # page.rect starts at (0, 0)
    in_points = [Word(w.x0 * sx, w.y0 * sy, w.x1 * sx, w.y1 * sy, w.text, w.line) for w in ocr.words]
    return dataclasses.replace(ocr, words=in_points)


def _figures(page: pymupdf.Page, pno: int, words: list[Word], source: str, ctx: DocContext) -> list[Item]:
    """The page's figures as items, with the page words that fall inside them as their text."""
    items: list[Item] = []
    for ordinal, box in enumerate(find_figures(page, words, scanned=source == "ocr", settings=ctx.settings)):
        inside = [w.text for w in words_inside(box.rect, words)]
        png, width, height = render_figure(page, box, ctx.settings.figure_max_side)
        items.append(
            Item(
                id=item_id(ctx.doc_sha256, ItemKind.FIGURE, pno, ordinal),
                kind=ItemKind.FIGURE,
                source_uri=ctx.source_uri,
                doc_sha256=ctx.doc_sha256,
                page=pno,
                bbox=(box.rect.x0, box.rect.y0, box.rect.x1, box.rect.y1),
                text=" ".join(inside),
                text_source=source if inside else "none",
                ordinal=ordinal,
                width=width,
                height=height,
                image_png=png,
            )
        )
    return items
