"""Extraction (text layer, OCR, figures) of a batch of documents on Ray CPU workers, or in this process for a
small job (``flows.index_flow``'s in-process path). The extraction libraries load inside the functions, so a
driver that only submits batches to Ray never imports them (pymupdf alone is ~1.5 s)."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray

from mmrag_core.config import Settings
from mmrag_core.ingest.sources import DocRef
from tasks.refs import Resolved
from tasks.worker_logs import CAPTURED_LOGGERS, WorkerLog, captured_logs

if TYPE_CHECKING:
    from mmrag_core.ingest.extract import ExtractResult

log = logging.getLogger(__name__)


@dataclass
class ExtractedBatch:
    """A batch's results and where they were made: on a cluster, a slow or broken node is found by this."""

    results: list[ExtractResult]
    node_id: str
    hostname: str
    logs: list[WorkerLog] = field(default_factory=list)  # what the worker logged, for the run's log


def extract_batch(docs: list[DocRef], settings: Settings, counter: Any = None) -> ExtractedBatch:
    """Extract each document; bad input comes back as failures, never as an exception. Each finished page is
    told to ``counter`` (a ``tasks.progress.PageCounter``), when given."""
    from mmrag_core.ingest.extract import extract_document
    from mmrag_core.ingest.extract.page_render import wants_page_items
    from mmrag_core.ingest.sources import local_path
    from mmrag_core.models.stored import text_model_store
    from mmrag_core.models.text_encoder import load_token_counter
    from mmrag_core.storage.store import storage_options_for

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
    return ExtractedBatch(results, node_id(), socket.gethostname(), logs)


extract_batch_remote = ray.remote(num_cpus=1)(extract_batch)

# The node id of work done in the driver's own process, without Ray.
IN_PROCESS_NODE = "in-process"


def node_id() -> str:
    """The Ray node this process runs on, or IN_PROCESS_NODE without Ray."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else IN_PROCESS_NODE


def _page_reporter(counter: Any, doc: str) -> Callable[[int, int], None] | None:
    """``on_page`` of one document: tells ``counter`` without waiting for it."""
    if counter is None:
        return None
    return lambda done, total: counter.page.remote(doc, done, total)


@ray.remote(num_cpus=1)
def _warm_worker(text_model: str) -> None:
    """Load what an extraction task needs (the extraction libraries, the tokenizer) into a worker process."""
    import mmrag_core.ingest.extract.image  # noqa: F401 - the extractors, imported for their cost: paid now rather
    import mmrag_core.ingest.extract.pdf  # noqa: F401 - than by the first batch
    from mmrag_core.models.stored import is_store_ref
    from mmrag_core.models.text_encoder import load_token_counter

    if not is_store_ref(text_model):  # a stored model's tokenizer loads with the first batch (it needs the store)
        load_token_counter(text_model)


def warm_extract_workers(settings: Settings, slots: int) -> None:
    """Start ``slots`` extraction workers loading their libraries and tokenizer now, without waiting: a cold
    worker spends 6-10 s on that before its first document, time that overlaps the model actors' start."""
    task = _warm_worker.options(num_cpus=settings.extract_num_cpus, scheduling_strategy=settings.extract_scheduling)
    for _ in range(slots):
        task.remote(settings.text_model)


@contextmanager
def _unprinted() -> Iterator[None]:
    """In the driver's process the batch's log records would print as they happen and again when the flow
    replays them into the run's log (as it does a Ray worker's); inside this block they are only collected."""
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    before = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in zip(loggers, before):
            lg.propagate = propagate


def submit_extract(docs: list[DocRef], settings: Settings, counter: Any = None, in_process: bool = False) -> Any:
    """Start one extraction task with the configured CPU slots and placement (SPREAD: over every node); or, with
    ``in_process``, extract here and now. Either way :func:`tasks.refs.resolve` gives the batch."""
    if in_process:
        with _unprinted():
            return Resolved(extract_batch(docs, settings, counter))
    return extract_batch_remote.options(
        num_cpus=settings.extract_num_cpus, scheduling_strategy=settings.extract_scheduling
    ).remote(docs, settings, counter)
