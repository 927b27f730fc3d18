"""Which items go into which space, and the key that says whether stored vectors are still valid."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from mmrag_core.items import Item


def text_inputs(items: list[Item]) -> tuple[np.ndarray, list[str]]:
    """(ids, texts) for the ``text`` space: every chunk with some text."""
    chosen = [it for it in items if it.kind == "chunk" and it.text.strip()]
    return np.array([it.id for it in chosen], dtype=np.int64), [it.text for it in chosen]


def image_inputs(items: list[Item]) -> tuple[np.ndarray, list[bytes]]:
    """(ids, PNG bytes) for the ``image`` space: figures and image files."""
    chosen = [it for it in items if it.image_png]
    return np.array([it.id for it in chosen], dtype=np.int64), [it.image_png for it in chosen]


def models_key(models: dict) -> str:
    """A digest of the model descriptions (names and weight checksums) per space.

    A document's persisted vectors are reused only when this key matches the current run's.
    """
    relevant = {
        space: {k: desc.get(k) for k in ("name", "pretrained", "weights_sha256", "skipped", "dim")}
        for space, desc in sorted(models.items())
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
