"""Image-file extraction: decode safely, turn upright, OCR, and keep a thumbnail.

Pixel counts are checked from the header before any pixel is decoded, so a small file that
declares a huge image (a decompression bomb) costs nothing. Each frame of a multi-page TIFF is a
page; other formats give their first frame. Boxes are in pixels of the upright image.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
from PIL import Image, ImageOps

from mmrag_core.ingest.extract.common import DocContext, ExtractResult, png_thumbnail, uniform
from mmrag_core.storage.items import Item, ItemKind, item_id
from mmrag_core.ingest.extract.ocr import OcrResult, OcrUnavailable


def extract_image(path: str | os.PathLike[str], ctx: DocContext) -> ExtractResult:
    """One ``kind="image"`` item per page (frame) with its OCR text and thumbnail, plus chunk
    items of that text. A file that cannot be decoded, or is too large, yields one failure."""
    try:
        img = _open_header(path)
    except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError... for broken headers
        return ctx.failed("decode", f"image could not be decoded: {exc}")
    with img:
        n_frames = getattr(img, "n_frames", 1) if img.format == "TIFF" else 1
        if n_frames > ctx.settings.max_pdf_pages:
            return ctx.failed(
                "open", f"TIFF has {n_frames} pages, over the limit of {ctx.settings.max_pdf_pages} (max_pdf_pages)"
            )
        result = ExtractResult()
        for frame in range(n_frames):
            if result.over_budget(ctx, frame, n_frames):
                break
            refusal = _extract_frame(img, frame, ctx, result, multi_frame=n_frames > 1)
            if refusal and n_frames == 1:
                return ctx.failed(*refusal)
            if refusal:
                result.failures.append(ctx.failure(*refusal, page=frame))
    return result


_PILLOW_LIMIT_LOCK = threading.Lock()


def _open_header(path: str | os.PathLike[str]) -> Image.Image:
    """Open lazily (header only). Pillow's own size guard is off meanwhile: it would refuse
    images over twice its fixed limit with its own message, while ``max_image_pixels`` is checked
    per frame, before decoding, by ``_extract_frame``."""
    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _extract_frame(img: Image.Image, frame: int, ctx: DocContext, result: ExtractResult,
                   multi_frame: bool = False) -> tuple[str, str] | None:
    """Append the items of one frame to ``result``; or return (stage, reason) if it cannot be read. A blank
    frame is not OCR'd; in a multi-page file it is no item either (a 500-frame blank TIFF adds nothing)."""
    upright, refusal = _decode_frame(img, frame, ctx.settings.max_image_pixels)
    if upright is None:
        return "decode", refusal
    result.stats["pages"] += 1
    if _blank_frame(upright):
        result.stats["blank_pages"] = result.stats.get("blank_pages", 0) + 1
        if not multi_frame:  # an image file of one flat colour is still an image: kept, with no text
            result.items.append(_image_item(upright, frame, OcrResult("", None), ctx))
        return None
    started = time.perf_counter()
    try:
        ocr = ctx.ocr(upright)
    except OcrUnavailable:
        raise
    except Exception as exc:
        return "ocr", f"OCR failed: {type(exc).__name__}: {exc}"
    finally:
        result.stats["seconds_ocr"] += time.perf_counter() - started
    result.stats["ocr_pages"] += 1
    result.items.append(_image_item(upright, frame, ocr, ctx))
    result.items.extend(ctx.chunk_items(ocr.words, frame, "ocr", ocr.confidence))
    return None


def _blank_frame(img: Image.Image) -> bool:
    """One flat colour in every band: nothing to read or see (checked on a small copy)."""
    small = img.copy()
    small.thumbnail((256, 256))
    return uniform(np.asarray(small.convert("L" if small.mode in ("1", "L", "P", "I;16") else "RGB")))


def _decode_frame(img: Image.Image, frame: int, limit: int) -> tuple[Image.Image | None, str]:
    """The frame's pixels turned upright per EXIF, or None and why not. The size is checked from
    the header before decoding."""
    try:
        img.seek(frame)
        width, height = img.size
        if width * height > limit:
            return None, (f"image is {width} x {height} = {width * height:,} pixels, over the limit of {limit:,} "
                          "(max_image_pixels)")
        img.load()
        return ImageOps.exif_transpose(img), ""
    except Exception as exc:  # truncated or corrupt pixel data
        return None, f"image could not be decoded: {exc}"


def _image_item(upright: Image.Image, frame: int, ocr: OcrResult, ctx: DocContext) -> Item:
    png, width, height = png_thumbnail(upright, ctx.settings.figure_max_side)
    return Item(
        id=item_id(ctx.doc_sha256, ItemKind.IMAGE, frame, 0),
        kind=ItemKind.IMAGE,
        source_uri=ctx.source_uri,
        doc_sha256=ctx.doc_sha256,
        page=frame,
        bbox=(0.0, 0.0, float(upright.width), float(upright.height)),
        text=ocr.text,
        ocr_confidence=ocr.confidence,
        text_source="ocr" if ocr.text else "none",
        width=width,
        height=height,
        image_png=png,
    )
