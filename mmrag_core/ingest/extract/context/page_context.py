"""A chunk's context: what document it is from and where in it, as a short prefix of its indexed text.

Questions name a company, a period and a statement ("FY2018 capital expenditure for 3M, from the cash flow
statement") while the page that answers them, a table, names none of them. The prefix carries, within a
token budget, the document's facts (``doc_facts``: title; issuer, form and period of a filing), the page's
first headings and the heading the chunk sits under (``page_headings``), and the page number (1-based, as a
reader counts). This module composes them; the other two find them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pymupdf

from mmrag_core.ingest.extract.chunking import TokenCounter
from mmrag_core.ingest.extract.context.doc_facts import document_facts
from mmrag_core.ingest.extract.context.page_headings import (
    Heading,
    StyledLine,
    normalise,
    page_headings,
    running_lines,
    styled_lines,
)

# Share of the budget the document's facts may use; the rest is for headings and the page number.
DOC_SHARE = 0.65
HEADINGS_PER_PAGE = 2
SEPARATOR = " | "


@dataclass
class PageContext:
    """Builds the context prefix of the chunks of one page."""

    facts: list[str]
    headings: list[Heading]
    page: int  # 0-based
    budget: int
    count_tokens: TokenCounter
    _cache: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False)

    def for_chunk(self, bbox: tuple[float, float, float, float] | None) -> str:
        """The prefix of a chunk whose words start at ``bbox``'s top: the document's facts, the page's first
        headings and the heading the chunk sits under, the page number, within the token budget."""
        top = [h.text for h in self.headings[:HEADINGS_PER_PAGE]]
        if bbox is not None:
            above = [h.text for h in self.headings if h.y0 <= bbox[1] + 1.0]
            if above and above[-1] not in top:
                top.append(above[-1])
        key = tuple(top)
        if key not in self._cache:
            self._cache[key] = compose(self.facts, top, self.page, self.budget, self.count_tokens)
        return self._cache[key]

    def outline(self, budget: int) -> str | None:
        """The page's outline: the document's facts (as the chunks' prefixes have them) and all the page's
        headings (no page number: it says nothing of the topic), within ``budget`` tokens; None for a page
        without headings, whose outline would only repeat the document's."""
        headings = list(dict.fromkeys(h.text for h in self.headings))
        if not headings:
            return None
        facts = _fit(self.facts, int(self.budget * DOC_SHARE), self.count_tokens)  # as the chunks' prefixes have them
        return SEPARATOR.join(facts + _fit(headings, budget - _cost(facts, self.count_tokens), self.count_tokens))


def compose(facts: Sequence[str], headings: Sequence[str], page: int, budget: int, count_tokens: TokenCounter) -> str:
    """Join facts, headings and ``page N`` within ``budget`` tokens (``count_tokens`` per word, separators
    counted): the facts get up to DOC_SHARE of it, the headings what is left; parts that do not fit are
    cut word by word."""
    page_part = f"page {page + 1}"
    page_cost = _cost([page_part], count_tokens)
    doc_budget = int(budget * DOC_SHARE)
    kept_facts = _fit(facts, doc_budget, count_tokens)
    used = _cost(kept_facts, count_tokens)
    kept_headings = _fit(headings, budget - used - page_cost, count_tokens)
    parts = kept_facts + kept_headings
    if _cost([*parts, page_part], count_tokens) <= budget:
        parts.append(page_part)
    return SEPARATOR.join(parts)


def _cost(parts: Sequence[str], count_tokens: TokenCounter) -> int:
    """Tokens of the parts joined by SEPARATOR (one token per separator)."""
    words = [w for p in parts for w in p.split()]
    return sum(count_tokens(words)) + max(0, len(parts) - 1) if words else 0


def _fit(parts: Sequence[str], budget: int, count_tokens: TokenCounter) -> list[str]:
    """The leading parts that fit in ``budget`` tokens, the first one that does not fit cut to what is left
    (if at least 3 tokens are left); later parts dropped."""
    kept: list[str] = []
    left = budget
    for part in parts:
        words = part.split()
        sep = 1 if kept else 0
        counts = count_tokens(words) if words else []
        if sum(counts) + sep <= left:
            kept.append(part)
            left -= sum(counts) + sep
            continue
        room, cut = left - sep, []
        for w, c in zip(words, counts):
            if c > room:
                break
            cut.append(w)
            room -= c
        if len(cut) >= 1 and left - sep >= 3:
            kept.append(" ".join(cut))
        break
    return kept


def pdf_page_contexts(doc: pymupdf.Document, source_uri: str, budget: int,
                      count_tokens: TokenCounter) -> dict[int, PageContext]:
    """The context builder of every page of ``doc``: one pass over the pages for their lines (so that
    running headers can be told from headings), facts from the first pages."""
    facts = document_facts(doc, source_uri).parts()
    known = {normalise(f) for f in facts}
    per_page: list[list[StyledLine]] = []
    for pno in range(doc.page_count):
        try:
            per_page.append(styled_lines(doc.load_page(pno)))
        except Exception:  # the page's own extraction reports what is wrong with it
            per_page.append([])
    running = running_lines(per_page)
    contexts = {}
    for pno, lines in enumerate(per_page):
        headings = [h for h in page_headings(lines) if normalise(h.text) and normalise(h.text) not in running | known]
        contexts[pno] = PageContext(facts, headings, pno, budget, count_tokens)
    return contexts
