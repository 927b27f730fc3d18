"""Cited answers judged against reference answers: kept apart from retrieval because generating is slow (seconds
per answer on a CPU), so ``mmrag eval`` runs it only with ``--answers``. The metrics themselves are in
:mod:`mmrag_core.eval.answer_metrics`."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mmrag_core.answer.answering import ask
from mmrag_core.answer.generators import Generator
from mmrag_core.config import Settings
from mmrag_core.eval.answer_metrics import mean_of, score_answer
from mmrag_core.eval.answerers import judged_row
from mmrag_core.eval.bm25_baseline import page_id
from mmrag_core.eval.data import Qrels, qrels_level


@dataclass
class AnswerEvaluation:
    """Cited answers scored against reference answers (:mod:`mmrag_core.eval.answer_metrics`): a summary row
    (means over the answers where a metric applies) and one row per query."""

    summary: dict
    rows: list[dict]
    judged: list[dict] = field(default_factory=list)  # the same answers judged (mmrag_core.eval.answerers)

    def to_json(self) -> dict:
        return {"summary": self.summary, "rows": self.rows}


def evaluate_answers(
    engine,
    generator: Generator,
    queries: Mapping[str, str],
    references: Mapping[str, str],
    qrels: Qrels,
    settings: Settings,
    limit: int | None = None,
    on_answer: Callable[[int, int, dict], None] | None = None,
    types: Mapping[str, str] | None = None,
) -> AnswerEvaluation:
    """Answer each query that has a reference answer (the first ``limit`` of them) from its top
    ``settings.answer_k`` hits, and score it; citation precision uses the query's qrels (pages or documents).
    ``on_answer(done, total, row)`` is called after each answer (generation takes seconds per answer)."""
    run = [q for q in queries if q in references][:limit]
    if not run:
        raise ValueError("no query has a reference answer (an 'answer' key in the queries file)")
    rows, judged = [], []
    level = qrels_level(qrels)
    for n, qid in enumerate(run, 1):
        answer = ask(engine, queries[qid], generator, settings)
        row = {"query_id": qid, "answer": answer.text, "reference": references[qid],
               **score_answer(answer, references[qid], set(qrels.get(qid, {})), level), "citations": answer.citations,
               "sources": [page_id(s.source_uri, s.page) for s in answer.sources], "seconds": round(answer.seconds, 2)}
        rows.append(row)
        judged.append(judged_row("generator", qid, queries[qid], references[qid], answer, list(qrels.get(qid, {})),
                                 level, (types or {}).get(qid), answer.seconds))
        if on_answer:
            on_answer(n, len(run), row)
    summary = {"generator": generator.name, "answers": len(rows),
               **{m: mean_of(rows, m) for m in ("exact_match", "number_match", "rouge_l", "citation_precision")},
               "cited": mean_of(rows, "cited"), "invalid_citations": sum(r["invalid_citations"] for r in rows),
               "latency_p50_s": round(float(np.percentile([r["seconds"] for r in rows], 50)), 2)}
    return AnswerEvaluation(summary, rows, judged)
