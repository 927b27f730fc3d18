"""Start or join Ray once per process, with the settings that matter on small machines."""
from __future__ import annotations

import logging
import os
import signal
import threading

import ray

from mmrag_core.config import Settings

log = logging.getLogger(__name__)

# Passed to every worker: the model-hub setting must match the driver's. OMP_THREAD_LIMIT=1 (tesseract is ~2x
# faster single-threaded, one process per core) is NOT: it would cap the encoder actors' torch at one thread too;
# mmrag_core.ingest.extract.ocr sets it where OCR runs.
_WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MMRAG_TEST_DATA")


def ensure_ray(settings: Settings) -> None:
    """Join ``settings.ray_address`` (or RAY_ADDRESS) or start a local Ray without a dashboard, and start
    warming one extraction worker per slot while the caller loads its models."""
    if ray.is_initialized():
        return
    from mmrag_core.models.hub import settle_hub_mode
    from tasks.worker_logs import quiet_library_logs

    quiet_library_logs()
    settle_hub_mode()  # before the workers start: they inherit HF_HUB_OFFLINE, so none retries a dead network
    # ray.init replaces the SIGTERM handler with sys.exit, which dies with SIGABRT while threads wait in Ray's
    # C++ code; a handler the caller installed (the CLI's clean stop) must stay.
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    kwargs: dict = {"log_to_driver": True, "logging_level": logging.WARNING}
    if settings.ray_address:
        log.info("joining Ray cluster at %s", settings.ray_address)
        ray.init(address=settings.ray_address, runtime_env={"env_vars": env}, **kwargs)
    else:
        # A local Ray's workers inherit the environment its processes start with; a runtime_env would cost
        # every new worker ~1.5 s of setup on this machine. The driver gets its own environment back, so its
        # faiss and torch keep every core (see mmrag_core.index.faiss_runtime).
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            ray.init(num_cpus=settings.num_cpus, include_dashboard=False, **kwargs)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if main and callable(sigterm):
        signal.signal(signal.SIGTERM, sigterm)
    from tasks.extract import warm_extract_workers  # the extraction libraries load only when Ray is used

    warm_extract_workers(settings, max(1, int(cluster_cpus() / settings.extract_num_cpus)))


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def batches_in_flight(settings: Settings) -> int:
    """How many extraction batches to keep submitted: ``max_batches_in_flight``, else twice what the cluster
    runs at once, so a finished task always finds the next one queued while the rest wait in the flow."""
    if settings.max_batches_in_flight:
        return settings.max_batches_in_flight
    return max(2, 2 * int(cluster_cpus() / settings.extract_num_cpus))


def encoder_gpus(settings: Settings) -> float:
    """GPUs per embedding actor: ``encoder_num_gpus``, else one whole GPU when the device is cuda."""
    if settings.encoder_num_gpus is not None:
        return settings.encoder_num_gpus
    return 1.0 if settings.device.startswith("cuda") else 0.0
