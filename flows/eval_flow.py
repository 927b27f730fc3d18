"""Evaluation as a flow, for the ``evaluate`` deployment: retrieval metrics of a snapshot against
relevance judgements (and, optionally, its cited answers against reference answers), published as artifacts
so that the quality of each snapshot stays on record beside the runs that built it."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import EvaluateOverrides, run_settings
from tasks.eval_tasks import evaluate_snapshot, publish_eval_artifacts


@flow(name="evaluate", log_prints=True)
def evaluate_flow(queries: str, qrels: str, store: str | None = None, snapshot: str | None = None,
                  systems: list[str] | None = None, k: int = 10, answers: bool = False,
                  answers_limit: int | None = None, overrides: EvaluateOverrides | None = None) -> dict:
    """Evaluate a snapshot's retrieval (Recall@k, MRR, nDCG, latency per system, beside BM25).

    Args:
        queries: Queries file on the worker, JSON lines with query_id, text and optionally a reference answer.
        qrels: Relevance judgements on the worker, TSV: query_id, corpus_id (<doc_name>#p<page>, 0-based), score.
        store: Store to evaluate, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        snapshot: Snapshot id to evaluate (default: LATEST).
        systems: Among bm25, text, image, late, early, cascade, default (default: every one the snapshot allows).
        k: Distinct pages (or documents) ranked per query; Recall@10 and nDCG@10 need at least 10.
        answers: Also generate a cited answer per query that has a reference answer, and score it (slow on a CPU).
        answers_limit: With answers: only the first N such queries.
        overrides: Settings for this run only (e.g. the generator); an empty field keeps the worker's setting.
    """
    settings = run_settings(store, overrides)
    result = evaluate_snapshot(settings, queries, qrels, snapshot, systems, k, answers, answers_limit)
    get_run_logger().info("evaluated snapshot %s of %s on %d queries", result["snapshot"], settings.store,
                          result["queries"])
    publish_eval_artifacts(result, settings.store)
    return result
