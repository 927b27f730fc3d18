"""Typed flow parameters: the Prefect UI builds its run form (and the API validates a run) from them.

``SettingsOverrides`` is derived from :class:`Settings`, so a run can change any per-run setting without a
second list of names, types, descriptions or defaults to keep in step.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from mmrag_core.config import Settings, load_settings

# Not per-run choices: where a run writes (the flows' own ``store`` parameter) and how deployments are set up.
NOT_OVERRIDABLE = frozenset({
    "store", "source", "reindex_cron", "full_rebuild_cron", "compact_cron", "gc_cron", "schedule_timezone",
    "deploy_collision_strategy", "deploy_lock_wait_seconds", "worker_limit",
    "evaluate_cron", "eval_queries", "eval_qrels",
    # A secret: a flow run's parameters are stored (and shown) by the Prefect server.
    "generator_api_key",
}) | {name for name in Settings.model_fields if name.startswith("service_")}  # the HTTP service's own settings


def _overrides_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (info.annotation | None, Field(None, description=info.description))
        for name, info in Settings.model_fields.items() if name not in NOT_OVERRIDABLE
    }
    return create_model(
        "SettingsOverrides",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Settings for this run only; a field left empty keeps the worker's value (MMRAG_* env, config file).",
        **fields,
    )


SettingsOverrides = _overrides_model()


def run_settings(store: str | None, overrides: BaseModel | dict[str, Any] | None) -> Settings:
    """The settings of one flow run: the process's settings, then ``overrides``, then ``store``."""
    if isinstance(overrides, dict):
        overrides = SettingsOverrides.model_validate(overrides)
    given = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    return load_settings(**given, store=store)


def overrides_of(settings: Settings) -> dict[str, Any]:
    """The per-run settings that differ from the defaults, as a flow's ``overrides`` parameter (the CLI's
    flags and config file travel to the flow this way)."""
    return settings.model_dump(exclude_defaults=True, include=set(SettingsOverrides.model_fields))
