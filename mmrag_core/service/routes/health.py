"""Liveness (open, for probes) and Prometheus metrics (behind the token)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from mmrag_core.service.routes.deps import AUTH, HolderDep, MetricsDep

router = APIRouter()
metrics_router = APIRouter()  # mounted last, where /metrics always was in the OpenAPI document


@router.get("/healthz", summary="Liveness and the served snapshot (no token needed)")
async def healthz(holder: HolderDep) -> JSONResponse:
    sid = holder.snapshot_id
    missing = {} if sid or holder.store.root_exists() else {"detail": f"store {holder.store.uri} does not exist"}
    return JSONResponse({"status": "ok" if sid else "no snapshot", "snapshot": sid, **missing},
                        status_code=200 if sid else 503)


@metrics_router.get("/metrics", dependencies=AUTH, response_class=Response, summary="Prometheus metrics")
def prometheus_metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
