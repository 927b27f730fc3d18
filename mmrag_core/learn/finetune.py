"""What a fine-tuning run trains on, prepared from a published snapshot: examples (labelled and/or
self-supervised), a held-out validation split by query, mined hard negatives kept in the store, and the key of
the run (the same data and settings resume the same run)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmrag_core.config.sections import LearnSettings
from mmrag_core.learn.mining import mine_to_store
from mmrag_core.learn.pairs import Example, corpus_pages, fingerprint, labelled, self_supervised, split
from mmrag_core.query.engine import QueryEngine

log = logging.getLogger(__name__)

RUNS_PREFIX = "learn/runs"
# Settings that do not change what a run computes (how many threads), left out of the run key.
_NOT_IN_KEY = {"finetune_threads", "finetune_promote", "finetune_eval_queries", "finetune_eval_qrels",
               "finetune_promote_metric", "finetune_promote_system", "finetune_promote_min_gain"}  # the gate's


@dataclass
class Prepared:
    """A run's data: mined rows of the training and validation queries, where they are kept, and the run key."""

    train: list[dict]
    val: list[dict]
    negatives_key: str  # the mined tables in the store (labelled, self-supervised), comma-separated
    data_fingerprint: str
    settings_fingerprint: str
    run_key: str
    counts: dict = field(default_factory=dict)


def build_examples(engine: QueryEngine, queries: str | None = None, qrels: str | None = None,
                   synthetic: bool = False, evidence: str | None = None) -> list[Example]:
    """Labelled examples from ``queries``/``qrels`` (and an evidence file beside them, ``evidence.jsonl``, when
    present) plus, with ``synthetic`` or without labels, self-supervised ones from the snapshot's pages."""
    pages = corpus_pages(engine.snapshot.items)
    examples: list[Example] = []
    if queries and qrels:
        if evidence is None:
            beside = Path(queries).with_name("evidence.jsonl")
            evidence = str(beside) if beside.is_file() else None
        examples += labelled(pages, queries, qrels, evidence)
    if synthetic or not (queries and qrels):
        examples += self_supervised(pages)
    return examples


def settings_fingerprint(learn: LearnSettings) -> str:
    """A digest of the training settings that change what a run computes."""
    values = {k: v for k, v in learn.model_dump().items() if k not in _NOT_IN_KEY}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def train_val_split(examples: list[Example], learn: LearnSettings) -> tuple[list[Example], list[Example]]:
    """The run's training and held-out validation examples (the promotion gate scores the held-out ones)."""
    train_ex, val_ex = split(examples, learn.finetune_val_fraction, learn.finetune_seed)
    if not val_ex:  # tiny sets: hold out at least one query
        val_ex, train_ex = train_ex[-1:], train_ex[:-1]
    return train_ex, val_ex


def prepare(store, engine: QueryEngine, examples: list[Example], learn: LearnSettings) -> Prepared:
    """Split by query, mine hard negatives for both sides (kept in the store), key the run."""
    if len(examples) < 4:
        raise ValueError(f"only {len(examples)} training examples: fine-tuning needs at least 4 "
                         "(give more labelled queries, or --synthetic pairs from the corpus)")
    # Labelled and self-supervised examples are mined (and kept) apart, so runs that share one reuse its table.
    keys, tables = [], []
    for group in ([e for e in examples if e.source == "labelled"], [e for e in examples if e.source != "labelled"]):
        if group:
            k, t = mine_to_store(store, engine, group, learn.finetune_mine_depth, learn.finetune_negatives)
            keys.append(k)
            tables.append(t.replace_schema_metadata(None))
    key, table = ",".join(keys), pa.concat_tables(tables)
    train_ex, val_ex = train_val_split(examples, learn)
    val_ids = {e.query_id for e in val_ex}
    rows = table.to_pylist()
    train = [r for r in rows if r["query_id"] not in val_ids]
    val = [r for r in rows if r["query_id"] in val_ids]
    data_fp = fingerprint(examples)
    settings_fp = settings_fingerprint(learn)
    run_id = hashlib.sha256(f"{key}|{data_fp}|{settings_fp}".encode()).hexdigest()[:16]
    counts = {"examples": len(examples), "train_queries": len(train_ex), "val_queries": len(val_ex),
              "mined_rows": table.num_rows, "hard_negatives": sum(1 for r in rows if r["negative"]),
              "sources": {s: sum(e.source == s for e in examples) for s in sorted({e.source for e in examples})}}
    log.info("prepared %s", counts)
    return Prepared(train, val, key, data_fp, settings_fp, f"{RUNS_PREFIX}/{run_id}", counts)
