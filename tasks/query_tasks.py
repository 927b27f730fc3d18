"""The Prefect task that queries a published snapshot, so that flows (and runs started from the Prefect UI)
can search as the CLI and the HTTP service do."""
from __future__ import annotations

import threading
from collections import OrderedDict

import fsspec
from prefect import task
from prefect.cache_policies import NO_CACHE

from mmrag_core.config import Settings
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.filters import QueryFilters
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store, open_store, storage_options_for

_ENGINES: OrderedDict[tuple[str, str], QueryEngine] = OrderedDict()  # (store, snapshot) -> engine, models loaded
_ENGINES_KEPT = 2
_ENGINES_LOCK = threading.Lock()


def engine_for(store: Store, settings: Settings, snapshot_id: str | None = None) -> QueryEngine:
    """A query engine for ``snapshot_id`` (default: LATEST), kept per process so that later queries of the same
    snapshot do not open it and load its models again."""
    with _ENGINES_LOCK:
        sid = snapshot_id or store.latest_id()
        engine = _ENGINES.get((store.uri, sid)) if sid else None
        if engine is None:
            snap = open_snapshot(store, sid)
            previous = next(reversed(_ENGINES.values()), None)
            engine = QueryEngine.from_settings(snap, settings)
            engine.load_models(previous=previous)
            _ENGINES[(store.uri, snap.id)] = engine
            while len(_ENGINES) > _ENGINES_KEPT:
                _ENGINES.popitem(last=False)
        _ENGINES.move_to_end((store.uri, engine.snapshot.id))
        return engine


@task(name="query-snapshot", cache_policy=NO_CACHE)
def query_snapshot(settings: Settings, text: str | None = None, image: str | None = None, k: int | None = None,
                   snapshot: str | None = None, strategy: str | None = None,
                   filters: dict | None = None) -> list[dict]:
    """Top-``k`` hits (dicts, each naming the snapshot that answered) for a text, an image (a path or
    s3:// URI) or both, from ``snapshot`` or LATEST of ``settings.store``; ``strategy`` (default:
    settings.fusion_strategy) and ``filters`` (:class:`~mmrag_core.query.filters.QueryFilters` JSON form)
    as for ``mmrag query``."""
    engine = engine_for(open_store(settings), settings, snapshot)
    data = None
    if image:
        with fsspec.open(image, "rb", **storage_options_for(image, settings.s3_endpoint_url)) as f:
            data = f.read(settings.max_file_bytes + 1)
        if len(data) > settings.max_file_bytes:
            raise ValueError(f"query image {image} is over max_file_bytes ({settings.max_file_bytes})")
    hits = engine.search(text=text, image=data, k=k or settings.k, strategy=strategy,
                         filters=QueryFilters.parse(filters))
    return [{"snapshot": engine.snapshot.id, **h.to_dict()} for h in hits]
