"""Answers judged per answerer: each query with a reference answer is answered (extractively, or by the
generator), judged by :mod:`mmrag_core.eval.answer_judge`, its numbers checked against its cited sources, and
summarised per answerer and per question type (``answer_rows``).

Kept beside the generator's own metrics (:mod:`mmrag_core.eval.answers`: EM, number match, ROUGE-L), because
the judge credits a right number however it is written and counts an abstention as an abstention, not a miss
of the same kind as a wrong number.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mmrag_core.answer.offline import ask_extractive
from mmrag_core.config import Settings
from mmrag_core.eval.answer_judge import judge
from mmrag_core.eval.answer_metrics import citation_precision
from mmrag_core.eval.bm25_baseline import doc_name, page_id
from mmrag_core.eval.data import Qrels, qrels_level

ANSWERERS: tuple[str, ...] = ("extractive", "generator")
ROW_KEYS: tuple[str, ...] = ("n", "correct", "abstained", "unsupported", "cited", "citation_precision",
                             "latency_p50_ms")


def judged_row(answerer: str, qid: str, question: str, reference: str, answer, relevant: Sequence[str],
               level: str, question_type: str | None, seconds: float) -> dict:
    """One answer (an ``Answer`` or an ``ExtractiveResult``) judged: correct, abstained, unsupported numbers,
    citation precision against the query's qrels."""
    abstained = answerer == "extractive" and answer.answer.abstained
    unit = answer.answer.unit if answerer == "extractive" else None
    verdict = judge(question, reference, answer.text, abstained, unit)
    units = {s.number: page_id(s.source_uri, s.page) if level == "page" else doc_name(s.source_uri)
             for s in answer.sources}
    return {"answerer": answerer, "query_id": qid, "question_type": question_type or "-", "answer": answer.text,
            "reference": reference, "correct": verdict.correct, "rule": verdict.rule, "detail": verdict.detail,
            "abstained": abstained, "unsupported": list(answer.unsupported), "citations": list(answer.citations),
            "citation_precision": citation_precision(answer.citations, units, relevant) if relevant else None,
            "seconds": round(seconds, 3)}


def extractive_rows(engine, queries: Mapping[str, str], references: Mapping[str, str], qrels: Qrels,
                    settings: Settings, types: Mapping[str, str] | None = None, limit: int | None = None,
                    on_answer: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """The extractive answer of each query with a reference answer (the first ``limit``), judged; the
    latency is search plus answer, after one untimed warm-up."""
    run = [q for q in queries if q in references][:limit]
    level = qrels_level(qrels)
    if run:
        ask_extractive(engine, queries[run[0]], settings)  # warm-up: first-call costs stay out of the latency
    rows = []
    for n, qid in enumerate(run, 1):
        t0 = time.perf_counter()
        result = ask_extractive(engine, queries[qid], settings)
        rows.append(judged_row("extractive", qid, queries[qid], references[qid], result, list(qrels.get(qid, {})),
                               level, (types or {}).get(qid), time.perf_counter() - t0))
        if on_answer:
            on_answer(n, len(run), rows[-1])
    return rows


def summarise(rows: Sequence[dict], by_type: bool = False) -> list[dict]:
    """One row per answerer (and question type): n, the rates of correct, abstained and cited answers, the
    number of answers with an unsupported number, mean citation precision, p50 latency in ms."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        key = (r["answerer"], r["question_type"]) if by_type else (r["answerer"],)
        groups.setdefault(key, []).append(r)
    out = []
    for key, group in sorted(groups.items(), key=lambda kv: (ANSWERERS.index(kv[0][0])
                                                             if kv[0][0] in ANSWERERS else 9, kv[0])):
        precisions = [r["citation_precision"] for r in group if r["citation_precision"] is not None]
        row = {"answerer": key[0], **({"question_type": key[1]} if by_type else {}), "n": len(group),
               "correct": round(sum(r["correct"] for r in group) / len(group), 4),
               "abstained": round(sum(r["abstained"] for r in group) / len(group), 4),
               "unsupported": sum(bool(r["unsupported"]) for r in group),
               "cited": round(sum(bool(r["citations"]) for r in group) / len(group), 4),
               "citation_precision": round(float(np.mean(precisions)), 4) if precisions else None,
               "latency_p50_ms": round(float(np.percentile([r["seconds"] for r in group], 50)) * 1000, 1)}
        out.append(row)
    return out


def answer_rows_markdown(rows: Sequence[Mapping]) -> str:
    """:func:`summarise` rows as a markdown table (with a question-type column when they have one)."""
    typed = bool(rows) and "question_type" in rows[0]
    headers = ["answerer"] + (["question type"] if typed else []) + ["n", "correct", "abstained", "unsupported",
                                                                       "cited", "citation precision", "p50 ms"]

    def cells(r: Mapping) -> list[str]:
        cp = "-" if r["citation_precision"] is None else f"{r['citation_precision']:.3f}"
        return ([r["answerer"]] + ([r["question_type"]] if typed else [])
                + [str(r["n"]), f"{r['correct']:.3f}", f"{r['abstained']:.3f}", str(r["unsupported"]),
                   f"{r['cited']:.3f}", cp, f"{r['latency_p50_ms']:.0f}"])

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] * (2 if typed else 1) + ["---:"] * (len(headers) - (2 if typed else 1))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells(r)) + " |" for r in rows])
