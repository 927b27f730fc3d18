"""Retrieval metrics of one query's ranking, and their means over a query set: rankings are lists of distinct
units (pages or documents, at the qrels' level), made here from item hits.

Averaged over the queries that have at least one relevant unit:

- Recall@k: the fraction of a query's relevant units found in its top k;
- MRR@10: 1 / rank of the first relevant unit in the top 10 (0 when none);
- nDCG@k: DCG = sum over the top k of rel_i / log2(i + 1) (linear gain = the qrels score, rank i from 1),
  divided by the DCG of the ideal ordering of the query's judged units;
- latency percentiles (:func:`percentile_ms`), in ms.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from mmrag_core.eval.bm25_baseline import page_id
from mmrag_core.eval.data import Qrels

# ---------------------------------------------------------------- rankings


def dedup(ids: Iterable[str]) -> list[str]:
    """``ids`` with repeats removed, keeping each one's first occurrence, in order."""
    return list(dict.fromkeys(ids))


def unit_of(page: str, level: str) -> str:
    """The unit a page id counts as at ``level``: itself (``page``) or its document name (``doc``)."""
    return page if level == "page" else page.rsplit("#p", 1)[0]


def unit_ranking(page_ids: Iterable[str], level: str = "page", k: int | None = None) -> list[str]:
    """Distinct units (pages or documents) in order of first occurrence among ``page_ids``, at most ``k``."""
    units = dedup(unit_of(p, level) for p in page_ids)
    return units if k is None else units[:k]


def hits_ranking(hits: Iterable, level: str = "page", k: int | None = None) -> list[str]:
    """The ranking of distinct units made from item hits (anything with ``source_uri`` and ``page``)."""
    return unit_ranking((page_id(h.source_uri, h.page) for h in hits), level, k)


# ---------------------------------------------------------------- metrics


def recall_at_k(ranking: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """The fraction of the relevant ids found in the top ``k`` of ``ranking`` (0 with nothing relevant)."""
    rel = set(relevant)
    return len(rel.intersection(ranking[:k])) / len(rel) if rel else 0.0


def reciprocal_rank(ranking: Sequence[str], relevant: Iterable[str], k: int = 10) -> float:
    """1 / (1-based rank) of the first relevant id in the top ``k``; 0 when there is none."""
    rel = set(relevant)
    return next((1.0 / r for r, u in enumerate(ranking[:k], 1) if u in rel), 0.0)


def ndcg_at_k(ranking: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    """nDCG@k with graded relevance (linear gain) and a log2 discount; 0 with nothing relevant."""
    dcg = sum(grades.get(u, 0.0) / math.log2(r + 1) for r, u in enumerate(ranking[:k], 1))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of durations in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), q) * 1000.0) if len(seconds) else float("nan")


def score_rankings(rankings: Mapping[str, Sequence[str]], qrels: Qrels, max_k: int = 10) -> tuple[dict, list[float]]:
    """Mean metrics over the queries of ``qrels`` (a query missing from ``rankings`` counts as an empty
    ranking), and the mean Recall@1..``max_k`` curve."""
    qids = [q for q in qrels if qrels[q]]
    if not qids:
        raise ValueError("no query has a relevant judgement")

    def mean(f: Callable[[Sequence[str], Mapping[str, float]], float]) -> float:
        return float(np.mean([f(rankings.get(q, []), qrels[q]) for q in qids]))

    metrics = {
        "recall@1": mean(lambda r, g: recall_at_k(r, g, 1)),
        "recall@5": mean(lambda r, g: recall_at_k(r, g, 5)),
        "recall@10": mean(lambda r, g: recall_at_k(r, g, 10)),
        "mrr@10": mean(lambda r, g: reciprocal_rank(r, g, 10)),
        "ndcg@5": mean(lambda r, g: ndcg_at_k(r, g, 5)),
        "ndcg@10": mean(lambda r, g: ndcg_at_k(r, g, 10)),
    }
    curve = [mean(lambda r, g, k=k: recall_at_k(r, g, k)) for k in range(1, max_k + 1)]
    return metrics, curve
