"""The Prefect deployments of mmrag's flows, built from the settings (crons, default source and store).

One Prefect convention, the work pool's: ``mmrag deploy`` registers them on a process work pool (``mmrag`` by
default, created when missing) of the Prefect API that ``PREFECT_API_URL`` names; ``mmrag worker`` is a Prefect
process worker of that pool, which polls for their runs (scheduled, or started from the UI) and runs each in a
subprocess. The worker registers nothing, so it never overwrites what ``deploy`` set; ``infra/prefect.yaml``
declares the same deployments on the same pool for ``prefect deploy --all``.

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
from flows.finetune_flow import finetune_flow
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
    """The six deployments. Without a default ``source`` the re-indexing schedules are registered inactive:
    a scheduled run would have nothing to index (a run from the UI names its source); likewise the evaluation
    schedule without default queries and qrels files (``eval_queries``, ``eval_qrels``). Evaluation only
    reads the store, so it waits for no lock. ``finetune`` (on demand unless ``finetune_cron`` is set) promotes
    by default: it re-indexes LATEST's source into a candidate snapshot and moves LATEST only when it wins."""
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
        DeploymentSpec("finetune", finetune_flow, "Fine-tune the text encoder on LATEST (mined hard negatives), keep "
                       "the versioned model in the store, index a candidate snapshot with it and promote it to LATEST "
                       "only when it evaluates better.", settings.finetune_cron or None,
                       {**store, "overrides": wait, "promote": True}),
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


DEFAULT_POOL = "mmrag"


def ensure_pool(pool: str) -> bool:
    """Create ``pool`` as a process work pool when the server has none of that name; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
            return True


def register(deployments: list[RunnerDeployment], pool: str = DEFAULT_POOL) -> dict[str, UUID]:
    """Create or update the deployments on work pool ``pool`` of the server; ``{"flow/deployment": id}``."""
    require_server()
    ensure_pool(pool)
    return {f"{d.flow_name}/{d.name}": d.apply(work_pool_name=pool) for d in deployments}


def run_worker(pool: str = DEFAULT_POOL, limit: int | None = None) -> None:
    """Run the flow runs of ``pool`` (a Prefect process worker) until interrupted. It registers no deployment:
    what ``mmrag deploy`` (or ``prefect deploy``) set stays as it was, schedules included."""
    import asyncio

    from prefect.workers.process import ProcessWorker

    require_server()

    async def work() -> None:
        async with ProcessWorker(work_pool_name=pool, limit=limit) as worker:
            await worker.start()

    asyncio.run(work())
