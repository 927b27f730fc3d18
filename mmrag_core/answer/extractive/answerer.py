"""Offline extractive and calculating answers to financial questions: right, with each number cited, or an
honest "the sources do not state it".

A generator can state a number no source holds. Here every number is either a cell of a quoted statement
row of a numbered source or computed by a stated formula from such cells; when an input is missing the
answer abstains and names the closest sources instead of guessing.
"""
from __future__ import annotations

from collections.abc import Sequence

from mmrag_core.answer.extractive.types import CitedValue, CitingReader, ExtractiveAnswer, SourcePage
from mmrag_core.answer.extractive.calculations import METRICS, Plan, evaluate, read_question
from mmrag_core.answer.extractive.verdicts import verdict
from mmrag_core.answer.extractive.vocabulary import ITEMS
from mmrag_core.answer.extractive.statement_rows import SCALES, StatementPage, read_page

__all__ = ["CitedValue", "ExtractiveAnswer", "SourcePage", "answer_extractively", "answer_hits"]


def _fmt(x: float, decimals: int) -> str:
    return f"{x:,.{decimals}f}"


def _closest(pages: Sequence[StatementPage], plan: Plan | None) -> tuple[int, ...]:
    kinds = set()
    if plan is not None:
        kinds = {ITEMS[i].kind for i in ITEMS if i in METRICS[plan.metric].formula.lower() or i == plan.metric}
    ranked = sorted(pages, key=lambda p: (p.kind not in kinds, p.kind == "other", -len(p.rows), p.source))
    return tuple(p.source for p in ranked[:3])


def _abstain(question: str, pages: Sequence[StatementPage], plan: Plan | None, why: str) -> ExtractiveAnswer:
    closest = _closest(pages, plan)
    refs = ", ".join(f"[{n}] (page {pages[n - 1].page + 1})" for n in closest) or "none"
    text = f"The sources do not state {why}. Closest sources: {refs}."
    return ExtractiveAnswer(question, text, abstained=True, closest=closest, citations=(),
                            metric=plan.metric if plan else None)


def _scaled(plan: Plan, value: float, reader: CitingReader) -> tuple[float, str, int]:
    """The value in the unit the question asks for, that unit, and the decimals to print."""
    kind = METRICS[plan.metric].kind
    if kind == "amount" and plan.mode in ("value", "average"):
        first = next(iter(reader.used.values()))
        word = plan.scale_word or first.page.scale_word
        divisor = SCALES.get(word, 1.0)
        out = value / divisor
        decimals = plan.decimals if plan.decimals is not None else (0 if float(out).is_integer() else 2)
        return out, f"USD {word}s" if word else "USD", decimals
    if plan.percent or kind == "percent" and not plan.decimals:
        return value * 100, "%", plan.decimals if plan.decimals is not None else 1
    return value, "days" if kind == "days" else "", plan.decimals if plan.decimals is not None else 2


def _describe(cv: CitedValue) -> str:
    return f"{cv.item.replace('_', ' ')} FY{cv.year} = {cv.cell} ({cv.unit}) [{cv.citation}]"


def answer_extractively(question: str, sources: Sequence[SourcePage]) -> ExtractiveAnswer:
    """Answer ``question`` from ``sources`` (numbered [1].. in order): a statement value, a metric computed
    from statement values, a yes/no or named-option verdict from them, or an abstention."""
    pages = [read_page(n, s.uri, s.page, s.text) for n, s in enumerate(sources, start=1)]
    judged = verdict(question, pages)
    if judged is not None:
        return judged
    plan = read_question(question)
    if plan is None:
        return _abstain(question, pages, None, "a value this answerer can identify for this question")
    reader = CitingReader(pages)
    metric = METRICS[plan.metric]
    span = f"FY{plan.years[0]}" + (f"-FY{plan.years[-1]}" if len(plan.years) > 1 else "")
    try:
        raw, formula = evaluate(plan, reader)
    except (LookupError, ZeroDivisionError) as e:
        return _abstain(question, pages, plan, f"{metric.name.replace('_', ' ')} for {span} ({e} is not found)")
    value, unit, decimals = _scaled(plan, raw, reader)
    value = round(value, decimals)
    inputs = reader.cited()
    shown = _fmt(value, decimals) + ("%" if unit == "%" else f" {unit}" if unit else "")
    cites = tuple(dict.fromkeys(cv.citation for cv in inputs))
    name = metric.name.replace("_", " ")
    if len(inputs) == 1 and plan.mode == "value" and metric.kind == "amount":
        cv = inputs[0]
        text = (f"{name} for FY{cv.year}: {shown} [{cv.citation}], from the row \"{cv.quote}\" "
                f"(page {cv.page + 1}, {cv.unit}).")
        return ExtractiveAnswer(question, text, value, unit, None, inputs, cites, cv.quote, cv.page,
                                metric=plan.metric)
    text = (f"{name} ({plan.mode}, {span}): {shown} [{', '.join(map(str, cites))}]. Formula: {formula}. "
            f"Inputs: " + "; ".join(_describe(cv) for cv in inputs) + ".")
    first = inputs[0] if inputs else None
    return ExtractiveAnswer(question, text, value, unit, formula, inputs, cites,
                            first.quote if first else None, first.page if first else None, metric=plan.metric)


def answer_hits(question: str, hits: Sequence[object], limit: int = 8) -> ExtractiveAnswer:
    """``answer_extractively`` over query hits (``source_uri``, 0-based ``page``, ``snippet``), one source per
    page in hit order."""
    seen: dict[tuple[str, int], SourcePage] = {}
    for h in hits:
        key = (str(getattr(h, "source_uri", "")), int(getattr(h, "page", 0)))
        if key not in seen and len(seen) < limit:
            seen[key] = SourcePage(key[0], key[1], getattr(h, "snippet", None))
    return answer_extractively(question, list(seen.values()))

