"""Micro-batching of concurrent queries: the queries waiting at once are encoded together, then searched.

On CPU most of a query's time is the text encoder's forward pass, and a pass over several texts of similar
length costs less per text than a pass per text, so a service that answers concurrent queries one at a time
wastes CPU. Two threads form a pipeline:

- the encoder takes the first waiting query, lets others join it for up to ``service_microbatch_wait_ms`` (at
  most ``service_microbatch_max``), and encodes their texts together under the holder's search lock
  (:meth:`SnapshotHolder.encode_many`; the encoders are not thread-safe), from one engine: the batch is
  answered wholly by one snapshot, whatever swap happens meanwhile;
- the searcher runs each request's search with its vectors (:func:`~mmrag_core.query.batched.search_one`:
  exactly what the request alone would get) and answers it at once. It holds no encoder, so it runs while
  the encoder works on the next batch: torch releases the GIL in its kernels, and the FAISS and BM25 searches
  and the fusion of one batch overlap the next batch's encoding on the second core.

A lone query that finds the searcher idle is searched by the encoder thread itself (one thread hand-over less
for a single client). A query with an image is answered whole by the encoder thread (its image goes through CLIP, under the lock).
Each request gets its own hits or its own error; one request's bad input fails no other. Admission (the bounded
queue, 503 past ``service_max_queue``) stays in front of this, in the routes' dependencies, so the queues here
never hold more than that.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future

from mmrag_core.query.batched import SearchRequest, search_one
from mmrag_core.query.engine import QueryEngine
from mmrag_core.service.snapshot_holder import Answer, NoSnapshot, SnapshotHolder

log = logging.getLogger(__name__)

_STOP = None  # put on a queue to end the thread that reads it
Pending = tuple[SearchRequest, Future]


class QueryBatcher:
    """Answers :meth:`search` calls from any number of concurrent requests, in batches (see the module doc)."""

    def __init__(self, holder: SnapshotHolder, wait_ms: float = 1.0, max_batch: int = 32) -> None:
        self.holder = holder
        self.wait_s = max(0.0, wait_ms) / 1000
        self.max_batch = max(1, max_batch)
        self._waiting: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        # encoded batches for the searcher; one at most, so the encoder is never more than one batch ahead
        self._encoded: queue.Queue[tuple | None] = queue.Queue(maxsize=1)
        self._threads: list[threading.Thread] = []
        self._searching = threading.Event()  # the searcher is at work on a batch
        self._start_lock = threading.Lock()
        self.batches = 0  # batches encoded, and the requests in them (what the tests read)
        self.requests = 0

    async def search(self, request: SearchRequest) -> Answer:
        """``request``'s answer, computed in a batch with whatever other requests are waiting; raises what its
        own search raised (a ValueError for bad input, NoSnapshot when nothing is served)."""
        return await asyncio.wrap_future(self.submit(request))

    def submit(self, request: SearchRequest) -> Future:
        """A future of ``request``'s :class:`Answer` (for callers outside an event loop)."""
        self._ensure_started()
        future: Future = Future()
        self._waiting.put((request, future))
        return future

    def stop(self) -> None:
        """End both threads once the requests already queued are answered."""
        with self._start_lock:
            threads, self._threads = self._threads, []
        if threads:
            self._waiting.put(_STOP)
            for thread in threads:
                thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def _ensure_started(self) -> None:
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    self._threads = [threading.Thread(target=target, name=f"mmrag-query-{name}", daemon=True)
                                     for name, target in (("encoder", self._encode_loop),
                                                          ("searcher", self._search_loop))]
                    for thread in self._threads:
                        thread.start()

    # ---- the encoder thread ----------------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        try:
            while True:
                first = self._waiting.get()
                if first is _STOP:
                    return
                batch, stop = self._collect(first)
                self._encode(batch)
                if stop:
                    return
        finally:
            self._encoded.put(_STOP)

    def _collect(self, first: Pending) -> tuple[list[Pending], bool]:
        """``first`` and the requests that join it within the wait (or are already waiting), at most max_batch;
        and whether the stop signal came meanwhile."""
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                item = self._waiting.get(timeout=remaining) if remaining > 0 else self._waiting.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _encode(self, batch: list[Pending]) -> None:
        live = [(request, future) for request, future in batch if future.set_running_or_notify_cancel()]
        if not live:  # every client went away while waiting
            return
        self.batches += 1
        self.requests += len(live)
        with_image = [p for p in live if p[0].image is not None]
        text_only = [p for p in live if p[0].image is None]
        if with_image:
            self._answer_whole(with_image)
        if not text_only:
            return
        try:
            engine, vectors = self.holder.encode_many([request for request, _ in text_only])
        except NoSnapshot as e:
            _fail(text_only, e)
            return
        except Exception:  # noqa: BLE001 - each request then encodes its own text, and fails alone if it must
            log.warning("batched encoding of %d queries failed; answering them one by one", len(text_only),
                        exc_info=True)
            self._answer_whole(text_only)
            return
        if len(text_only) == 1 and not self._searching.is_set() and self._encoded.empty():
            self._search(engine, text_only, vectors)  # a lone query, the searcher idle: no hand-over to wait for
        else:
            self._encoded.put((engine, text_only, vectors))

    def _answer_whole(self, pending: list[Pending]) -> None:
        """Encode and search ``pending`` here, under the holder's search lock."""
        try:
            snapshot, results = self.holder.search_many([request for request, _ in pending])
        except Exception as e:  # noqa: BLE001 - NoSnapshot, or whatever broke the batch: every request's error
            _fail(pending, e)
            return
        for (_, future), result in zip(pending, results):
            _settle(future, snapshot, result)

    # ---- the searcher thread ---------------------------------------------------------------------------------

    def _search_loop(self) -> None:
        while True:
            item = self._encoded.get()
            if item is _STOP:
                return
            self._searching.set()
            try:
                self._search(*item)
            finally:
                self._searching.clear()

    def _search(self, engine: QueryEngine, pending: list[Pending], vectors: list[dict]) -> None:
        """Search each of ``pending`` with its vectors and answer it as soon as its hits are there."""
        for (request, future), vecs in zip(pending, vectors):
            try:
                result = search_one(engine, request, vecs)
            except Exception as e:  # noqa: BLE001 - the request's own error, raised in its handler
                result = e
            _settle(future, engine.snapshot.id, result)


def _settle(future: Future, snapshot: str, result: list | Exception) -> None:
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(Answer(snapshot, result))


def _fail(pending: list[Pending], error: Exception) -> None:
    for _, future in pending:
        future.set_exception(error)
