"""Extraction (text layer, OCR, figures) of a batch of documents on Ray CPU workers."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from mmrag_core.config import Settings
from mmrag_core.ingest.extract import ExtractResult, extract_document
from mmrag_core.ingest.extract.page_render import wants_page_items
from mmrag_core.models.stored import is_store_ref, text_model_store
from mmrag_core.models.text_encoder import load_token_counter
from mmrag_core.ingest.sources import DocRef, local_path
from mmrag_core.storage.store import storage_options_for
from tasks.worker_logs import WorkerLog, captured_logs

log = logging.getLogger(__name__)


@dataclass
class ExtractedBatch:
    """A batch's results and where they were made: on a cluster, a slow or broken node is found by this."""

    results: list[ExtractResult]
    node_id: str
    hostname: str
    logs: list[WorkerLog] = field(default_factory=list)  # what the worker logged, for the run's log


@ray.remote(num_cpus=1)
def extract_batch_remote(docs: list[DocRef], settings: Settings, counter: Any = None) -> ExtractedBatch:
    """Extract each document; bad input comes back as failures, never as an exception. Each finished page is
    told to ``counter`` (a ``tasks.progress.PageCounter``), when given."""
    count_tokens = load_token_counter(settings.text_model, text_model_store(settings))
    page_items = wants_page_items(settings.ingest, settings.models)
    results = []
    with captured_logs() as logs:
        for d in docs:
            t0 = time.perf_counter()
            with local_path(d.uri, storage_options_for(d.uri, settings.s3_endpoint_url)) as path:
                r = extract_document(path, d.uri, d.sha256, settings.ingest, count_tokens, page_items,
                                     _page_reporter(counter, d.sha256))
            if counter is not None:
                counter.doc_done.remote(d.sha256)
            results.append(r)
            log.info("extracted %s: %d pages (%d OCR), %d items, %d failures in %.1f s", d.uri,
                     r.stats.get("pages", 0), r.stats.get("ocr_pages", 0), len(r.items), len(r.failures),
                     time.perf_counter() - t0)
    return ExtractedBatch(results, ray.get_runtime_context().get_node_id(), socket.gethostname(), logs)


def _page_reporter(counter: Any, doc: str) -> Callable[[int, int], None] | None:
    """``on_page`` of one document: tells ``counter`` without waiting for it."""
    if counter is None:
        return None
    return lambda done, total: counter.page.remote(doc, done, total)


@ray.remote(num_cpus=1)
def _warm_worker(text_model: str) -> None:
    """Load what an extraction task needs (this module's imports, the tokenizer) into a worker process."""
    if not is_store_ref(text_model):  # a stored model's tokenizer loads with the first batch (it needs the store)
        load_token_counter(text_model)


def warm_extract_workers(settings: Settings, slots: int) -> None:
    """Start ``slots`` extraction workers loading their libraries and tokenizer now, without waiting: a cold
    worker spends 6-10 s on that before its first document, time that overlaps the model actors' start."""
    task = _warm_worker.options(num_cpus=settings.extract_num_cpus, scheduling_strategy=settings.extract_scheduling)
    for _ in range(slots):
        task.remote(settings.text_model)


def submit_extract(docs: list[DocRef], settings: Settings, counter: Any = None) -> ray.ObjectRef:
    """Start one extraction task with the configured CPU slots and placement (SPREAD: over every node)."""
    return extract_batch_remote.options(
        num_cpus=settings.extract_num_cpus, scheduling_strategy=settings.extract_scheduling
    ).remote(docs, settings, counter)
