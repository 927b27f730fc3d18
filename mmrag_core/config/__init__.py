"""All of mmrag's settings: one section per stage, composed into one flat, typed ``Settings``.

Precedence (highest first): explicit overrides (CLI flags) > ``MMRAG_*`` environment variables
> a YAML file (``--config`` or ``MMRAG_CONFIG``) > the defaults below. Keeping every knob here
means flows, tasks and the CLI never invent their own defaults.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mmrag_core.config.sections import (
    AnswerSettings,
    ComputeSettings,
    DeploySettings,
    IndexSettings,
    IngestSettings,
    LearnSettings,
    ModelSettings,
    QuerySettings,
    ServiceSettings,
    SnapshotSettings,
    StorageSettings,
)

SECTIONS: tuple[type[BaseModel], ...] = (
    StorageSettings, IngestSettings, ModelSettings, ComputeSettings, IndexSettings, SnapshotSettings,
    DeploySettings, QuerySettings, ServiceSettings, AnswerSettings, LearnSettings,
)


class Settings(BaseSettings, StorageSettings, IngestSettings, ModelSettings, ComputeSettings, IndexSettings,
               SnapshotSettings, DeploySettings, QuerySettings, ServiceSettings, AnswerSettings, LearnSettings):
    """All settings, flat (every field can be set as ``MMRAG_<FIELD>``, in the YAML file or as a CLI flag), and
    grouped: ``settings.query`` and the other section properties give a stage only its own section."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", extra="forbid", validate_assignment=True)

    @property
    def storage(self) -> StorageSettings:
        """The ``storage`` section: what that stage reads, and nothing else."""
        return _section(StorageSettings, self)

    @property
    def ingest(self) -> IngestSettings:
        """The ``ingest`` section: what that stage reads, and nothing else."""
        return _section(IngestSettings, self)

    @property
    def models(self) -> ModelSettings:
        """The ``models`` section: what that stage reads, and nothing else."""
        return _section(ModelSettings, self)

    @property
    def compute(self) -> ComputeSettings:
        """The ``compute`` section: what that stage reads, and nothing else."""
        return _section(ComputeSettings, self)

    @property
    def index(self) -> IndexSettings:
        """The ``index`` section: what that stage reads, and nothing else."""
        return _section(IndexSettings, self)

    @property
    def snapshots(self) -> SnapshotSettings:
        """The ``snapshots`` section: what that stage reads, and nothing else."""
        return _section(SnapshotSettings, self)

    @property
    def deploy(self) -> DeploySettings:
        """The ``deploy`` section: what that stage reads, and nothing else."""
        return _section(DeploySettings, self)

    @property
    def query(self) -> QuerySettings:
        """The ``query`` section: what that stage reads, and nothing else."""
        return _section(QuerySettings, self)

    @property
    def service(self) -> ServiceSettings:
        """The ``service`` section: what that stage reads, and nothing else."""
        return _section(ServiceSettings, self)

    @property
    def answer(self) -> AnswerSettings:
        """The ``answer`` section: what that stage reads, and nothing else."""
        return _section(AnswerSettings, self)

    @property
    def learn(self) -> LearnSettings:
        """The ``learn`` section: what that stage reads, and nothing else."""
        return _section(LearnSettings, self)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``MMRAG_CONFIG`` (set by ``load_settings``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("MMRAG_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
        return data


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from file, environment and overrides; ``None`` overrides are ignored."""
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        os.environ["MMRAG_CONFIG"] = str(config_file)
    clean = {k: v for k, v in overrides.items() if v is not None}
    if "ray_address" not in clean and os.environ.get("RAY_ADDRESS") and not os.environ.get("MMRAG_RAY_ADDRESS"):
        clean["ray_address"] = os.environ["RAY_ADDRESS"]
    return Settings(**clean)


S = TypeVar("S", bound=BaseModel)


def _section(cls: type[S], settings: BaseModel) -> S:
    """A section's own model, built from the flat settings' values (already validated there)."""
    return cls.model_construct(**{name: getattr(settings, name) for name in cls.model_fields})


__all__ = ["SECTIONS", "Settings", "load_settings", *(cls.__name__ for cls in SECTIONS)]
