"""Online or offline, decided once per process: ``HF_HUB_OFFLINE`` when it is set, otherwise one short
connection probe to the model hub. Offline, ``HF_HUB_OFFLINE=1`` is set for this process and the ones it starts
(Ray workers inherit it), so a missing model fails at once with what to do instead of every actor retrying the
download for minutes; online, models named by a hub id (CLIP tags, BLIP-2) download once into the hub cache."""
from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 1.5
_decided: list[bool] = []  # [offline], once decided in this process


def hub_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def env_flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """One TCP connection to the hub's host (HF_ENDPOINT or huggingface.co), within ``timeout`` seconds."""
    host, port = hub_host()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def settle_hub_mode() -> bool:
    """Decide (once per process) whether the hub is offline and set ``HF_HUB_OFFLINE`` to match when it was
    not set; True when offline. Call before transformers, open_clip or huggingface_hub load."""
    if _decided:
        return _decided[0]
    given = os.environ.get("HF_HUB_OFFLINE")
    if given is not None and given.strip():
        offline = env_flag(given)
    else:
        offline = not hub_reachable()
        if offline:
            os.environ["HF_HUB_OFFLINE"] = "1"
            log.info("model hub %s unreachable: working offline (HF_HUB_OFFLINE=1)", hub_host()[0])
        else:
            os.environ["HF_HUB_OFFLINE"] = "0"  # decided: child processes need not probe again
    _decided.append(offline)
    return offline
