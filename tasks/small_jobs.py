"""Whether an indexing run is small enough to do in its own process. Starting a local Ray and its model actors
costs ~10-20 s on a small machine, more than extracting and embedding a few pages takes; so a run whose new
documents have at most ``small_job_pages`` pages in all skips Ray and loads the same models in-process
(``tasks.embed.InProcessEncoder``). The flow, its records and its snapshot are the same either way."""
from __future__ import annotations

import os
from pathlib import Path

from mmrag_core.config import Settings
from mmrag_core.ingest.sources import DocRef


def runs_in_process(docs: list[DocRef], settings: Settings) -> bool:
    """True when ``docs`` (local files) have at most ``settings.small_job_pages`` pages in all and no Ray
    cluster is configured. Each document counts at least one page, so a long list is decided without opening
    a file."""
    limit = settings.small_job_pages
    if limit <= 0 or settings.ray_address or os.environ.get("RAY_ADDRESS") or len(docs) > limit:
        return False
    total = 0
    for doc in docs:
        path = _local_file(doc.uri)
        if path is None:  # a remote object is read where it is extracted; Ray's workers do that
            return False
        total += page_count(path)
        if total > limit:
            return False
    return True


def _local_file(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return None if "://" in uri else Path(uri)


def page_count(path: Path) -> int:
    """Pages of a PDF (1 when it cannot be read: extraction records why); 1 for any other file."""
    try:
        with path.open("rb") as f:
            is_pdf = b"%PDF-" in f.read(1024)
    except OSError:
        return 1
    if not is_pdf:
        return 1
    import pymupdf  # the in-process extraction that follows loads it anyway

    try:
        with pymupdf.open(path) as pdf:
            return max(1, pdf.page_count)
    except Exception:  # noqa: BLE001 - a damaged or encrypted file is extraction's to report, not this count's
        return 1
