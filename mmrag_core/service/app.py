"""The query service's FastAPI app: POST /query, GET /search, POST /query/batch, POST /answer, GET /snapshots,
/info, /thumbnails/..., /previews/..., /sources/..., /healthz, /metrics, the search page at / and the OpenAPI docs
at /docs (Swagger UI from the fastapi-offline package under /docs-assets). The routes live in
:mod:`mmrag_core.service.routes`; this module wires one app's shared state, middleware and routers."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mmrag_core.config import Settings
from mmrag_core.service.answers import Answerer
from mmrag_core.service.batching import QueryBatcher
from mmrag_core.service.guards import (AdmissionGate, BodySizeLimitMiddleware, ForwardedHeadersMiddleware,
                                       SecurityHeadersMiddleware, token_checker)
from mmrag_core.service.metrics import MetricsMiddleware, ServiceMetrics
from mmrag_core.service.routes import answer, health, pages, query, snapshots
from mmrag_core.service.snapshot_holder import NoSnapshot, SnapshotHolder
from mmrag_core.service.thumbnails import ThumbnailCache
from mmrag_core.storage.store import Store, open_store


def create_app(settings: Settings, store: Store | None = None, pinned_snapshot: str | None = None) -> FastAPI:
    """The service for ``settings.store`` (or ``store``), serving LATEST (or ``pinned_snapshot``)."""
    store = store or open_store(settings)
    metrics = ServiceMetrics()
    holder = SnapshotHolder(store, settings, pinned_snapshot, on_swap=lambda sid: (metrics.served(sid),
                                                                                   metrics.swaps.inc()),
                            on_swap_failure=lambda _sid, _e: metrics.swap_failures.inc())
    batcher = QueryBatcher(holder, settings.service_microbatch_wait_ms, settings.service_microbatch_max)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.start)
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)
            await run_in_threadpool(holder.stop)

    app = FastAPI(title="mmrag query service", lifespan=lifespan, docs_url=None,  # /docs: routes/pages.py
                  description="Multimodal search over the published mmrag snapshot of a store. Every `page` is "
                              "0-based (the first page is 0); pages shown to people are 1-based ('p. N').")
    app.state.settings = settings
    app.state.store = store
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.thumbnails = ThumbnailCache(settings.service_thumbnail_cache)
    app.state.answerer = Answerer(holder, settings)
    app.state.check_token = token_checker(settings.service_token)
    app.state.gate = AdmissionGate(settings.service_max_queue)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.service_max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(ForwardedHeadersMiddleware, trusted_hosts=settings.service_forwarded_allow_ips,
                       root_path=settings.service_root_path)
    app.mount(pages.DOCS_ASSETS, StaticFiles(directory=pages.SWAGGER_UI_DIR), name="docs-assets")

    @app.exception_handler(NoSnapshot)
    async def no_snapshot(_request: Request, e: NoSnapshot) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    # In the order the routes have always had (the OpenAPI document lists paths in this order).
    for router in (pages.router, health.router, snapshots.router, query.router, answer.router,
                   pages.thumbnails_router, health.metrics_router):
        app.include_router(router)
    return app
