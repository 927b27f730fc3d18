"""Extraction (text layer, OCR, figures) of a batch of documents on Ray CPU workers."""
from __future__ import annotations

import ray

from mmrag_core.config import Settings
from mmrag_core.extract import ExtractResult, extract_document
from mmrag_core.models.text_encoder import load_token_counter
from mmrag_core.sources import DocRef, local_path
from mmrag_core.store import storage_options_for


@ray.remote(num_cpus=1)
def extract_batch_remote(docs: list[DocRef], settings: Settings) -> list[ExtractResult]:
    """Extract each document; bad input comes back as failures, never as an exception."""
    count_tokens = load_token_counter(settings.text_model)
    results = []
    for d in docs:
        with local_path(d.uri, storage_options_for(d.uri, settings.s3_endpoint_url)) as path:
            results.append(extract_document(path, d.uri, d.sha256, settings, count_tokens))
    return results
