"""The indexing flows: discover -> diff with LATEST -> (extract -> embed -> persist) the new documents on
Ray -> encode them into shards, tombstone what left -> publish a snapshot. And compaction. A small run (at most
``small_job_pages`` new pages) does the same steps in its own process, without starting Ray.

Their parameters are typed (``flows.params``), so the Prefect UI shows a deployment's run parameters as a form;
each run publishes its progress, a summary and its failures as Prefect artifacts (``tasks.artifacts``)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import ray
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import CompactOverrides, IndexOverrides, run_settings
from flows.warm_start import start_models, take_started
from mmrag_core.snapshot.changes import PendingWork, pending_work
from mmrag_core.config import Settings
from mmrag_core.ingest.record_keys import config_key, record_key
from mmrag_core.storage.lock import store_lock
from mmrag_core.storage.records import stored_record_key
from mmrag_core.snapshot.publish import IndexRequest
from mmrag_core.snapshot.open import NothingToPublish, SnapshotError, read_latest_manifest
from mmrag_core.ingest.sources import DocRef
from mmrag_core.storage.store import Store, open_store
from tasks.artifacts import RunProgress, format_eta, publish_index_artifacts
from tasks.backpressure import bounded_results
from tasks.refs import resolve
from tasks.progress import read_counter, start_page_counter
from tasks.index_tasks import BatchSummary, compact_snapshot, discover_source, index_snapshot, process_batch
from tasks.ray_runtime import batches_in_flight
from tasks.retries import retry_options
from tasks.small_jobs import runs_in_process


def _batches(docs: list[DocRef], size: int) -> list[list[DocRef]]:
    """Batches of at most ``size`` docs, largest first, so the longest tasks start early."""
    ordered = sorted(docs, key=lambda d: -d.size)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


# Batch tasks mostly wait on Ray, so a thread each is cheap; ``batches_in_flight`` decides how many run.
MAX_BATCH_THREADS = 64


@flow(name="index", task_runner=ThreadPoolTaskRunner(max_workers=MAX_BATCH_THREADS), log_prints=True)
def index_flow(source: str, store: str | None = None, overrides: IndexOverrides | None = None,
               retrain: bool = False) -> dict:
    """Index a source incrementally and publish a snapshot (nothing when nothing changed); returns the report.

    Args:
        source: Folder, file or s3://bucket/prefix to index.
        store: Store to publish into, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        overrides: Settings for this run only; an empty field keeps the worker's setting.
        retrain: Train new codecs on the whole corpus and encode every document again.
    """
    return run_index(source, run_settings(store, overrides), retrain)


def run_index(source: str, settings: Settings, retrain: bool = False, move_latest: bool = True) -> dict:
    """The body of ``index_flow`` (callable inside any flow run), holding the store's lock. Returns
    ``{"published", "snapshot", "manifest", "changes", ...}``; nothing is published when nothing changed
    since LATEST. The run's summary and failures are published as artifacts of the flow run. Without
    ``move_latest`` the snapshot is a candidate: published, LATEST unchanged (the fine-tuning gate)."""
    store = open_store(settings)
    t0 = time.perf_counter()
    with store_lock(store, f"mmrag index {source}", ttl=settings.lock_ttl_seconds, wait=settings.lock_wait_seconds):
        try:
            report = _run_index_locked(source, settings, store, retrain, move_latest)
        except NothingToPublish as e:
            failures = [asdict(f) for f in e.failures]
            publish_index_artifacts({"nothing_to_publish": True, "source": source, "failures": failures,
                                     "seconds_total": round(time.perf_counter() - t0, 3)}, store.uri)
            raise
    report["seconds_total"] = round(time.perf_counter() - t0, 3)
    publish_index_artifacts(report, store.uri)
    return report


def _run_index_locked(source: str, settings: Settings, store: Store, retrain: bool, move_latest: bool = True) -> dict:
    """The run's steps, in order: discover and compare with LATEST, process the new documents, publish."""
    log = get_run_logger()
    work, seconds_discover = _discover(source, settings, store, retrain, log)
    if work.up_to_date:
        log.info("nothing changed since snapshot %s; LATEST stays", work.parent["id"])
        return {"published": False, "snapshot": work.parent["id"], "manifest": work.parent,
                "changes": work.changes.counts(), "seconds_discover": round(seconds_discover, 3)}
    done = _process_candidates(work, settings, store, log)
    stats = _run_stats(work, done, seconds_discover)
    manifest = _publish(work, done, settings, source, stats, log, move_latest)
    return {"published": True, "snapshot": manifest["id"], "manifest": manifest, "changes": work.changes.counts()}


def _discover(source: str, settings: Settings, store: Store, retrain: bool, log: Any) -> tuple[PendingWork, float]:
    """List ``source`` and compare it with LATEST; returns the pending work and the seconds it took."""
    t_start = time.perf_counter()
    found = discover_source(source, settings)
    log.info("discovered %d documents (%d refused, %d duplicate copies) in %s",
             len(found.docs), len(found.failures), len(found.duplicates), source)
    work = pending_work(found, store, settings, retrain)
    log.info("since the last snapshot: %s%s", ", ".join(f"{n} {k}" for k, n in work.changes.counts().items()),
             f"; full rebuild: {work.rebuild_reason}" if work.rebuild_reason else "")
    return work, time.perf_counter() - t_start


@dataclass
class Processed:
    """What the extract-and-embed step did; with no candidate documents, LATEST's models and record key."""

    models: dict
    key: str
    rebuild_reason: str | None  # why the run rebuilds everything, possibly found once the models were loaded
    processed: int
    reused: int
    total: BatchSummary
    seconds_start: float
    seconds_processing: float
    in_process: bool = False  # extracted, embedded (and to be encoded) in this process, without Ray


def _process_candidates(work: PendingWork, settings: Settings, store: Store, log: Any) -> Processed:
    """Start the encoders (in this process for a small job, else Ray and model actors; or take those started
    ahead of the run), decide which candidates need processing (all of them when the model weights changed),
    extract, embed and persist those, and stop the encoders."""
    parent = work.parent
    models, key = (parent["models"], parent["record_key"]) if parent else ({}, "")
    t_proc = time.perf_counter()
    if not work.candidates:
        return Processed(models, key, work.rebuild_reason, 0, 0, BatchSummary(), 0.0, time.perf_counter() - t_proc)
    in_process = runs_in_process(work.candidates, settings)
    encoders = take_started(settings, in_process) or start_models(settings, in_process)
    models = _encoder_models(encoders)
    seconds_start = time.perf_counter() - t_proc
    log.info("%s ready in %.1f s", "the models (in this process: a small job)" if in_process
             else "Ray and the encoders", seconds_start)
    image_live = "skipped" not in models["image"]
    if not image_live:
        log.warning("image space SKIPPED: %s", models["image"]["skipped"])
    key = record_key(models, settings)
    rebuild_reason, candidates = _candidates(work, key, log)
    todo = [d for d in candidates if stored_record_key(store, d.sha256) != key]
    reused = len(candidates) - len(todo)
    log.info("%d documents to process, %d reused from earlier (possibly interrupted) runs", len(todo), reused)
    if in_process and not runs_in_process(todo, settings):  # new weights: every document, too many for here
        log.info("full rebuild of %d documents: on Ray, not in this process", len(todo))
        in_process, encoders = False, start_models(settings, False)
    total = _process(todo, settings, encoders, key, image_live, log, store.uri, in_process)
    if not in_process:
        for actor in encoders.values():
            ray.kill(actor)
    return Processed(models, key, rebuild_reason, len(todo), reused, total, seconds_start,
                     time.perf_counter() - t_proc, in_process)


def _encoder_models(encoders: dict[str, Any]) -> dict[str, dict]:
    """What each started encoder says it is; the image space marked skipped when CLIP is disabled."""
    models = {space: resolve(actor.describe.remote()) for space, actor in encoders.items()}
    if "image" not in models:
        models["image"] = {"skipped": "CLIP disabled by configuration (MMRAG_CLIP_MODEL=off)"}
    return models


def _candidates(work: PendingWork, key: str, log: Any) -> tuple[str | None, list[DocRef]]:
    """The run's full-rebuild reason and the documents to consider: every document when the loaded models'
    record key differs from LATEST's (new weights under the same names), else the pending candidates."""
    parent, reason = work.parent, work.rebuild_reason
    if parent and not reason and key != parent.get("record_key"):
        reason = "model weights changed since the last snapshot"
        log.info("full rebuild: %s", reason)
        return reason, work.found.docs
    return reason, work.candidates


def _run_stats(work: PendingWork, done: Processed, seconds_discover: float) -> dict[str, Any]:
    """The run's statistics, as the manifest keeps them."""
    total = done.total
    return {
        "documents_discovered": len(work.found.docs),
        "changes": work.changes.counts(),
        "removed": work.changes.removed,
        "full_rebuild": done.rebuild_reason,
        "documents_processed": done.processed,
        "documents_reused": done.reused,
        "duplicates": work.found.duplicates,
        "pages_processed": total.pages,
        "ocr_pages": total.ocr_pages,
        "items_processed": total.items,
        "seconds_discover": round(seconds_discover, 3),
        "seconds_processing": round(done.seconds_processing, 3),
        "seconds_start_workers": round(done.seconds_start, 3),
        "in_process": done.in_process,
        "seconds_extract_tasks": round(total.seconds_extract, 3),
        "seconds_ocr": round(total.seconds_ocr, 3),
        "seconds_embed_calls": round(total.seconds_embed, 3),
        "captions": total.captions,
        "seconds_caption_calls": round(total.seconds_caption, 3),
    }


def _publish(work: PendingWork, done: Processed, settings: Settings, source: str, stats: dict[str, Any],
             log: Any, move_latest: bool = True) -> dict:
    """Encode the new records into shards, tombstone what left, publish the snapshot; returns its manifest."""
    found = work.found
    request = IndexRequest(found.docs, found.failures, done.models, done.key, config_key(settings), source, stats,
                           bool(done.rebuild_reason), move_latest)
    manifest = index_snapshot.with_options(**retry_options(settings))(settings, request, work.parent, done.in_process)
    log.info("published snapshot %s: %d items from %d documents, %d failures, %d tombstones",
             manifest["id"], manifest["counts"]["items"], manifest["counts"]["documents"],
             manifest["counts"]["failures"], manifest["tombstones"])
    return manifest


def _process(todo: list[DocRef], settings: Settings, encoders: dict, key: str, image_live: bool,
             log: Any, store_uri: str, in_process: bool = False) -> BatchSummary:
    """Extract, embed and persist ``todo`` in batches on Ray (or one after another in this process); each
    document's record is its own marker. A batch that fails on a transient error (I/O, a lost Ray worker) is
    retried; a bad file is a recorded failure."""
    batches = _batches(todo, max(1, settings.extract_batch_docs))
    task = process_batch.with_options(**retry_options(settings))
    limit = 1 if in_process else min(batches_in_flight(settings), MAX_BATCH_THREADS)
    total = BatchSummary()
    progress = RunProgress(len(todo), f"extract and embed ({settings.store})", store_uri)
    counter = None if in_process else start_page_counter()  # pages as they finish, inside the batches
    t0 = time.perf_counter()
    # A bounded number of batches submitted at a time: a million documents never become a million task runs
    # (nor a million batches' extraction output) in this process at once.
    def submit(n: int, batch: list[DocRef]) -> Any:
        return task.submit(n, batch, settings, encoders, key, image_live, counter, in_process)

    def tick() -> None:
        seen = read_counter(counter) if counter is not None else None
        if seen is not None:  # extracted is not yet embedded: never 100 % before the last batch is in
            progress.update(min(seen[0], len(todo) - 0.5), seen[1])

    for summary in bounded_results(submit, batches, limit, tick):
        total.add(summary)
        elapsed = time.perf_counter() - t0
        log.info("[%d/%d docs] %d pages (%.1f pages/s), %d items, %d failures, ETA %s",
                 total.docs, len(todo), total.pages, total.pages / max(elapsed, 1e-9), total.items,
                 len(total.failures), format_eta(total.docs, len(todo), elapsed))
        seen = read_counter(counter) if counter is not None else None
        progress.update(float(total.docs), max(total.pages, seen[1] if seen else 0))
    if counter is not None:
        ray.kill(counter)
    return total


@flow(name="compact", log_prints=True)
def compact_flow(store: str | None = None, overrides: CompactOverrides | None = None) -> dict:
    """Rewrite LATEST's shards without tombstones and publish the result as a new snapshot.

    Args:
        store: Store to compact, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        overrides: Settings for this run only; an empty field keeps the worker's setting.
    """
    settings = run_settings(store, overrides)
    store = open_store(settings)
    with store_lock(store, "mmrag compact", ttl=settings.lock_ttl_seconds, wait=settings.lock_wait_seconds):
        parent = read_latest_manifest(store)
        if parent is None:
            raise SnapshotError(f"no snapshot published in store {settings.store}; nothing to compact")
        manifest = compact_snapshot.with_options(**retry_options(settings))(settings, parent)
    get_run_logger().info("published compacted snapshot %s (from %s)", manifest["id"], parent["id"])
    return manifest
