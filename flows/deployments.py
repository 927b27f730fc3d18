"""The Prefect deployments of mmrag's flows, built from the settings (crons, default source and store).

``mmrag deploy`` registers them with the Prefect API that ``PREFECT_API_URL`` names; ``mmrag worker`` serves
them: a Prefect Runner process that polls for their runs (scheduled, or started from the UI) and runs each
in a subprocess. ``infra/prefect.yaml`` declares the same deployments for ``prefect deploy --all``.

Each deployment runs at most one flow run at a time (a deployment concurrency limit of 1, its collision
strategy from ``deploy_collision_strategy``); across deployments the store lock keeps one writer per
store, and a deployment run waits ``deploy_lock_wait_seconds`` for it instead of failing at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import get_current_settings
from prefect.types.entrypoint import EntrypointType

from flows.eval_flow import evaluate_flow
from flows.gc_flow import gc_flow
from flows.index_flow import compact_flow, index_flow
from mmrag_core.config import Settings

TAGS = ["mmrag"]


class NoPrefectServer(ValueError):
    """Deployments need a Prefect server: without PREFECT_API_URL they would go to a temporary one (a
    ValueError: the CLI reports it as a configuration error, exit 2)."""


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: a flow, its default parameters, an optional cron."""

    name: str
    flow: Flow[..., Any]
    description: str
    cron: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    schedule_active: bool = True


def deployment_specs(settings: Settings, source: str | None = None) -> list[DeploymentSpec]:
    """The five deployments. Without a default ``source`` the re-indexing schedules are registered inactive:
    a scheduled run would have nothing to index (a run from the UI names its source); likewise the evaluation
    schedule without default queries and qrels files (``eval_queries``, ``eval_qrels``). Evaluation only
    reads the store, so it waits for no lock."""
    source = source or settings.source
    wait = {"lock_wait_seconds": settings.deploy_lock_wait_seconds}
    store = {"store": settings.store}
    index_params = {**({"source": source} if source else {}), **store, "overrides": wait}
    eval_files = {k: v for k, v in (("queries", settings.eval_queries), ("qrels", settings.eval_qrels)) if v}
    return [
        DeploymentSpec("reindex", index_flow, "Index what changed in the source and publish a snapshot.",
                       settings.reindex_cron or None, {**index_params, "retrain": False}, bool(source)),
        DeploymentSpec("full-rebuild", index_flow, "Train new codecs on the whole corpus, encode it again, publish.",
                       settings.full_rebuild_cron or None, {**index_params, "retrain": True}, bool(source)),
        DeploymentSpec("compact", compact_flow, "Rewrite LATEST's shards without tombstones as a new snapshot.",
                       settings.compact_cron or None, {**store, "overrides": wait}),
        DeploymentSpec("gc-snapshots", gc_flow, "Delete snapshots outside the retention rule and unreferenced files.",
                       settings.gc_cron or None, {**store, "overrides": wait}),
        DeploymentSpec("evaluate", evaluate_flow, "Measure LATEST's retrieval quality against relevance judgements.",
                       settings.evaluate_cron or None, {**eval_files, **store, "overrides": {}}, len(eval_files) == 2),
    ]


def build_deployments(settings: Settings, source: str | None = None) -> list[RunnerDeployment]:
    """RunnerDeployments of :func:`deployment_specs`; their entrypoints are module paths, so a worker runs
    the installed package whatever its working directory."""
    limit = ConcurrencyLimitConfig(limit=1,
                                   collision_strategy=ConcurrencyLimitStrategy(settings.deploy_collision_strategy))
    out = []
    for spec in deployment_specs(settings, source):
        schedules = ([Cron(spec.cron, timezone=settings.schedule_timezone, active=spec.schedule_active,
                           slug=f"{spec.name}-cron")] if spec.cron else [])
        out.append(spec.flow.to_deployment(
            name=spec.name, description=spec.description, schedules=schedules, parameters=spec.parameters,
            concurrency_limit=limit, tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    return out


def require_server() -> str:
    """The Prefect API URL, or NoPrefectServer saying how to start one."""
    url = get_current_settings().api.url
    if not url:
        raise NoPrefectServer("PREFECT_API_URL is not set: start a server (prefect server start) and "
                              "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    return url


def register(deployments: list[RunnerDeployment]) -> dict[str, UUID]:
    """Create or update the deployments on the server; ``{"flow/deployment": id}``."""
    require_server()
    return {f"{d.flow_name}/{d.name}": d.apply() for d in deployments}


def serve_deployments(deployments: list[RunnerDeployment], limit: int | None) -> None:
    """Run the deployments' flow runs until interrupted (SIGINT/SIGTERM). Schedules stay active when the
    worker stops (Prefect's default pauses them), so the next worker picks up the runs that came due."""
    from prefect import serve

    require_server()
    serve(*deployments, limit=limit, pause_on_shutdown=False)
