"""Prometheus metrics of the query service: requests by endpoint and status, latency, the served snapshot.

Each app has its own registry, so that several apps (tests) in one process do not share counters.
"""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mmrag_http_requests", "HTTP requests by endpoint (route template), method and status.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("mmrag_http_request_duration_seconds", "HTTP request latency by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.snapshot = Gauge("mmrag_snapshot_served", "1 for the snapshot the service answers from.",
                              ["snapshot"], registry=self.registry)
        self.rejected = Counter("mmrag_http_rejected", "Queries and answers refused with 503 because "
                                "service_max_queue were already in progress or waiting.", ["endpoint"],
                                registry=self.registry)
        self.swaps = Counter("mmrag_snapshot_swaps", "Swaps to a newly published snapshot.", registry=self.registry)
        self.swap_failures = Counter("mmrag_snapshot_swap_failures",
                                     "Published snapshots that could not be loaded (the old one kept serving).",
                                     registry=self.registry)

    def served(self, snapshot_id: str) -> None:
        self.snapshot.clear()
        self.snapshot.labels(snapshot=snapshot_id).set(1)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every response (errors from inner middleware included) and times it, by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
