"""FastAPI dependencies over ``app.state``: routers are module-level, so what one app serves (its settings, store,
holder, caches, token) is looked up per request rather than closed over."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from mmrag_core.config import Settings
from mmrag_core.service.answers import Answerer
from mmrag_core.service.batching import QueryBatcher
from mmrag_core.service.guards import RETRY_AFTER_SECONDS, AdmissionGate
from mmrag_core.service.metrics import ServiceMetrics
from mmrag_core.service.snapshot_holder import SnapshotHolder
from mmrag_core.service.thumbnails import ThumbnailCache
from mmrag_core.storage.store import Store


def _state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency giving ``app.state.<name>`` of the app that received the request."""
    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)
    return get


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


SettingsDep = Annotated[Settings, Depends(_state("settings"))]
StoreDep = Annotated[Store, Depends(_state("store"))]
HolderDep = Annotated[SnapshotHolder, Depends(_state("holder"))]
BatcherDep = Annotated[QueryBatcher, Depends(_state("batcher"))]
MetricsDep = Annotated[ServiceMetrics, Depends(_state("metrics"))]
ThumbnailsDep = Annotated[ThumbnailCache, Depends(_state("thumbnails"))]
AnswererDep = Annotated[Answerer, Depends(_state("answerer"))]
AUTH = [Depends(require_token)]
ADMITTED = [Depends(admitted)]  # after AUTH: an unauthorised request takes no place
