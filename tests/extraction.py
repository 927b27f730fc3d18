"""Extraction as an index run does it: the ingest section, and page items when CLIP or captioning is on."""
from __future__ import annotations

import os

from mmrag_core.config import Settings
from mmrag_core.ingest.extract import ExtractResult, extract_document
from mmrag_core.ingest.extract.chunking import TokenCounter
from mmrag_core.ingest.extract.page_render import wants_page_items


def extract_as_run(path: str | os.PathLike[str], source_uri: str, doc_sha256: str, settings: Settings,
                   count_tokens: TokenCounter) -> ExtractResult:
    return extract_document(path, source_uri, doc_sha256, settings.ingest, count_tokens,
                            wants_page_items(settings.ingest, settings.models))
