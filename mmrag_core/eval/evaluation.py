"""Retrieval evaluation of a snapshot against relevance judgements (qrels), with a BM25 reference.

Inputs:

- ``queries.jsonl``: one JSON object a line with at least ``query_id`` and ``text``, and optionally a reference
  ``answer`` (used only by :func:`evaluate_answers`; other keys ignored).
- ``qrels.tsv``: ``query_id<TAB>corpus_id<TAB>score`` with a header line; ``score`` is a graded relevance
  (> 0 is relevant). A ``corpus_id`` names a page, ``<doc_name>#p<page>`` (``doc_name`` = the file name
  without its extension, ``page`` 0-based), or a whole document, ``<doc_name>``: the level is read from
  the qrels and every ranking is made of distinct units of that level.

Systems, each giving a ranking of distinct pages (or documents) per query:

- ``bm25``: BM25 over the page texts of the snapshot's items (:mod:`mmrag_core.eval.bm25_baseline`), the reference;
- ``text``: the text space alone;
- ``image``: the image space alone, queried through CLIP's text tower (only when the snapshot has an
  image space whose model loads);
- ``lexical``: the snapshot's published lexical index alone (BM25 over chunks' indexed text, a page at its
  best chunk), only when the snapshot has one;
- ``hybrid``: the text space and the lexical list, fused by reciprocal rank;
- ``routed``: ``hybrid`` plus the two-stage routed list (:mod:`mmrag_core.query.routing`);
- ``late``, ``early``, ``cascade``: :class:`~mmrag_core.query.engine.QueryEngine` strategies (``early`` and
  ``cascade`` only with a searchable image space; a text query's ``early`` vector is its CLIP text vector);
- ``default``: what ``mmrag query`` does without options (the engine's configured strategy, settings.fusion_strategy).

Dense rankings come from item hits: a hit's unit id is its page id (or document name); the first
occurrence of each unit is kept, in hit order. The engine is asked for ``item_k`` item hits (100) so
that ``k`` (10) distinct pages can be filled.

Metrics, averaged over the queries that have at least one relevant unit:

- Recall@k: the fraction of a query's relevant units found in its top k;
- MRR@10: 1 / rank of the first relevant unit in the top 10 (0 when none);
- nDCG@k: DCG = sum over the top k of rel_i / log2(i + 1) (linear gain = the qrels score, rank i from 1),
  divided by the DCG of the ideal ordering of the query's judged units;
- latency p50/p99: wall time of one query (encode, search, fuse, hydrate; for BM25: tokenise and score),
  in ms, after one untimed warm-up query per system.

Optionally (``mmrag eval --answers``), :func:`evaluate_answers` also generates a cited answer per query that
has a reference answer and scores it with :mod:`mmrag_core.eval.answer_metrics`: off by default, because a CPU
takes seconds per answer.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmrag_core.eval.answer_metrics import mean_of, score_answer
from mmrag_core.answer.answering import ask
from mmrag_core.config import Settings
from mmrag_core.answer.generation import Generator
from mmrag_core.eval.bm25_baseline import PageBM25, page_id

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
TABLE_HEADERS: tuple[str, ...] = ("system", "R@1", "R@5", "R@10", "MRR@10", "nDCG@5", "nDCG@10", "p50 ms", "p99 ms")
PAGE_ID = re.compile(r"^.+#p\d+$")

Qrels = dict[str, dict[str, float]]  # query id -> unit id -> relevance grade (> 0)


# ---------------------------------------------------------------- loading


def _query_lines(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(query id, the line's object) for each line of a queries file, checked: an id, a text, no repeats."""
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid, text = str(obj["query_id"]), obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: a query line needs a JSON object with 'query_id' and 'text' "
                                 f"({e})") from e
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{n}: query {qid} has no text")
            if qid in seen:
                raise ValueError(f"{path}:{n}: query id {qid} is repeated")
            seen.add(qid)
            yield qid, obj


def load_queries(path: str | Path) -> dict[str, str]:
    """Query id -> query text, in file order, from a JSON-lines file."""
    return {qid: obj["text"] for qid, obj in _query_lines(path)}


def load_reference_answers(path: str | Path) -> dict[str, str]:
    """Query id -> reference answer (the optional ``answer`` key of a query line), for the queries that have one."""
    return {qid: str(obj["answer"]) for qid, obj in _query_lines(path)
            if obj.get("answer") is not None and str(obj["answer"]).strip()}


def load_qrels(path: str | Path) -> Qrels:
    """Query id -> {corpus id: grade} from a ``query_id<TAB>corpus_id<TAB>score`` file (header line
    optional). Judgements with a score <= 0 (not relevant) are dropped."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if n == 1 and fields[0].strip().lower() == "query_id":
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated fields (query_id, corpus_id, score), "
                                 f"got {len(fields)}")
            qid, cid, score = (x.strip() for x in fields)
            try:
                grade = float(score)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: score {score!r} is not a number") from e
            if grade > 0:
                qrels.setdefault(qid, {})[cid] = grade
    return qrels


def qrels_level(qrels: Qrels) -> str:
    """``"page"`` when every judged id is a page id (``name#p<n>``), ``"doc"`` when none is."""
    ids = [c for judged in qrels.values() for c in judged]
    pages = sum(bool(PAGE_ID.match(c)) for c in ids)
    if ids and pages == len(ids):
        return "page"
    if pages == 0:
        return "doc"
    raise ValueError(f"qrels mix page ids (<doc_name>#p<page>) and document ids: {pages} of {len(ids)} are pages")


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


# ---------------------------------------------------------------- metrics (one query)


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


# ---------------------------------------------------------------- evaluation


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
    answers: AnswerEvaluation | None = None  # with --answers only

    def to_json(self) -> dict:
        out = {"rows": self.rows, "snapshot": self.snapshot, "level": self.level, "queries": self.queries,
               "recall_curves": self.curves, "notes": self.notes, "rankings": self.rankings}
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
    level = qrels_level(qrels)
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

    rankers: dict[str, Callable[[str], list[str]]] = {}
    if "bm25" in systems:
        index = bm25 or PageBM25.from_items(engine.snapshot.items)
        depth = k if level == "page" else max(item_k, k)
        rankers["bm25"] = lambda text: unit_ranking((p for p, _ in index.search(text, depth)), level, k)
    for s in systems:
        if s in SYSTEM_SEARCH:
            rankers[s] = lambda text, options=SYSTEM_SEARCH[s]: hits_ranking(
                engine.search(text, k=item_k, **options), level, k)

    rows, curves, rankings = [], {}, {}
    depth_before = engine.search_depth
    engine.search_depth = max(depth_before, item_k)
    try:
        for system in systems:
            ranker = rankers[system]
            ranker(run[0][1])  # warm-up: model loading and first-call costs stay out of the latencies
            seconds, ranked = [], {}
            for qid, text in run:
                t0 = time.perf_counter()
                ranked[qid] = ranker(text)
                seconds.append(time.perf_counter() - t0)
            metrics, curve = score_rankings(ranked, judged, k)
            rows.append({"system": system, **{m: round(v, 4) for m, v in metrics.items()},
                         "latency_p50_ms": round(percentile_ms(seconds, 50), 2),
                         "latency_p99_ms": round(percentile_ms(seconds, 99), 2)})
            curves[system] = [round(v, 4) for v in curve]
            rankings[system] = ranked
    finally:
        engine.search_depth = depth_before
    return Evaluation(rows, curves, rankings, level, engine.snapshot.id, len(run), notes)


# ---------------------------------------------------------------- answers (optional: generation is slow on a CPU)

ANSWER_HEADERS: tuple[str, ...] = ("generator", "answers", "EM", "number match", "ROUGE-L", "citation precision",
                                   "cited", "invalid citations", "p50 s")


@dataclass
class AnswerEvaluation:
    """Cited answers scored against reference answers (:mod:`mmrag_core.eval.answer_metrics`): a summary row
    (means over the answers where a metric applies) and one row per query."""

    summary: dict
    rows: list[dict]

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
) -> AnswerEvaluation:
    """Answer each query that has a reference answer (the first ``limit`` of them) from its top
    ``settings.answer_k`` hits, and score it; citation precision uses the query's qrels (pages or documents).
    ``on_answer(done, total, row)`` is called after each answer (generation takes seconds per answer)."""
    run = [q for q in queries if q in references][:limit]
    if not run:
        raise ValueError("no query has a reference answer (an 'answer' key in the queries file)")
    rows = []
    level = qrels_level(qrels)
    for n, qid in enumerate(run, 1):
        answer = ask(engine, queries[qid], generator, settings)
        row = {"query_id": qid, "answer": answer.text, "reference": references[qid],
               **score_answer(answer, references[qid], set(qrels.get(qid, {})), level), "citations": answer.citations,
               "sources": [page_id(s.source_uri, s.page) for s in answer.sources], "seconds": round(answer.seconds, 2)}
        rows.append(row)
        if on_answer:
            on_answer(n, len(run), row)
    summary = {"generator": generator.name, "answers": len(rows),
               **{m: mean_of(rows, m) for m in ("exact_match", "number_match", "rouge_l", "citation_precision")},
               "cited": mean_of(rows, "cited"), "invalid_citations": sum(r["invalid_citations"] for r in rows),
               "latency_p50_s": round(float(np.percentile([r["seconds"] for r in rows], 50)), 2)}
    return AnswerEvaluation(summary, rows)


def answers_markdown_table(summary: Mapping) -> str:
    """The answer summary as a one-row markdown table ("-" where a metric never applied)."""
    def cell(key: str) -> str:
        return "-" if summary[key] is None else f"{summary[key]:.3f}"

    cells = [summary["generator"], str(summary["answers"]), cell("exact_match"), cell("number_match"),
             cell("rouge_l"), cell("citation_precision"), cell("cited"), str(summary["invalid_citations"]),
             f"{summary['latency_p50_s']:.1f}"]
    return _markdown(ANSWER_HEADERS, [cells])


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
) -> Evaluation:
    """Evaluate retrieval of the store's LATEST (or a pinned) snapshot and, with ``answers``, the cited
    answers of the configured generator (``mmrag eval`` and the ``evaluate`` flow)."""
    from mmrag_core.query.engine_open import open_engine
    from mmrag_core.answer.generation import make_generator

    queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    references = load_reference_answers(queries_path) if answers else {}
    if answers and not references:
        raise ValueError(f"{queries_path} has no reference answers ('answer' keys) for --answers")
    engine = open_engine(settings, snapshot_id)
    result = evaluate(engine, queries, qrels, systems, k=k)
    if answers:
        result.answers = evaluate_answers(engine, make_generator(settings), queries, references, qrels, settings,
                                          answers_limit, on_answer)
    return result


# ---------------------------------------------------------------- output


def _markdown(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, the first column left-aligned, the others (numbers) right."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    return _markdown(TABLE_HEADERS, ([r["system"]] + [f"{r[m]:.3f}" for m in METRICS[:6]]
                                     + [f"{r[m]:.1f}" for m in METRICS[6:]] for r in rows))


def write_json(evaluation: Evaluation, path: str | Path) -> None:
    Path(path).write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")


def plot_recall(evaluation: Evaluation, path: str | Path) -> None:
    """A PNG of the Recall@k curves (k = 1..10), one line per system."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {"bm25": ("--", "s", 7), "text": ("-", "o", 8), "image": ("-", "^", 7), "late": ("-.", "D", 6),
              "early": ("-.", "v", 7), "cascade": ("-.", "P", 7), "lexical": ("--", "o", 6), "hybrid": ("-", "s", 6),
              "routed": ("-", "*", 8), "default": (":", "x", 9)}
    for system, curve in evaluation.curves.items():
        linestyle, marker, size = styles.get(system, ("-", "o", 6))
        ax.plot(range(1, len(curve) + 1), curve, linestyle=linestyle, marker=marker, markersize=size,
                markerfacecolor="none", label=system)
    ax.set_xlabel("k (distinct pages)" if evaluation.level == "page" else "k (distinct documents)")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.02)
    if evaluation.curves:
        ax.set_xticks(range(1, max(len(c) for c in evaluation.curves.values()) + 1))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"snapshot {evaluation.snapshot}: {evaluation.queries} queries, {evaluation.level} level",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
