"""Fine-tuned models kept in the store (``models/text/<id>/``, ``models/image/<id>/``) or in a folder: a small
adapter (LoRA or a projection) over a base encoder, with a ``mmrag_model.json`` that names the base and every
file's sha256.

A setting names one as ``store:models/text/<id>`` (``text_model``) or ``store:models/image/<id>``
(``clip_model``) (the store that holds the index, so a snapshot and the model
it was built with travel together) or as a folder path. Files are checked against their sha256 before use, so a
query never encodes with other weights than the ones an index was built with.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mmrag_core.models import ModelUnavailable
from mmrag_core.storage.checksums import sha256_file

MODEL_META = "mmrag_model.json"
STORE_PREFIX = "store:"


def model_key(space: str, model_id: str) -> str:
    """The store folder of model ``model_id`` of ``space``."""
    return f"models/{space}/{model_id}"


def is_store_ref(name: str) -> bool:
    """Whether a model name points into the store (``store:models/text/<id>``)."""
    return name.startswith(STORE_PREFIX)


def read_meta(folder: str | Path) -> dict | None:
    """The ``mmrag_model.json`` of a model folder, or None when it is a plain (hub-layout) model."""
    p = Path(folder) / MODEL_META
    return json.loads(p.read_text()) if p.is_file() else None


def check_files(folder: Path, meta: dict) -> None:
    """Raise ModelUnavailable when a file the metadata lists is missing or differs from its sha256."""
    for name, sha in meta.get("files", {}).items():
        f = folder / name
        if not f.is_file() or sha256_file(f) != sha:
            raise ModelUnavailable(f"model {meta.get('id')!r}: file {f} is missing or does not match its sha256")


def fetch_stored_model(store: Any, ref: str) -> Path:
    """A checked local folder holding the stored model ``ref`` (``store:<key>``): the folder itself in a local
    store, else a copy under the store's cache, fetched once per model id."""
    if store is None:
        raise ModelUnavailable(f"model {ref!r} lives in a store, but no store was given to load it from")
    key = ref[len(STORE_PREFIX):].strip("/")
    try:
        meta = json.loads(store.read_bytes(f"{key}/{MODEL_META}"))
    except FileNotFoundError:
        raise ModelUnavailable(f"no model {key!r} in store {store.uri} (train one with `mmrag finetune`)") from None
    if not store.remote:
        folder = Path(store.path(key))
    else:
        folder = Path(store.cache_dir) / "models" / meta["id"]
        if not (folder / MODEL_META).is_file():
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name, sha in meta["files"].items():
                shutil.copyfile(store.local_file(f"{key}/{name}", sha), tmp / name)
            (tmp / MODEL_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
    check_files(folder, meta)
    return folder


def text_model_store(settings: Any) -> Any:
    """The store a ``store:`` text model setting refers to (None for any other model name)."""
    return model_store(settings, settings.text_model)


def model_store(settings: Any, name: str) -> Any:
    """The store a ``store:`` model name refers to: the settings' store (None for any other model name)."""
    if not is_store_ref(name):
        return None
    from mmrag_core.storage.store import open_store

    return open_store(settings)
