"""Page-level visual items: every PDF page rendered small, so that the image space (and captioning) sees
whole pages, not only the figures found on them: a photo or a chart query can find the page it is on.

A ``page`` item has no text of its own (the page's words are its chunks); its box is the whole page in
the displayed frame, and its bytes are a PNG of at most ``page_render_px`` pixels on the long side.
"""
from __future__ import annotations

import time

import pymupdf
from PIL import Image

from mmrag_core.config import IngestSettings, ModelSettings
from mmrag_core.ingest.extract.common import DocContext, ExtractResult, png_thumbnail
from mmrag_core.storage.items import Item, ItemKind, item_id


def wants_page_items(ingest: IngestSettings, models: ModelSettings) -> bool:
    """Page renders are made only where something uses them: the image space (CLIP) or captioning."""
    return ingest.page_render_px > 0 and (models.clip_enabled or models.caption_enabled)


def render_page(page: pymupdf.Page, max_side: int) -> tuple[bytes, int, int]:
    """PNG of the whole page as displayed (rotation applied, white background), at most ``max_side`` pixels
    long, with its width and height. Rendered straight at the target size: no full-resolution pass."""
    rect = page.rect
    zoom = max_side / max(rect.width, rect.height, 1.0)
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csRGB, alpha=False)
    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    return png_thumbnail(img, max_side)


def add_page_item(page: pymupdf.Page, pno: int, ctx: DocContext, result: ExtractResult) -> None:
    """Append the ``page`` item of page ``pno`` to ``result`` (or a page failure if it cannot be rendered),
    when page items are wanted; the time spent is counted in ``result.stats["seconds_page_render"]``."""
    if not ctx.page_items:
        return
    started = time.perf_counter()
    try:
        png, width, height = render_page(page, ctx.settings.page_render_px)
    except Exception as exc:  # a page that pymupdf cannot draw: the page's text is still indexed
        result.failures.append(ctx.failure("render", f"page cannot be rendered: {type(exc).__name__}: {exc}", pno))
        return
    finally:
        spent = time.perf_counter() - started
        result.stats["seconds_page_render"] = result.stats.get("seconds_page_render", 0.0) + spent
    rect = page.rect
    result.items.append(
        Item(
            id=item_id(ctx.doc_sha256, ItemKind.PAGE, pno, 0),
            kind=ItemKind.PAGE,
            source_uri=ctx.source_uri,
            doc_sha256=ctx.doc_sha256,
            page=pno,
            bbox=(rect.x0, rect.y0, rect.x1, rect.y1),
            text="",
            text_source="none",
            width=width,
            height=height,
            image_png=png,
        )
    )
