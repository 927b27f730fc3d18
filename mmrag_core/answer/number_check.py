"""Every number of an answer checked against the sources it cites: stated on a cited page (up to the answer's
rounding and a scale word), in the question, a formula constant, or computed from cited values by one of the
extractive answerer's calculations (:mod:`mmrag_core.answer.extractive.calculations`).

A generator can write a plausible number that no source holds; citing a source does not make it true. An
answer with a number none of these give is flagged ``unsupported`` and shown beside the extractive answer.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mmrag_core.answer.extractive.calculations import METRICS, evaluate, read_question
from mmrag_core.answer.extractive.statement_rows import StatementPage, read_page
from mmrag_core.answer.extractive.types import CitingReader, SourcePage

# A number as written: sign, digits with separators, decimals, then a scale word or a percent sign.
_NUMBER = re.compile(r"(?<![\w.])([-−]?)\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
                     r"(?:\s*(thousand|million|billion|trillion|mn|bn)\b|(mn|bn|%)|(?![\w]))", re.I)
_SCALE = {"thousand": 1e3, "million": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}
# Not claims about the filing: citations, page references, fiscal years, and formula constants.
_NOT_CLAIMS = re.compile(r"\[[\d,;\s–-]+\]|\b(?:pages?|p\.)\s*\d+|\b(?:fy|q[1-4])\s*'?\d+|\^\(1/\d+\)", re.I)
_CONSTANTS = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 100.0, 365.0}
# An absolute amount written without a scale word, in thousands / millions / billions; a fraction as a percent.
_AS_WRITTEN = (1.0, 1e-3, 1e-6, 1e-9)
_COMPUTED = _AS_WRITTEN + (100.0,)


@dataclass(frozen=True)
class Written:
    """A number as an answer writes it: ``value`` with its ``scale`` word's factor, ``unit`` its last digit."""

    text: str
    value: float
    unit: float
    scale: float = 1.0
    percent: bool = False

    def matches(self, x: float, scales: Iterable[float] = (1.0,)) -> bool:
        """Whether ``x`` (times one of ``scales``) rounds to this number as written, or its scaled value."""
        tol, v = self.unit / 2 + 1e-9 * max(1.0, abs(self.value)), abs(self.value)
        return any(abs(abs(x) * s - v) <= tol or abs(abs(x) * s - v * self.scale) <= tol * self.scale
                   for s in scales)


def written_numbers(text: str) -> list[Written]:
    """The numbers ``text`` claims: citations [n], page references, fiscal years and year labels left out."""
    out = []
    for m in _NUMBER.finditer(_NOT_CLAIMS.sub(" ", text)):
        sign, whole, decimals, word, suffix = m.groups()
        digits = whole.replace(",", "")
        if not decimals and not word and suffix is None and re.fullmatch(r"(?:19|20)\d{2}", digits):
            continue  # a year
        value = float(digits + (f".{decimals}" if decimals else ""))
        scale = _SCALE.get((word or suffix or "").lower(), 1.0)
        out.append(Written(m.group(0).strip(), -value if sign else value, 10.0 ** -len(decimals or ""), scale,
                           (suffix or "") == "%"))
    return out


def _years(*texts: str) -> list[int]:
    return sorted({int(y) for t in texts for y in re.findall(r"(?<!\d)((?:19|20)\d{2})(?!\d)", t)})


def computed_values(question: str, pages: Sequence[StatementPage], text: str = "") -> list[float]:
    """What the extractive calculations give from the cited pages' statement values (absolute units; a
    percentage as a fraction): the question's own plan, every known metric in each fiscal year the question or
    the answer ``text`` names, its change between two such years (points, growth) and its CAGR."""
    values = []
    plan = read_question(question)
    if plan is not None:
        try:
            values.append(evaluate(plan, CitingReader(pages))[0])
        except (LookupError, ZeroDivisionError, OverflowError, ValueError):
            pass
    years = _years(question, text)
    reader = CitingReader(pages)
    for metric in METRICS.values():
        by_year = {}
        for y in years:
            try:
                by_year[y] = metric.fn(reader, y)
            except (LookupError, ZeroDivisionError, OverflowError, ValueError):
                continue
        values += by_year.values()
        for y1, v1 in by_year.items():
            for y2, v2 in by_year.items():
                if y2 > y1:
                    values.append(v2 - v1)
                    if v1:
                        values.append(v2 / v1 - 1)
                    if v1 > 0 and v2 > 0:
                        values.append((v2 / v1) ** (1 / (y2 - y1)) - 1)
    return values


@dataclass(frozen=True)
class NumberCheck:
    """``unsupported``: the numbers (as written) that no cited source, the question or a calculation gives."""

    checked: int
    unsupported: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.unsupported


def check_numbers(text: str, question: str, cited: Sequence[SourcePage]) -> NumberCheck:
    """Check every number of ``text`` (an answer to ``question`` citing the pages ``cited``), see the module."""
    claims = written_numbers(text)
    if not claims:
        return NumberCheck(0, ())
    asked = written_numbers(question)
    pages = [read_page(n, s.uri, s.page, s.text) for n, s in enumerate(cited, 1)]
    stated: list[tuple[float, float]] = []  # (value as printed, the page's scale)
    for p in pages:
        body = (p.text or "") + "\n" + "\n".join(filter(None, (s.text for s in cited if s.page == p.page
                                                               and s.uri == p.uri)))
        stated += [(w.value * w.scale, p.scale) for w in written_numbers(body)]
    computed: list[float] | None = None
    bad = []
    for w in claims:
        if abs(w.value) in _CONSTANTS and w.unit == 1.0 and w.scale == 1.0 and not w.percent:
            continue
        if any(w.matches(a.value * a.scale) for a in asked):
            continue
        if any(w.matches(v) or w.matches(v * s, _AS_WRITTEN) for v, s in stated):
            continue
        if computed is None:
            computed = computed_values(question, pages, text)
        if any(w.matches(c, _COMPUTED) for c in computed):
            continue
        bad.append(w.text)
    return NumberCheck(len(claims), tuple(dict.fromkeys(bad)))
