"""Yes/no and which-option verdicts computed from cited statement values ("improving operating margin?",
"positive working capital?", "which activity brought in the most cash?").

Such questions are answered by comparing a metric over two years or three rows; the verdict is given with
the values and citations it rests on, so a reader can check it, and is withheld when an input is missing.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from mmrag_core.answer.extractive.types import CitingReader, ExtractiveAnswer
from mmrag_core.answer.extractive.calculations import METRICS, metric_of
from mmrag_core.answer.extractive.statement_rows import StatementPage

_YEARS = re.compile(r"\b(?:fy|fiscal(?: year)?)\s*((?:19|20)\d{2})\b|\b((?:19|20)\d{2})\b", re.I)
_ACTIVITIES = (("operating activities", "cfo"), ("investing activities", "cfi"), ("financing activities", "cff"))


def _years(q: str, pages: Sequence[StatementPage] = ()) -> list[int]:
    """The fiscal years a question names; when it names none, the latest year of the statement pages."""
    named = sorted({int(a or b) for a, b in _YEARS.findall(q)})
    if named or not pages:
        return named
    stated = [y for p in pages if p.kind != "other" for r in p.rows for y in r.values]
    return [max(stated)] if stated else []


def _show(metric: str, value: float) -> str:
    kind = METRICS[metric].kind
    return f"{value * 100:.1f}%" if kind == "percent" else f"{value:,.2f}"


def _answer(question: str, label: str, text: str, reader: CitingReader, metric: str) -> ExtractiveAnswer:
    inputs = reader.cited()
    cites = tuple(dict.fromkeys(cv.citation for cv in inputs))
    detail = "; ".join(f"{cv.item.replace('_', ' ')} FY{cv.year} = {cv.cell} ({cv.unit}) [{cv.citation}]"
                       for cv in inputs)
    first = inputs[0] if inputs else None
    return ExtractiveAnswer(question, f"{label}. {text} Inputs: {detail}.", None, "", METRICS[metric].formula
                            if metric in METRICS else None, inputs, cites, first.quote if first else None,
                            first.page if first else None, label=label, metric=metric)


def _most_cash(question: str, q: str, reader: CitingReader) -> ExtractiveAnswer | None:
    years = _years(q)
    if not years:
        return None
    y = years[-1]
    try:
        flows = {name: reader(item, y) for name, item in _ACTIVITIES}
    except LookupError:
        return None
    best = max(flows, key=lambda k: flows[k])
    text = f"In FY{y}, {best} brought in the most (or lost the least) cash."
    return _answer(question, best.capitalize(), text, reader, "cfo")


def _trend(question: str, q: str, reader: CitingReader) -> ExtractiveAnswer | None:
    metric = metric_of(q)
    years = _years(q)
    if metric is None or not years:
        return None
    y = years[-1]
    try:
        now, before = METRICS[metric].fn(reader, y), METRICS[metric].fn(reader, y - 1)
    except (LookupError, ZeroDivisionError):
        return None
    up = now > before
    name = metric.replace("_", " ")
    if re.search(r"improved or declined|improve or decline|increased? or decreased?", q):
        label = "Improved" if up else "Declined"
    else:
        label = "Yes" if up else "No"
    text = (f"{name} went from {_show(metric, before)} in FY{y - 1} to {_show(metric, now)} in FY{y} "
            f"({'up' if up else 'down'}).")
    return _answer(question, label, text, reader, metric)


def _consistent(question: str, q: str, reader: CitingReader) -> ExtractiveAnswer | None:
    metric = metric_of(q)
    years = _years(q, reader.pages)
    limit = re.search(r"more than (?:roughly |about )?(\d+(?:\.\d+)?)\s*%", q)
    if metric is None or METRICS[metric].kind != "percent" or not years or not limit:
        return None
    y = years[-1]
    values = []
    for year in (y - 2, y - 1, y):
        try:
            values.append(METRICS[metric].fn(reader, year))
        except (LookupError, ZeroDivisionError):
            continue
    if len(values) < 2:
        return None
    swing = max(abs(a - b) for a, b in zip(values, values[1:], strict=False)) * 100
    label = "Yes" if swing <= float(limit.group(1)) else "No"
    text = (f"{metric.replace('_', ' ')} over the years read: " + ", ".join(_show(metric, v) for v in values)
            + f"; the largest change in a year is {swing:.1f} percentage points.")
    return _answer(question, label, text, reader, metric)


def _positive(question: str, q: str, reader: CitingReader) -> ExtractiveAnswer | None:
    m = re.search(r"(positive|negative) (working capital|free cash ?flow|operating income|net income)", q)
    years = _years(q)
    if not m or not years:
        return None
    metric = metric_of(m.group(2))
    if metric is None:
        return None
    try:
        value = METRICS[metric].fn(reader, years[-1])
    except (LookupError, ZeroDivisionError):
        return None
    holds = value > 0 if m.group(1) == "positive" else value < 0
    text = f"{m.group(2)} in FY{years[-1]} is {'positive' if value > 0 else 'negative'}."
    return _answer(question, "Yes" if holds else "No", text, reader, metric)


def verdict(question: str, pages: Sequence[StatementPage]) -> ExtractiveAnswer | None:
    """A yes/no or which-option answer when the question is of a kind handled here and its inputs are
    stated; None otherwise (the caller then tries a value, or abstains)."""
    q = question.lower().replace("’", "'")
    reader = CitingReader(pages)
    if re.search(r"operati.{0,20}investing.{0,20}financing", q) and re.search(r"\bmost\b|\bhighest\b", q):
        return _most_cash(question, q, reader)
    if re.search(r"\bconsistent\b", q) and re.search(r"\bmargin", q):
        return _consistent(question, q, reader)
    if re.search(r"\b(?:positive|negative) (?:working capital|free cash ?flow|operating income|net income)", q):
        return _positive(question, q, reader)
    if re.search(r"\bimprov(?:ing|ed|e)\b|\bdeclin(?:ing|ed|e)\b", q) and re.match(r"(?:does|has|is|did|have)\b", q):
        return _trend(question, q, reader)
    return None
