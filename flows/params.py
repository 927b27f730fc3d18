"""Typed flow parameters: the Prefect UI builds its run form (and the API validates a run) from them.

``SettingsOverrides`` is derived from :class:`Settings`, so a run can change any per-run setting without a
second list of names, types, descriptions or defaults to keep in step.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from mmrag_core.config import (
    AnswerSettings,
    ComputeSettings,
    IndexSettings,
    IngestSettings,
    LearnSettings,
    ModelSettings,
    QuerySettings,
    Settings,
    SnapshotSettings,
    StorageSettings,
    load_settings,
)

# Not per-run choices: where a run writes (the flows' own ``store`` parameter) and how deployments are set up.
NOT_OVERRIDABLE = frozenset({
    "store", "source", "reindex_cron", "full_rebuild_cron", "compact_cron", "gc_cron", "schedule_timezone",
    "deploy_collision_strategy", "deploy_lock_wait_seconds", "worker_limit",
    "evaluate_cron", "eval_queries", "eval_qrels", "finetune_cron",
    # A secret: a flow run's parameters are stored (and shown) by the Prefect server.
    "generator_api_key",
}) | {name for name in Settings.model_fields if name.startswith("service_")}  # the HTTP service's own settings


def _overrides_model(name: str, fields: list[str] | None = None, filled: bool = False) -> type[BaseModel]:
    """An overrides model of ``fields`` (default: every overridable setting). ``filled``: each field shows the
    setting's default (the run form comes filled in); a value equal to it keeps the worker's setting."""
    chosen = [n for n in (fields or Settings.model_fields) if n not in NOT_OVERRIDABLE]
    spec: dict[str, Any] = {}
    for field_name in chosen:
        info = Settings.model_fields[field_name]
        if not filled:
            spec[field_name] = (info.annotation | None, Field(None, description=info.description))
        elif info.default_factory is not None:
            spec[field_name] = (info.annotation | None,
                                Field(default_factory=info.default_factory, description=info.description))
        else:
            spec[field_name] = (info.annotation | None, Field(info.default, description=info.description))
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__="Settings for this run only; a field left empty (or at its default) keeps the worker's value "
                "(MMRAG_* env, config file).",
        **spec,
    )


SettingsOverrides = _overrides_model("SettingsOverrides")

# The sections each flow reads: its run form shows these settings only. The retry settings of the deploy
# section apply to every task of the flows that write.
_RETRIES = ["task_retries", "task_retry_delay_seconds"]
FLOW_SECTIONS: dict[str, tuple[type[BaseModel], ...]] = {
    "index": (StorageSettings, IngestSettings, ModelSettings, ComputeSettings, IndexSettings),
    "compact": (StorageSettings, ComputeSettings, IndexSettings),
    "gc": (StorageSettings, SnapshotSettings),
    "evaluate": (StorageSettings, QuerySettings, AnswerSettings),
    "finetune": (StorageSettings, ComputeSettings, LearnSettings),
}


def _flow_fields(flow: str) -> list[str]:
    names = [n for section in FLOW_SECTIONS[flow] for n in section.model_fields]
    return names + (_RETRIES if flow in ("index", "compact", "finetune") else [])


IndexOverrides = _overrides_model("IndexOverrides", _flow_fields("index"), filled=True)
CompactOverrides = _overrides_model("CompactOverrides", _flow_fields("compact"), filled=True)
GcOverrides = _overrides_model("GcOverrides", _flow_fields("gc"), filled=True)
EvaluateOverrides = _overrides_model("EvaluateOverrides", _flow_fields("evaluate"), filled=True)
FinetuneOverrides = _overrides_model("FinetuneOverrides", _flow_fields("finetune"), filled=True)


def run_settings(store: str | None, overrides: BaseModel | dict[str, Any] | None) -> Settings:
    """The settings of one flow run: the process's settings, then ``overrides``, then ``store``."""
    if isinstance(overrides, dict):
        overrides = SettingsOverrides.model_validate(overrides)
    # A filled-in form sends every field: values at their defaults keep the worker's settings.
    given = overrides.model_dump(exclude_none=True, exclude_defaults=True) if overrides is not None else {}
    return load_settings(**given, store=store)


def overrides_of(settings: Settings, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """The per-run settings that differ from the defaults, among ``model``'s fields (default: every overridable
    setting), as a flow's ``overrides`` parameter (the CLI's flags travel to the flow this way)."""
    return settings.model_dump(exclude_defaults=True, include=set((model or SettingsOverrides).model_fields))
