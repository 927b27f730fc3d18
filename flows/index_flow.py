"""The indexing flow: discover -> (extract -> embed -> persist) per batch on Ray -> publish a snapshot."""
from __future__ import annotations

import time
from typing import Any

import ray
from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from mmrag_core.catalog import diff_catalog
from mmrag_core.config import Settings, load_settings
from mmrag_core.embed import record_key
from mmrag_core.persist import stored_record_key
from mmrag_core.sources import DocRef
from mmrag_core.snapshot import read_catalog
from mmrag_core.store import Store
from tasks.embed import start_encoders
from tasks.index_tasks import BatchSummary, discover_source, process_batch, publish_snapshot
from tasks.ray_runtime import cluster_cpus, ensure_ray


def _batches(docs: list[DocRef], size: int) -> list[list[DocRef]]:
    """Batches of at most ``size`` docs, largest first, so the longest tasks start early."""
    ordered = sorted(docs, key=lambda d: -d.size)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0:
        return "?"
    left = elapsed / done * (total - done)
    return f"{int(left // 60)}m{int(left % 60):02d}s"


@flow(name="index", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def index_flow(source: str, store: str | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """Index ``source`` into ``store`` and publish a snapshot; returns its manifest."""
    settings = load_settings(**{**(overrides or {}), **({"store": store} if store else {})})
    return run_index(source, settings)


def run_index(source: str, settings: Settings) -> dict:
    """The body of ``index_flow`` (callable inside any flow run)."""
    log = get_run_logger()
    ensure_ray(settings)
    encoders = start_encoders(settings)  # models load in their actors while the source is listed
    found = discover_source(source, settings)
    log.info("discovered %d documents (%d refused, %d duplicate copies) in %s",
             len(found.docs), len(found.failures), len(found.duplicates), source)
    changes = diff_catalog(read_catalog(Store(settings.store)), found.docs)
    log.info("since the last snapshot: %s", ", ".join(f"{n} {k}" for k, n in changes.counts().items()))

    models = {space: ray.get(actor.describe.remote()) for space, actor in encoders.items()}
    if "image" not in models:
        models["image"] = {"skipped": "CLIP disabled by configuration (MMRAG_CLIP_MODEL=off)"}
    image_live = "skipped" not in models["image"]
    if not image_live:
        log.warning("image space SKIPPED: %s", models["image"]["skipped"])
    key = record_key(models, settings)

    store = Store(settings.store)
    todo, reused = [], 0
    for d in found.docs:
        if stored_record_key(store, d.sha256) == key:
            reused += 1
        else:
            todo.append(d)
    log.info("%d documents to process, %d reused from earlier runs", len(todo), reused)

    batch_docs = max(1, settings.extract_batch_docs)
    batches = _batches(todo, batch_docs)
    futures = [process_batch.submit(n, b, settings, encoders, key, image_live) for n, b in enumerate(batches)]
    total = BatchSummary()
    t_proc = time.perf_counter()
    for fut in as_completed(futures):
        s: BatchSummary = fut.result()
        total.add(s)
        elapsed = time.perf_counter() - t_proc
        log.info("[%d/%d docs] %d pages (%.1f pages/s), %d items, %d failures, ETA %s",
                 total.docs, len(todo), total.pages, total.pages / max(elapsed, 1e-9), total.items,
                 len(total.failures), _eta(total.docs, len(todo), elapsed))
    for actor in encoders.values():
        ray.kill(actor)

    processing_s = time.perf_counter() - t_proc
    stats = {
        "documents_discovered": len(found.docs),
        "changes": changes.counts(),
        "removed": changes.removed,
        "documents_processed": len(todo),
        "documents_reused": reused,
        "duplicates": found.duplicates,
        "pages_processed": total.pages,
        "ocr_pages": total.ocr_pages,
        "items_processed": total.items,
        "seconds_processing": round(processing_s, 3),
        "seconds_extract_tasks": round(total.seconds_extract, 3),
        "seconds_ocr": round(total.seconds_ocr, 3),
        "seconds_embed_calls": round(total.seconds_embed, 3),
        "ray_cpus": cluster_cpus(),
    }
    # Failures of documents travel in their records; only the listing's own refusals are added here.
    manifest = publish_snapshot(settings, found.docs, found.failures, models, source, stats)
    log.info("published snapshot %s: %d items from %d documents, %d failures",
             manifest["id"], manifest["counts"]["items"], manifest["counts"]["documents"],
             manifest["counts"]["failures"])
    return manifest
