"""Retrieval evaluation of a snapshot against relevance judgements (qrels), with a BM25 reference: every system
ranks the judged queries, and each ranking is scored with :mod:`mmrag_core.eval.metrics`.

Systems, each giving a ranking of distinct pages (or documents) per query:

- ``bm25``: BM25 over the page texts of the snapshot's items (:mod:`mmrag_core.eval.bm25_baseline`), the reference;
- ``text``: the text space alone;
- ``image``: the image space alone, queried through CLIP's text tower (only when the snapshot has an
  image space whose model loads);
- ``lexical``: the snapshot's published lexical index alone (BM25 over chunks' indexed text, a page at its
  best chunk), only when the snapshot has one;
- ``outline``: the page-outline list alone, only when the snapshot has page outlines;
- ``hybrid``: the text space and the lexical list, fused by reciprocal rank;
- ``routed``: ``hybrid`` plus the two-stage routed list (:mod:`mmrag_core.query.routing`);
- ``late``, ``early``, ``cascade``: :class:`~mmrag_core.query.engine.QueryEngine` strategies (``early`` and
  ``cascade`` only with a searchable image space; a text query's ``early`` vector is its CLIP text vector);
- ``default``: what ``mmrag query`` does without options (the engine's configured strategy, settings.fusion_strategy).

Dense rankings come from item hits: a hit's unit id is its page id (or document name); the first
occurrence of each unit is kept, in hit order. The engine is asked for ``item_k`` item hits (100) so
that ``k`` (10) distinct pages can be filled. Latency p50/p99 is the wall time of one query (encode, search,
fuse, hydrate; for BM25: tokenise and score), after one untimed warm-up query per system.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmrag_core.answer.generators import make_generator
from mmrag_core.config import Settings
from mmrag_core.eval.answerers import ANSWERERS, extractive_rows, summarise
from mmrag_core.eval.answers import AnswerEvaluation, evaluate_answers
from mmrag_core.eval.bm25_baseline import PageBM25
from mmrag_core.eval.data import (Qrels, load_qrels, load_queries, load_query_field, load_reference_answers,
                                  qrels_level)
from mmrag_core.eval.metrics import hits_ranking, percentile_ms, score_rankings, unit_ranking

log = logging.getLogger(__name__)

SYSTEMS: tuple[str, ...] = ("bm25", "text", "image", "lexical", "outline", "hybrid", "routed", "late", "early",
                            "cascade", "default")
# The QueryEngine.search options of each dense system (no options: the engine's defaults).
SYSTEM_SEARCH: dict[str, dict] = {"text": {"strategy": "late", "spaces": ("text",)},
                                  "image": {"strategy": "late", "spaces": ("image:text",)},
                                  "lexical": {"strategy": "late", "spaces": ("lexical",)},
                                  "outline": {"strategy": "late", "spaces": ("outline",)},
                                  "hybrid": {"strategy": "late", "spaces": ("text", "lexical")},
                                  "routed": {"strategy": "late", "spaces": ("text", "lexical", "routed")},
                                  "late": {"strategy": "late"}, "early": {"strategy": "early"},
                                  "cascade": {"strategy": "cascade"}, "default": {}}
NEEDS_IMAGE_SPACE: frozenset[str] = frozenset({"image", "early", "cascade"})
NEEDS_LEXICAL_INDEX: frozenset[str] = frozenset({"lexical", "hybrid", "routed"})
METRICS: tuple[str, ...] = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@5", "ndcg@10",
                            "latency_p50_ms", "latency_p99_ms")

Ranker = Callable[[str], list[str]]  # query text -> ranking of distinct units


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: one row per system (keys ``system`` + :data:`METRICS`), the
    Recall@1..k curve and the per-query rankings of each system, and what was evaluated."""

    rows: list[dict]
    curves: dict[str, list[float]]
    rankings: dict[str, dict[str, list[str]]]
    level: str
    snapshot: str
    queries: int
    notes: list[str] = field(default_factory=list)
    answers: AnswerEvaluation | None = None  # the generator's answers, with --answers only
    answer_judged: list[dict] | None = None  # with --answers: every answer of every answerer, judged

    @property
    def answer_rows(self) -> list[dict] | None:
        """Per answerer: n, correct, abstained, unsupported, cited, citation precision, p50 latency."""
        return None if self.answer_judged is None else summarise(self.answer_judged)

    @property
    def answer_rows_by_type(self) -> list[dict] | None:
        return None if self.answer_judged is None else summarise(self.answer_judged, by_type=True)

    def to_json(self) -> dict:
        out = {"rows": self.rows, "snapshot": self.snapshot, "level": self.level, "queries": self.queries,
               "recall_curves": self.curves, "notes": self.notes, "rankings": self.rankings}
        if self.answer_judged is not None:
            out |= {"answer_rows": self.answer_rows, "answer_rows_by_type": self.answer_rows_by_type,
                    "answer_judged": self.answer_judged}
        return {**out, "answers": self.answers.to_json()} if self.answers is not None else out


def available_systems(engine) -> list[str]:
    """The systems that can run on ``engine``'s snapshot: ``image``, ``early`` and ``cascade`` only when its
    image space loads (and ``cascade`` when it has a text space to shortlist from); ``lexical``, ``hybrid``
    and ``routed`` only when it has a lexical index; ``outline`` only when it has page outlines."""
    has_text = "text" in engine.snapshot.indexes
    return [s for s in SYSTEMS if (s not in NEEDS_IMAGE_SPACE or engine.clip is not None)
            and (s != "cascade" or has_text) and (s != "outline" or (has_text and engine.has_outlines))
            and (s not in NEEDS_LEXICAL_INDEX or engine.snapshot.lexical is not None)]


def evaluate(
    engine,
    queries: Mapping[str, str],
    qrels: Qrels,
    systems: Sequence[str] | None = None,
    k: int = 10,
    item_k: int = 100,
    bm25: PageBM25 | None = None,
) -> Evaluation:
    """Run every judged query through each system and score the rankings against ``qrels``.

    ``systems`` defaults to :func:`available_systems`; asking for ``image`` when the snapshot's image
    space cannot be searched is a ``ValueError``. Dense systems ask the engine for ``item_k`` item hits
    (searching at least that deep in each space) to fill ``k`` distinct pages.
    """
    systems = _checked_systems(engine, systems)
    level = qrels_level(qrels)
    judged, run, notes = _judged_run(queries, qrels)
    rankers = _rankers(engine, systems, level, k, item_k, bm25)

    rows, curves, rankings = [], {}, {}
    depth_before = engine.search_depth
    engine.search_depth = max(depth_before, item_k)
    try:
        for system in systems:
            ranked, seconds = _timed_rankings(rankers[system], run)
            row, curve = _system_row(system, ranked, seconds, judged, k)
            rows.append(row)
            curves[system] = curve
            rankings[system] = ranked
    finally:
        engine.search_depth = depth_before
    return Evaluation(rows, curves, rankings, level, engine.snapshot.id, len(run), notes)


def _checked_systems(engine, systems: Sequence[str] | None) -> list[str]:
    """The systems to run (default: all available), refused when unknown or when the snapshot cannot serve them."""
    systems = list(systems) if systems is not None else available_systems(engine)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise ValueError(f"unknown system(s) {unknown}; choose among {list(SYSTEMS)}")
    for system in (s for s in systems if s in NEEDS_IMAGE_SPACE):
        if engine.clip is None:
            reason = ("its CLIP model could not be loaded" if "image" in engine.snapshot.indexes
                      else "the snapshot has no image space")
            raise ValueError(f"system {system!r} cannot run: {reason}")
    if engine.snapshot.lexical is None and set(systems) & NEEDS_LEXICAL_INDEX:
        raise ValueError(f"systems {sorted(set(systems) & NEEDS_LEXICAL_INDEX)} need a lexical index, which snapshot "
                         f"{engine.snapshot.id} does not have (index it again to build one)")
    return systems


def _judged_run(queries: Mapping[str, str], qrels: Qrels) -> tuple[Qrels, list[tuple[str, str]], list[str]]:
    """(the judged qrels, the (query id, text) pairs to run, notes on queries and judgements that do not pair
    up). The notes are logged too."""
    notes: list[str] = []
    judged = {q: g for q, g in qrels.items() if g}
    missing = [q for q in judged if q not in queries]
    if missing:
        notes.append(f"{len(missing)} judged query id(s) are not in the queries file and count as misses: "
                     f"{missing[:5]}")
    unjudged = [q for q in queries if q not in judged]
    if unjudged:
        notes.append(f"{len(unjudged)} query(ies) have no relevant judgement and are not scored")
    run = [(q, queries[q]) for q in judged if q in queries]
    if not run:
        raise ValueError("no query of the queries file has a relevant judgement in the qrels")
    for note in notes:
        log.warning(note)
    return judged, run, notes


def _rankers(engine, systems: Sequence[str], level: str, k: int, item_k: int,
             bm25: PageBM25 | None) -> dict[str, Ranker]:
    """One ranker per system: BM25 over the snapshot's page texts, or an engine search with the system's options."""
    rankers: dict[str, Ranker] = {}
    if "bm25" in systems:
        index = bm25 or PageBM25.from_items(engine.snapshot.items)
        depth = k if level == "page" else max(item_k, k)
        rankers["bm25"] = lambda text: unit_ranking((p for p, _ in index.search(text, depth)), level, k)
    for s in systems:
        if s in SYSTEM_SEARCH:
            rankers[s] = lambda text, options=SYSTEM_SEARCH[s]: hits_ranking(
                engine.search(text, k=item_k, **options), level, k)
    return rankers


def _timed_rankings(ranker: Ranker, run: Sequence[tuple[str, str]]) -> tuple[dict[str, list[str]], list[float]]:
    """Each query's ranking and the seconds it took, after one untimed warm-up query."""
    ranker(run[0][1])  # warm-up: model loading and first-call costs stay out of the latencies
    seconds, ranked = [], {}
    for qid, text in run:
        t0 = time.perf_counter()
        ranked[qid] = ranker(text)
        seconds.append(time.perf_counter() - t0)
    return ranked, seconds


def _system_row(system: str, ranked: Mapping[str, Sequence[str]], seconds: Sequence[float], judged: Qrels,
                k: int) -> tuple[dict, list[float]]:
    """A system's row of :data:`METRICS` (rounded) and its Recall@1..k curve."""
    metrics, curve = score_rankings(ranked, judged, k)
    row = {"system": system, **{m: round(v, 4) for m, v in metrics.items()},
           "latency_p50_ms": round(percentile_ms(seconds, 50), 2),
           "latency_p99_ms": round(percentile_ms(seconds, 99), 2)}
    return row, [round(v, 4) for v in curve]


def run_evaluation(
    settings: Settings,
    queries_path: str | Path,
    qrels_path: str | Path,
    snapshot_id: str | None = None,
    systems: Sequence[str] | None = None,
    k: int = 10,
    answers: bool = False,
    answers_limit: int | None = None,
    on_answer: Callable[[int, int, dict], None] | None = None,
    answerers: Sequence[str] | None = None,
) -> Evaluation:
    """Evaluate retrieval of the store's LATEST (or a pinned) snapshot and, with ``answers``, the answers of
    each of ``answerers`` (default: ``settings.answerer``), judged (``mmrag eval`` and the ``evaluate`` flow)."""
    from mmrag_core.query.engine import open_engine

    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    references = load_reference_answers(queries_path) if answers else {}
    if answers and not references:
        raise ValueError(f"{queries_path} has no reference answers ('answer' keys) for --answers")
    engine = open_engine(settings, snapshot_id)
    result = evaluate(engine, queries, qrels, systems, k=k)
    if answers:
        answerers = list(answerers or [settings.answerer])
        unknown = [a for a in answerers if a not in ANSWERERS]
        if unknown:
            raise ValueError(f"unknown answerer(s) {unknown}; choose among {list(ANSWERERS)}")
        types = load_query_field(queries_path, "question_type")
        result.answer_judged = []
        if "extractive" in answerers:
            result.answer_judged += extractive_rows(engine, queries, references, qrels, settings, types,
                                                    answers_limit, on_answer)
        if "generator" in answerers:
            generator = make_generator(settings.answer, settings.models.device)
            result.answers = evaluate_answers(engine, generator, queries, references, qrels, settings,
                                              answers_limit, on_answer, types)
            result.answer_judged += result.answers.judged
    return result
