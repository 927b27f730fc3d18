"""Training the page re-ranker (:mod:`mmrag_core.query.rerank`) on a published snapshot's labelled questions.

Each training query is run through the engine as ``mmrag query`` runs it (the shipped fusion, re-ranking off);
its first ``depth`` pages become candidates with their :data:`~mmrag_core.query.rerank.FEATURES`, labelled by the
qrels (the same examples :mod:`mmrag_core.learn.pairs` builds for fine-tuning, self-supervised ones optional).
A linear model is fitted with a listwise softmax loss (the positives' share of each query's candidate
distribution), L2-regularised; folds by query report how much it moves nDCG@5 on held-out training questions.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mmrag_core.learn.pairs import Example, doc_name
from mmrag_core.models.stored import MODEL_META, STORE_PREFIX, model_key
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.rerank import FEATURES, RERANK_FILE, Reranker

log = logging.getLogger(__name__)


@dataclass
class QueryCandidates:
    """One training query: its candidate pages' features (fused order), which are positive, its loss weight."""

    query_id: str
    source: str
    x: np.ndarray
    relevant: np.ndarray  # bool per candidate
    total_relevant: int  # positives of the query, found or not (for nDCG)
    weight: float = 1.0
    pages: list[str] = field(default_factory=list)


def collect(engine: QueryEngine, examples: list[Example], depth: int,
            label_weight: float = 1.0) -> list[QueryCandidates]:
    """The candidates of every distinct query of ``examples`` (labelled ones weighted ``label_weight``)."""
    by_query: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_query[e.query_id].append(e)
    out = []
    for qid, group in by_query.items():
        text = group[0].query
        positives = {f"{e.doc}#p{pg}" for e in group for pg in (e.pages or (e.page,))}
        hits = engine.search(text, k=depth, rerank=False)
        if not hits:
            continue
        pages = [f"{doc_name(h.source_uri)}#p{h.page}" for h in hits]
        x = engine.page_features.matrix(text, engine.text_encoder.encode([text]), hits)
        source = group[0].source
        out.append(QueryCandidates(qid, source, x, np.array([p in positives for p in pages]), len(positives),
                                   label_weight if source == "labelled" else 1.0, pages))
    return out


def fit(queries: list[QueryCandidates], l2: float = 1e-2, steps: int = 300,
        features: tuple[str, ...] = FEATURES) -> Reranker:
    """A linear model over ``features`` (default: all of :data:`FEATURES`) minimising the weighted listwise
    softmax loss of the queries that have a positive among their candidates (full-batch L-BFGS, features
    standardised)."""
    import torch

    usable = [q for q in queries if q.relevant.any() and len(q.x) > 1]
    if not usable:
        raise ValueError("no training query has a relevant page among its candidates: nothing to learn from")
    cols = [FEATURES.index(f) for f in features]
    allx = np.concatenate([q.x[:, cols] for q in usable])
    mean, scale = allx.mean(0), np.maximum(allx.std(0), 1e-6)
    xs = [torch.from_numpy((q.x[:, cols] - mean) / scale).double() for q in usable]
    ys = [torch.from_numpy(q.relevant.astype(np.float64)) for q in usable]
    ws = torch.tensor([q.weight for q in usable], dtype=torch.float64)
    w = torch.zeros(len(cols), dtype=torch.float64, requires_grad=True)
    if "fused_score" in features:
        w.data[features.index("fused_score")] = 1.0  # start from the fused order
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        losses = torch.stack([-(torch.log_softmax(x @ w, 0) * y).sum() / y.sum() for x, y in zip(xs, ys)])
        loss = (losses * ws).sum() / ws.sum() + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Reranker(w.detach().numpy().astype(np.float32), 0.0, mean.astype(np.float32), scale.astype(np.float32),
                    features)


def ndcg_at(relevant: np.ndarray, total: int, k: int = 5) -> float:
    """nDCG@k of a ranking with binary relevance (``total`` relevant pages in all)."""
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(relevant[:k]) if r)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(total, k)))
    return dcg / ideal if ideal else 0.0


def cross_validate(queries: list[QueryCandidates], folds: int = 5, l2: float = 1e-2, k: int = 5,
                   features: tuple[str, ...] = FEATURES) -> dict:
    """Mean nDCG@k of the labelled queries in the fused order and re-ranked by a model fitted on the other folds
    (folds by query id, stable across runs)."""
    def fold(q: QueryCandidates) -> int:
        return int(hashlib.sha256(q.query_id.encode()).hexdigest()[:8], 16) % folds

    labelled = [q for q in queries if q.source == "labelled"]
    before, after = [], []
    for f in range(folds):
        held = [q for q in labelled if fold(q) == f]
        if not held:
            continue
        model = fit([q for q in queries if fold(q) != f or q.source != "labelled"], l2, features=features)
        for q in held:
            order = np.argsort(-model.scores(q.x), kind="stable")
            before.append(ndcg_at(q.relevant, q.total_relevant, k))
            after.append(ndcg_at(q.relevant[order], q.total_relevant, k))
    return {"queries": len(before), f"ndcg@{k}_fused": float(np.mean(before)) if before else None,
            f"ndcg@{k}_reranked": float(np.mean(after)) if after else None}


def publish(store: Any, model: Reranker, info: dict) -> tuple[str, str]:
    """Keep ``model`` in ``store`` as ``models/rerank/<id>/`` (id from the weights' bytes); returns the id and the
    ``store:`` name the ``rerank_model`` setting takes."""
    with tempfile.TemporaryDirectory() as tmp:
        meta = model.save(tmp, {"created": datetime.now(UTC).isoformat(), **info})
        data = (Path(tmp) / RERANK_FILE).read_bytes()
        model_id = f"rerank-linear-{hashlib.sha256(data).hexdigest()[:12]}"
        key = model_key("rerank", model_id)
        if not store.exists(f"{key}/{MODEL_META}"):
            store.write_bytes(f"{key}/{RERANK_FILE}", data)
            store.write_bytes(f"{key}/{MODEL_META}", json.dumps({**meta, "id": model_id}, indent=1,
                                                                 sort_keys=True).encode())
    return model_id, f"{STORE_PREFIX}{key}"


def weights_table(model: Reranker) -> str:
    """The fitted weights, one feature a line (for reports)."""
    buf = io.StringIO()
    for name, wt in zip((FEATURES[i] for i in model.columns), model.weight, strict=True):
        buf.write(f"{name:20s} {wt:+.3f}\n")
    return buf.getvalue()


def sample_examples(examples: list[Example], synthetic_limit: int) -> list[Example]:
    """All labelled examples and at most ``synthetic_limit`` self-supervised ones, evenly spread (deterministic):
    candidates are collected by running each query, so thousands of headings would cost minutes for little."""
    synthetic = [e for e in examples if e.source != "labelled"]
    if len(synthetic) <= synthetic_limit:
        return examples
    step = len(synthetic) / synthetic_limit
    keep = {id(synthetic[int(i * step)]) for i in range(synthetic_limit)}
    return [e for e in examples if e.source == "labelled" or id(e) in keep]


def train_reranker(engine: QueryEngine, store: Any, examples: list[Example], depth: int = 20, l2: float = 1e-2,
                   label_weight: float = 4.0, features: tuple[str, ...] = FEATURES,
                   provenance: dict | None = None) -> dict:
    """Collect candidates, report folds for a few L2 strengths, fit with ``l2`` and keep the model in ``store``.
    Returns the model's id, its ``store:`` name (for ``rerank_model``), the folds and the fitted weights."""
    queries = collect(engine, examples, depth, label_weight)
    found = sum(bool(q.relevant.any()) for q in queries)
    folds = {str(v): cross_validate(queries, l2=v, features=features) for v in (1e-3, 1e-2, 1e-1, 1.0)}
    model = fit(queries, l2=l2, features=features)
    info = {"trained_on": {"snapshot": engine.snapshot.id, "label_weight": label_weight, "n_queries": len(queries),
                           "with_positive": found, **(provenance or {})},
            "depth": depth, "l2": l2, "folds": folds, "features": list(features),
            "text_model": engine.snapshot.manifest["models"]["text"]["name"]}
    model_id, ref = publish(store, model, info)
    return {"model_id": model_id, "path": ref, **info,
            "weights": {FEATURES[i]: float(w) for i, w in zip(model.columns, model.weight, strict=True)}}
