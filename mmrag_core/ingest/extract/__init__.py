"""Extraction: one document file in, its items (chunks, figures, images) and failures out.

``extract_document`` never raises for bad input: an empty, oversized, unsupported, damaged or
encrypted file gives one ``Failure`` that says why, so one bad file cannot stop a batch. It does
raise ``OcrUnavailable`` when tesseract is not installed: that is a setup error, and recording
it as a failure of every scanned document would hide it.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from mmrag_core.ingest.extract.chunking import TokenCounter
from mmrag_core.config import IngestSettings

if TYPE_CHECKING:
    from mmrag_core.ingest.extract.common import DocContext, ExtractResult

# The extractors and what they load (pymupdf, tesseract's wrapper, pandas: 1-2 s) come on first use, so a module
# that needs a light part of this package (``tables`` for the extractive answerer, ``chunking``) does not pay for
# them: ``mmrag serve`` and ``mmrag ask`` start without them. Name -> the submodule that defines it.
_ON_FIRST_USE = {"DocContext": "common", "ExtractResult": "common", "OcrUnavailable": "ocr",
                 "extract_image": "image", "extract_pdf": "pdf"}


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = ["IMAGE_SUFFIXES", "PDF_SUFFIXES", "ExtractResult", "extract_document", "sniff_type"]

log = logging.getLogger(__name__)

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"})
# Where the PDF header may sit: the spec lets junk precede it, and readers look this far.
_PDF_HEADER_WINDOW = 1024
_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",  # BMP
)

FileType = Literal["pdf", "image"]


def extract_document(
    path: str | os.PathLike[str],
    source_uri: str,
    doc_sha256: str,
    settings: IngestSettings,
    count_tokens: TokenCounter,
    page_items: bool = False,
    on_page: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extract a PDF or image file into items. Chunks are sized with ``count_tokens`` (the text
    encoder's tokenizer, per word); ``page_items`` adds a render of every PDF page (``wants_page_items``);
    ``on_page(done, total)`` is called after each PDF page, so progress moves within a large document."""
    started = time.perf_counter()
    this = sys.modules[__name__]  # its attributes load on first use (and a test may replace one)
    ctx = this.DocContext(source_uri, doc_sha256, settings, count_tokens, page_items, on_page)
    try:
        result = _dispatch(Path(path), ctx)
    except this.OcrUnavailable:
        raise
    except Exception as exc:  # a bug or a file that breaks a library in a new way: report, go on
        log.exception("extraction of %s failed", source_uri)
        result = ctx.failed("extract", f"unexpected error: {type(exc).__name__}: {exc}")
    result.stats["seconds_extract"] = time.perf_counter() - started
    return result


def _dispatch(path: Path, ctx: DocContext) -> ExtractResult:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_PDF_HEADER_WINDOW)
    except OSError as exc:
        return ctx.failed("open", f"file cannot be read: {exc}")
    if size == 0:
        return ctx.failed("open", "empty file (0 bytes)")
    if size > ctx.settings.max_file_bytes:
        limit = ctx.settings.max_file_bytes
        return ctx.failed("open", f"file has {size} bytes, over the limit of {limit} (max_file_bytes)")
    suffix = path.suffix.lower()
    kind = sniff_type(head, suffix)
    if kind == "pdf":
        return sys.modules[__name__].extract_pdf(path, ctx)
    if kind == "image":
        return sys.modules[__name__].extract_image(path, ctx)
    if suffix in PDF_SUFFIXES:
        return ctx.failed("open", "file named .pdf is not a PDF (no %PDF header)")
    if suffix in IMAGE_SUFFIXES:
        return ctx.failed("decode", f"file named {suffix} is not a supported image (unknown header)")
    return ctx.failed("open", f"unsupported file type {suffix!r}" if suffix else "unsupported file type (no extension)")


def sniff_type(head: bytes, suffix: str = "") -> FileType | None:
    """What the file's first bytes say it is: content decides, not the name. A PDF header after
    leading junk (which readers accept) counts only in a file named .pdf."""
    if head.startswith(b"%PDF-") or (suffix in PDF_SUFFIXES and b"%PDF-" in head[:_PDF_HEADER_WINDOW]):
        return "pdf"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    return None
