"""Start what an index run needs at the same time, not one after another: the temporary Prefect API (a server
process a flow run without ``PREFECT_API_URL`` waits ~5-10 s for) in a thread, while this thread loads the
models (a small job, in this process) or starts Ray and the model actors. The flow run then finds its models
started (:func:`take_started`) instead of starting them once its API is up."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mmrag_core.config import Settings
from mmrag_core.config.sections import ComputeSettings, ModelSettings
from mmrag_core.ingest.sources import DocRef

log = logging.getLogger(__name__)

# Models started ahead of a flow run: (what they were started for, in process?, the encoders).
_started: list[tuple[str, bool, dict[str, Any]]] = []


def _key(settings: Settings) -> str:
    """The settings that decide which models start and where: the same key, the same encoders."""
    fields = set(ModelSettings.model_fields) | set(ComputeSettings.model_fields) | {"store"}
    return settings.model_dump_json(include=fields)


def start_models(settings: Settings, in_process: bool) -> dict[str, Any]:
    """The run's encoders: loaded in this process (a small job), or Ray started and one actor (or pool) per
    space started, loading as the caller goes on."""
    if in_process:
        from mmrag_core.models.hub import settle_hub_mode
        from tasks.embed import load_in_process_encoders

        settle_hub_mode()  # before transformers or open_clip load, as ensure_ray does for the actors
        return load_in_process_encoders(settings)
    from tasks.embed import start_encoders
    from tasks.ray_runtime import ensure_ray

    ensure_ray(settings)
    return start_encoders(settings)


def prestart(settings: Settings, docs: list[DocRef]) -> bool:
    """Start the models a run of ``docs`` will use and keep them for the flow run; True when in process."""
    from tasks.small_jobs import runs_in_process

    in_process = runs_in_process(docs, settings)
    _started[:] = [(_key(settings), in_process, start_models(settings, in_process))]
    return in_process


def take_started(settings: Settings, in_process: bool) -> dict[str, Any] | None:
    """The encoders :func:`prestart` started for these settings and this mode (once), else None."""
    if not _started:
        return None
    key, mode, encoders = _started.pop()
    if key == _key(settings) and mode == in_process:
        return encoders
    log.warning("models started ahead were for other settings; starting the run's own")
    return None


def ephemeral_api_needed() -> bool:
    """Whether a flow run here would start Prefect's temporary API server (no PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


@contextmanager
def prefect_api_starting() -> Iterator[None]:
    """Start Prefect's temporary API server in a thread for the block's duration, and wait for it at the end.
    It is the server the flow run then uses (Prefect keeps one per process). A start that fails here is
    left to the flow run, which starts it again and reports the error."""
    if not ephemeral_api_needed():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    def start() -> None:
        try:
            SubprocessASGIServer().start()
        except Exception as e:  # noqa: BLE001 - the flow run starts it again and fails with the reason
            log.debug("temporary Prefect API did not start ahead of the run: %s", e)

    thread = threading.Thread(target=start, name="prefect-api-start", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
