"""The snapshot a service answers from, and the swap to each newly published one.

A poller thread watches LATEST. When it moves, the new snapshot is opened and verified and its engine built
with its models loaded (reusing the current encoders when the models are the same); only then is the one
reference requests read replaced. A request takes that reference once, so it is answered entirely from one
snapshot, and no request waits for, or fails because of, a swap.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmrag_core.config import Settings
from mmrag_core.answer.prompting import Source, sources_from_hits
from mmrag_core.query.batched import SearchRequest, query_vectors
from mmrag_core.query.engine import Hit, QueryEngine
from mmrag_core.query.filters import QueryFilters
from mmrag_core.snapshot.open import SnapshotError, load_manifest, open_snapshot, read_table
from mmrag_core.storage.store import Store

log = logging.getLogger(__name__)


class NoSnapshot(RuntimeError):
    """Nothing is served yet: no snapshot is published, or the published one could not be loaded."""


@dataclass(frozen=True)
class Answer:
    snapshot: str
    hits: list[Hit]


class LockedEngine:
    """An engine whose searches take a lock (its encoders are shared and not thread-safe); the rest as is."""

    def __init__(self, engine: QueryEngine, lock: threading.Lock) -> None:
        self._engine, self._lock = engine, lock
        self.snapshot = engine.snapshot

    def search(self, *args: Any, **kwargs: Any) -> list:
        with self._lock:
            return self._engine.search(*args, **kwargs)


class SnapshotHolder:
    def __init__(self, store: Store, settings: Settings, pinned: str | None = None,
                 on_swap: Callable[[str], None] | None = None,
                 on_swap_failure: Callable[[str, Exception], None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.pinned = pinned
        self._on_swap = on_swap or (lambda _id: None)
        self._on_swap_failure = on_swap_failure or (lambda _id, _e: None)
        self._engine: QueryEngine | None = None
        self._failed: str | None = None  # a LATEST that could not be loaded: not retried until LATEST moves
        self._swap_lock = threading.Lock()  # one swap at a time
        # Encoders are shared by engines and their tokenizers are not thread-safe: one search at a time
        # (the CPU is the limit anyway; FAISS and torch use every core for one query).
        self._search_lock = threading.Lock()
        self._other_items: OrderedDict[str, tuple] = OrderedDict()  # items of a few older snapshots
        self._other_items_lock = threading.Lock()
        self._catalogs: OrderedDict[str, frozenset[str]] = OrderedDict()  # source URIs of a few snapshots
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what requests use -----------------------------------------------------------------------------------

    @property
    def engine(self) -> QueryEngine:
        engine = self._engine
        if engine is None:
            why = f"snapshot {self._failed} could not be loaded" if self._failed else "none is published"
            raise NoSnapshot(f"no snapshot is served yet from store {self.store.uri} ({why})")
        return engine

    @property
    def snapshot_id(self) -> str | None:
        engine = self._engine
        return engine.snapshot.id if engine is not None else None

    def search(self, text: str | None, image: bytes | None, k: int, spaces: list[str] | None,
               strategy: str | None = None, filters: QueryFilters | None = None,
               dedupe: bool | None = None) -> Answer:
        engine = self.engine  # read once: the whole answer comes from this snapshot
        with self._search_lock:
            hits = engine.search(text=text, image=image, k=k, spaces=spaces, strategy=strategy, filters=filters,
                                 dedupe=dedupe)
        return Answer(engine.snapshot.id, hits)

    def search_many(self, requests: list[SearchRequest]) -> tuple[str, list[list[Hit] | Exception]]:
        """The served snapshot's id and each request's hits (or its exception), all from that one snapshot, their
        texts encoded together (:meth:`QueryEngine.search_many`; the micro-batcher's call)."""
        engine = self.engine
        with self._search_lock:
            results = engine.search_many(requests)
        return engine.snapshot.id, results

    def encode_many(self, requests: list[SearchRequest]) -> tuple[QueryEngine, list[dict]]:
        """The served engine and each request's query vectors, encoded together under the search lock (the
        encoders are not thread-safe): what the micro-batcher then searches with, outside the lock."""
        engine = self.engine
        with self._search_lock:
            return engine, query_vectors(engine, requests)

    def locked_engine(self) -> LockedEngine:
        """The served engine for a request that searches more than once (the extractive answerer): one
        snapshot throughout, each search under the search lock."""
        return LockedEngine(self.engine, self._search_lock)

    def sources(self, question: str, k: int) -> tuple[str, list[Source]]:
        """The served snapshot's id and the numbered sources of its top ``k`` hits for ``question``."""
        engine = self.engine
        with self._search_lock:
            hits = engine.search(text=question, k=k)
        return engine.snapshot.id, sources_from_hits(hits, engine.snapshot.items)

    def item(self, snapshot_id: str, item_id: int) -> dict | None:
        """The items row of ``item_id`` in a published snapshot (the served one or an older one), or None."""
        engine = self._engine
        if engine is not None and engine.snapshot.id == snapshot_id:
            return engine.item(item_id)
        with self._other_items_lock:
            entry = self._other_items.get(snapshot_id)
            if entry is None:
                try:
                    items = read_table(self.store, load_manifest(self.store, snapshot_id), "items.parquet")
                except (SnapshotError, OSError, KeyError):
                    return None
                entry = (items, {int(i): n for n, i in enumerate(items.column("id").to_pylist())})
                self._other_items[snapshot_id] = entry
                while len(self._other_items) > 4:
                    self._other_items.popitem(last=False)
        items, rows = entry
        row = rows.get(int(item_id))
        return None if row is None else items.slice(row, 1).to_pylist()[0]

    def catalog_uris(self, snapshot_id: str) -> frozenset[str]:
        """The source URIs a published snapshot's catalog names (empty when it is unknown): the only files
        the service may hand out."""
        with self._other_items_lock:
            uris = self._catalogs.get(snapshot_id)
            if uris is None:
                try:
                    catalog = read_table(self.store, load_manifest(self.store, snapshot_id), "catalog.parquet")
                except (SnapshotError, OSError, KeyError):
                    return frozenset()
                uris = self._catalogs[snapshot_id] = frozenset(catalog.column("uri").to_pylist())
                while len(self._catalogs) > 4:
                    self._catalogs.popitem(last=False)
        return uris

    # ---- swapping --------------------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Swap to LATEST (or load the pinned snapshot) if it is not served yet; True when a swap happened.
        A snapshot that fails to load is logged and the current one keeps serving."""
        with self._swap_lock:
            wanted = self.pinned or self.store.latest_id()
            if wanted is None or wanted == self.snapshot_id or wanted == self._failed:
                return False
            try:
                snap = open_snapshot(self.store, wanted)
                engine = QueryEngine.from_settings(snap, self.settings)
                engine.load_models(previous=self._engine)
            except Exception as e:  # noqa: BLE001 - whatever breaks a load, keep serving the old snapshot
                self._failed = wanted
                log.error("snapshot %s could not be loaded, still serving %s: %s", wanted, self.snapshot_id, e)
                self._on_swap_failure(wanted, e)
                return False
            old, self._engine, self._failed = self.snapshot_id, engine, None
            log.info("serving snapshot %s (was %s)", wanted, old)
            self._on_swap(wanted)
            return True

    def start(self) -> None:
        """Load the snapshot now, then poll LATEST every ``service_poll_seconds`` (unless pinned or 0)."""
        self.refresh()
        interval = self.settings.service_poll_seconds
        if self.pinned or interval <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, args=(interval,), name="mmrag-snapshot-poller",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except Exception:
                log.exception("checking LATEST of %s failed; trying again in %.1f s", self.store.uri, interval)
