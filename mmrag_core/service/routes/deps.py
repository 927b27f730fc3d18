"""FastAPI dependencies over ``app.state``: routers are module-level, so what one app serves (its settings, store,
holder, caches, token) is looked up per request rather than closed over."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from mmrag_core.config import Settings
from mmrag_core.service.answers import Answerer
from mmrag_core.service.guards import RETRY_AFTER_SECONDS, AdmissionGate
from mmrag_core.service.metrics import ServiceMetrics
from mmrag_core.service.snapshot_holder import SnapshotHolder
from mmrag_core.service.thumbnails import ThumbnailCache
from mmrag_core.storage.store import Store


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _store(request: Request) -> Store:
    return request.app.state.store


async def _holder(request: Request) -> SnapshotHolder:
    return request.app.state.holder


async def _metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def _thumbnails(request: Request) -> ThumbnailCache:
    return request.app.state.thumbnails


async def _answerer(request: Request) -> Answerer:
    return request.app.state.answerer


async def require_token(request: Request) -> None:
    """The app's bearer-token check (:func:`mmrag_core.service.guards.token_checker` of its settings)."""
    await request.app.state.check_token(request)


async def admitted(request: Request) -> AsyncIterator[None]:
    """Holds one of the ``service_max_queue`` places of queries in progress or waiting, for the request's
    duration; when none is free the request is refused at once: 503 with Retry-After, counted."""
    gate: AdmissionGate = request.app.state.gate
    if not gate.enter():
        request.app.state.metrics.rejected.labels(request.url.path).inc()
        raise HTTPException(503, f"busy: {gate.limit} queries in progress or waiting (service_max_queue); retry "
                                 f"in {RETRY_AFTER_SECONDS} s", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    try:
        yield
    finally:
        gate.leave()


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
HolderDep = Annotated[SnapshotHolder, Depends(_holder)]
MetricsDep = Annotated[ServiceMetrics, Depends(_metrics)]
ThumbnailsDep = Annotated[ThumbnailCache, Depends(_thumbnails)]
AnswererDep = Annotated[Answerer, Depends(_answerer)]
AUTH = [Depends(require_token)]
ADMITTED = [Depends(admitted)]  # after AUTH: an unauthorised request takes no place
