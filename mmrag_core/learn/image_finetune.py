"""What a fine-tuning run of the image space trains on: the CLIP base the snapshot's image space was built with
(its projection must fit the vectors that base makes), and the (text, figure) pairs of the snapshot's figures
(:mod:`mmrag_core.learn.figure_pairs`) split by query, kept in the store, and keyed into a run (the same data,
settings and base resume the same run)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from mmrag_core.config.sections import LearnSettings
from mmrag_core.learn.figure_pairs import figure_examples, pairs_to_store, split_figures
from mmrag_core.learn.finetune import RUNS_PREFIX, Prepared, settings_fingerprint
from mmrag_core.learn.pairs import fingerprint
from mmrag_core.models.stored import MODEL_META, is_store_ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipBase:
    """The CLIP a projection is trained on: open_clip model name, pretrained tag or checkpoint, model-config JSON,
    the loaded weights' fingerprint (checked when the model is used) and the model the snapshot was built with
    (the new model's parent)."""

    name: str
    pretrained: str | None
    model_config: str | None
    state_sha256: str | None
    parent: str

    def meta(self) -> dict:
        """What ``mmrag_model.json`` keeps under ``clip`` (what ClipEncoder rebuilds the base from)."""
        return {"pretrained": self.pretrained, "model_config": self.model_config,
                "base_state_sha256": self.state_sha256}


def clip_base(store: Any, manifest: Any, settings: Any) -> ClipBase:
    """The base of the snapshot's image space (a fine-tuned one's own base), or the settings' CLIP when the
    snapshot has no image space; a clear error when neither names a CLIP."""
    m = manifest["models"].get("image") or {}
    if m and not m.get("skipped"):
        name = m["name"]
        if is_store_ref(name):  # built with a fine-tuned CLIP: train again on its base
            meta = json.loads(store.read_bytes(f"{name.removeprefix('store:').strip('/')}/{MODEL_META}"))
            clip = meta["clip"]
            return ClipBase(meta["base"], clip.get("pretrained"), clip.get("model_config"),
                            clip.get("base_state_sha256"), meta["id"])
        return ClipBase(name, m.get("pretrained"), m.get("model_config"), m.get("state_sha256"), name)
    if not settings.clip_enabled or is_store_ref(settings.clip_model):
        raise ValueError("the snapshot has no image space and no CLIP model is set (clip_model): index with CLIP "
                         "on before fine-tuning the image space")
    return ClipBase(settings.clip_model, settings.clip_pretrained, settings.clip_model_config, None,
                    settings.clip_model)


def prepare_figures(store: Any, snapshot: Any, learn: LearnSettings, base: ClipBase) -> Prepared:
    """The snapshot's (text, figure) pairs with same-document hard negatives, split by query and keyed."""
    examples = figure_examples(snapshot.items)
    if len(examples) < 4:
        raise ValueError(f"only {len(examples)} (text, figure) pairs in snapshot {snapshot.id}: fine-tuning the "
                         "image space needs at least 4 (figures with a caption, printed words or page text)")
    key, rows = pairs_to_store(store, examples, learn.finetune_negatives, snapshot.id)
    train_ex, val_ex = split_figures(examples, learn.finetune_val_fraction, learn.finetune_seed)
    val_ids = {e.query_id for e in val_ex}
    data_fp = fingerprint(examples)
    settings_fp = settings_fingerprint(learn)
    base_key = json.dumps(asdict(base), sort_keys=True)
    run_id = hashlib.sha256(f"image|{key}|{data_fp}|{settings_fp}|{base_key}".encode()).hexdigest()[:16]
    counts = {"examples": len(examples), "figures": len({e.ref for e in examples}),
              "train_queries": len(train_ex), "val_queries": len(val_ex), "rows": len(rows),
              "hard_negatives": sum(1 for r in rows if r["negative"]),
              "sources": {s: sum(e.source == s for e in examples) for s in sorted({e.source for e in examples})}}
    log.info("prepared figure pairs %s", counts)
    return Prepared([r for r in rows if r["query_id"] not in val_ids], [r for r in rows if r["query_id"] in val_ids],
                    key, data_fp, settings_fp, f"{RUNS_PREFIX}/{run_id}", counts)
