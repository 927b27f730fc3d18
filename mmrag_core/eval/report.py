"""What an evaluation leaves behind for people and for later runs: markdown tables (CLI, Prefect artifacts),
the JSON of every row and ranking, and the Recall@k plot."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mmrag_core.eval.retrieval import METRICS, Evaluation

TABLE_HEADERS: tuple[str, ...] = ("system", "R@1", "R@5", "R@10", "MRR@10", "nDCG@5", "nDCG@10", "p50 ms", "p99 ms")
ANSWER_HEADERS: tuple[str, ...] = ("generator", "answers", "EM", "number match", "ROUGE-L", "citation precision",
                                   "cited", "invalid citations", "p50 s")


def _markdown(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, the first column left-aligned, the others (numbers) right."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def markdown_table(rows: Sequence[Mapping]) -> str:
    """The rows as a GitHub-flavoured markdown table."""
    return _markdown(TABLE_HEADERS, ([r["system"]] + [f"{r[m]:.3f}" for m in METRICS[:6]]
                                     + [f"{r[m]:.1f}" for m in METRICS[6:]] for r in rows))


def answers_markdown_table(summary: Mapping) -> str:
    """The answer summary as a one-row markdown table ("-" where a metric never applied)."""
    def cell(key: str) -> str:
        return "-" if summary[key] is None else f"{summary[key]:.3f}"

    cells = [summary["generator"], str(summary["answers"]), cell("exact_match"), cell("number_match"),
             cell("rouge_l"), cell("citation_precision"), cell("cited"), str(summary["invalid_citations"]),
             f"{summary['latency_p50_s']:.1f}"]
    return _markdown(ANSWER_HEADERS, [cells])


def write_json(evaluation: Evaluation, path: str | Path) -> None:
    """The evaluation as JSON (:meth:`~mmrag_core.eval.retrieval.Evaluation.to_json`) at ``path``."""
    Path(path).write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")


def plot_recall(evaluation: Evaluation, path: str | Path) -> None:
    """A PNG of the Recall@k curves (k = 1..10), one line per system (needs the ``plot`` extra: matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ValueError("--plot needs matplotlib: pip install 'mmrag[plot]'") from e

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
