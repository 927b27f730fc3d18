"""The typed answer of the extractive answerer and the reader that cites every value it looks up.

Kept apart from the answerer so that the verdict rules (yes/no, which option) build the same answers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mmrag_core.answer.extractive.vocabulary import Found, find_item
from mmrag_core.answer.extractive.statement_rows import StatementPage


@dataclass(frozen=True)
class SourcePage:
    """One retrieved source: a PDF path or ``file://`` URI, its 0-based page, and its text as a fallback."""

    uri: str
    page: int
    text: str | None = None


@dataclass(frozen=True)
class CitedValue:
    """An input read from a source: the line item and fiscal year, the value in ``unit``, citation [n]."""

    item: str
    year: int
    value: float
    unit: str
    citation: int
    page: int  # 0-based
    quote: str  # the statement row as read
    cell: str  # the amount as printed


@dataclass(frozen=True)
class ExtractiveAnswer:
    """The answer: ``value`` in ``unit`` (None for yes/no or text answers and when abstaining), the formula
    when computed, its cited inputs; ``abstained`` with ``closest`` source numbers when unanswerable."""

    question: str
    text: str
    value: float | None = None
    unit: str = ""
    formula: str | None = None
    inputs: tuple[CitedValue, ...] = ()
    citations: tuple[int, ...] = ()
    quote: str | None = None
    page: int | None = None
    abstained: bool = False
    closest: tuple[int, ...] = ()
    label: str | None = None  # a yes/no or named-option verdict
    metric: str | None = field(default=None)


class CitingReader:
    """Line items looked up across the pages, each kept with its citation; values in absolute units."""

    def __init__(self, pages: Sequence[StatementPage]) -> None:
        self.pages = pages
        self.used: dict[tuple[str, int], Found] = {}

    def __call__(self, item: str, year: int) -> float:
        found = self.used.get((item, year)) or find_item(self.pages, item, year)
        if found is None:
            raise LookupError(f"{item} FY{year}")
        self.used[(item, year)] = found
        return found.value * found.page.scale

    def cited(self) -> tuple[CitedValue, ...]:
        return tuple(CitedValue(f.item, f.year, f.value, _unit(f.page), f.page.source, f.page.page, f.row.line,
                                f.cell) for f in self.used.values())


def _unit(page: StatementPage) -> str:
    return f"USD {page.scale_word}s" if page.scale_word else "USD"
