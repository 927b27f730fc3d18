"""Versioned fine-tuned models in the store: ``models/<space>/<id>/`` (``text`` or ``image``) holds the adapter
files, and last (the marker) ``mmrag_model.json``: the base model, each file's sha256, the training data's and
settings' fingerprints, the validation metrics and the parent model. The id is derived from the adapter's bytes, so
the same weights get the same id and a model, once written, never changes."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from mmrag_core.models.stored import MODEL_META, STORE_PREFIX, model_key

def publish_model(store: Any, run_key: str, space: str, info: dict) -> tuple[str, str]:
    """Copy a run's best adapter (``<run_key>/best/``) to ``models/<space>/<id>/`` with its metadata; returns the id
    and the ``store:`` name a setting uses. ``info`` holds base, parent, fingerprints, metrics, recipe."""
    names = [n for n in store.children(f"{run_key}/best") if not n.startswith(".")]
    files = {name: store.read_bytes(f"{run_key}/best/{name}") for name in names}
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        raise FileNotFoundError(f"run {run_key} wrote no adapter weights")
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(weights))).hexdigest()
    base_slug = info["base"].split("/")[-1].lower().replace("_", "-")
    model_id = f"{base_slug}-ft-{digest[:12]}"
    key = model_key(space, model_id)
    meta_key = f"{key}/{MODEL_META}"
    if not store.exists(meta_key):
        for name, data in files.items():
            store.write_bytes(f"{key}/{name}", data)
        meta = {"id": model_id, "space": space, "kind": info.get("method", "lora"),
                "created": datetime.now(UTC).isoformat(),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}, **info}
        store.write_bytes(meta_key, json.dumps(meta, indent=1, sort_keys=True).encode())
    return model_id, f"{STORE_PREFIX}{key}"


def list_models(store: Any, space: str = "text") -> list[dict]:
    """The metadata of every model of ``space`` in the store, oldest first."""
    out = []
    for name in store.children(f"models/{space}"):
        meta_key = f"models/{space}/{name.rstrip('/').split('/')[-1]}/{MODEL_META}"
        if store.exists(meta_key):
            out.append(json.loads(store.read_bytes(meta_key)))
    return sorted(out, key=lambda m: m.get("created", ""))
