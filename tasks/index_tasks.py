"""Prefect tasks of the indexing flow: discover, process a batch (extract + embed + persist), index and
publish, compact."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mmrag_core.snapshot.changes import list_source
from mmrag_core.config import Settings
from mmrag_core.ingest.encoder_inputs import caption_inputs, image_inputs, set_captions, text_inputs
from mmrag_core.storage.faults import crash_point
from mmrag_core.index.build import ShardJob, run_shard_job
from mmrag_core.storage.items import Failure
from mmrag_core.storage.manifest import Manifest
from mmrag_core.storage.records import build_record, write_record
from mmrag_core.snapshot.publish import Encoder, IndexRequest, compact_and_publish, index_and_publish
from mmrag_core.ingest.sources import Discovery, DocRef
from mmrag_core.storage.store import open_store
from mmrag_core.index.shard_files import StoredShard
from tasks.refs import resolve
from tasks.extract import submit_extract
from tasks.retries import disk_full
from tasks.worker_logs import replay


@dataclass
class BatchSummary:
    """What one batch did; small, so that the flow can keep all of them."""

    docs: int = 0
    pages: int = 0
    ocr_pages: int = 0
    items: int = 0
    seconds_extract: float = 0.0
    seconds_embed: float = 0.0
    seconds_ocr: float = 0.0
    seconds_caption: float = 0.0
    captions: int = 0
    failures: list[Failure] = field(default_factory=list)
    # Documents extracted per Ray node id: shows how the work spread over a cluster.
    nodes: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchSummary) -> None:
        """Accumulate another batch's counts, times, failures and nodes into this one."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, dict(Counter(mine) + Counter(theirs)) if f.name == "nodes" else mine + theirs)


@task(name="discover", cache_policy=NO_CACHE)
def discover_source(source: str, settings: Settings) -> Discovery:
    """List and hash the source's files."""
    return list_source(source, settings)


@task(name="process-batch", cache_policy=NO_CACHE, task_run_name="process-batch-{batch_no}")
def process_batch(
    batch_no: int, docs: list[DocRef], settings: Settings, encoders: dict, record_key: str, image_live: bool,
    counter: Any = None, in_process: bool = False,
) -> BatchSummary:
    """Extract a batch on a Ray worker, caption its pictures (when captioning is on) and embed its items on the
    model actors, persist one record per doc. ``in_process``: extract here, with ``encoders`` loaded here (a
    small job without Ray); the records are the same."""
    store = open_store(settings)
    out = BatchSummary(docs=len(docs))
    t0 = time.perf_counter()
    batch = resolve(submit_extract(docs, settings, counter, in_process))
    replay(batch.logs, get_run_logger(), batch.hostname)
    results = batch.results
    out.seconds_extract = time.perf_counter() - t0
    out.nodes = {batch.node_id: len(docs)}
    where = {"ray_node_id": batch.node_id, "hostname": batch.hostname}
    if "caption" in encoders:  # before embedding: captions are embedded in the text space
        t_cap = time.perf_counter()
        out.captions = caption_results(results, encoders["caption"])
        out.seconds_caption = time.perf_counter() - t_cap
    t1 = time.perf_counter()
    text_ids, texts, img_ids, imgs = [], [], [], []
    for r in results:
        ids, tx = text_inputs(r.items, settings.chunk_context_embedded)
        text_ids.append(ids)
        texts.extend(tx)
        ids, im = image_inputs(r.items) if image_live else (np.zeros(0, np.int64), [])
        img_ids.append(ids)
        imgs.extend(im)
    text_ref = encoders["text"].encode.remote(texts) if texts else None
    img_ref = encoders["image"].encode.remote(imgs) if imgs else None
    text_vecs = resolve(text_ref) if text_ref is not None else np.zeros((0, 0), np.float32)
    img_vecs = resolve(img_ref) if img_ref is not None else np.zeros((0, 0), np.float32)
    out.seconds_embed = time.perf_counter() - t1
    t_off = i_off = 0
    for doc, r, t_ids, i_ids in zip(docs, results, text_ids, img_ids):
        out.pages += int(r.stats.get("pages", 0))
        out.ocr_pages += int(r.stats.get("ocr_pages", 0))
        out.seconds_ocr += float(r.stats.get("seconds_ocr", 0.0))
        if not r.items and not r.failures:
            r.failures.append(Failure(doc.uri, "extract", "no text or images found", None, doc.sha256))
        vectors = {
            "text": (t_ids, text_vecs[t_off : t_off + len(t_ids)] if len(t_ids) else None),
            "image": (i_ids, img_vecs[i_off : i_off + len(i_ids)] if len(i_ids) else None),
        }
        t_off += len(t_ids)
        i_off += len(i_ids)
        # A document that failed is recorded too, so an unchanged bad file is not retried every run.
        write_record(store, build_record(doc.sha256, doc.uri, r.items, vectors, r.failures, record_key,
                                         {**r.stats, **where}))
        crash_point("record-written")
        out.items += len(r.items)
        out.failures.extend(r.failures)
    return out


def caption_results(results: list, captioner: Any) -> int:
    """Caption every figure, page render and image of a batch's extraction results in one call to the captioner
    (an actor or a pool, which batches and spreads it); returns how many captions were made."""
    items, pngs = [], []
    for r in results:
        chosen, images = caption_inputs(r.items)
        items.extend(chosen)
        pngs.extend(images)
    if pngs:
        set_captions(items, resolve(captioner.encode.remote(pngs)))
    return sum(1 for it in items if it.caption)


@ray.remote(num_cpus=1)
def _run_shard_job_remote(settings: Settings, job: ShardJob) -> StoredShard:
    return run_shard_job(open_store(settings), job)


def ray_encoder(settings: Settings) -> Encoder:
    """Encode shard jobs in parallel, one Ray task each (a task reads its documents' vectors itself)."""
    remote = _run_shard_job_remote.options(num_cpus=settings.shard_num_cpus)

    def encode(jobs: list[ShardJob]) -> list[StoredShard]:
        try:
            return ray.get([remote.remote(settings, job) for job in jobs])
        except ray.exceptions.RayTaskError as e:
            full = disk_full(e)
            if full is not None:  # the worker's error itself: one line that names the file, no remote traceback
                raise full from None
            raise

    return encode


def in_process_encoder(settings: Settings) -> Encoder:
    """Encode shard jobs one after another in this process (a small job without Ray): the same shards."""
    store = open_store(settings)
    return lambda jobs: [run_shard_job(store, job) for job in jobs]


@task(name="index-and-publish", cache_policy=NO_CACHE)
def index_snapshot(settings: Settings, request: IndexRequest, parent: dict | None, in_process: bool = False) -> dict:
    """Encode the new documents into shards (on Ray, or here for a small job), tombstone what left, compact if
    due, publish. The flow holds manifests as JSON documents (its run report is JSON): ``parent`` and the result
    are ones."""
    encoder = in_process_encoder(settings) if in_process else ray_encoder(settings)
    manifest = index_and_publish(open_store(settings), request, Manifest.of(parent) if parent else None,
                                 settings.index, encoder)
    return manifest.to_json()


@task(name="compact", cache_policy=NO_CACHE)
def compact_snapshot(settings: Settings, parent: dict) -> dict:
    """Rewrite every space of ``parent`` as one shard without its tombstones and publish that (JSON documents
    in and out, as in :func:`index_snapshot`)."""
    return compact_and_publish(open_store(settings), Manifest.of(parent), settings.index).to_json()
