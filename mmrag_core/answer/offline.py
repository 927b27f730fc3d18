"""The offline default answerer over a snapshot: search, then the extractive answer
(:mod:`mmrag_core.answer.extractive`) from the hits' pages, numbered like a generator's sources, with each
citation's file, 1-based page and quoted row, and its numbers checked like a generator's (:mod:`number_check`).

No model is loaded beyond the query encoders, so an answer costs a search plus reading a few PDF pages.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mmrag_core.answer.extractive import ExtractiveAnswer, SourcePage, answer_extractively
from mmrag_core.answer.extractive.statement_rows import read_page
from mmrag_core.answer.number_check import NumberCheck, check_numbers
from mmrag_core.answer.prompting import Source, sources_from_hits
from mmrag_core.config import Settings

ANSWERER = "extractive"


def source_pages(sources: Sequence[Source]) -> list[SourcePage]:
    """The sources as the extractive answerer reads them: the PDF page (when the file opens) or the text."""
    return [SourcePage(s.source_uri, s.page, s.text) for s in sources]


def cited_pages(citations: Sequence[int], sources: Sequence[Source]) -> list[SourcePage]:
    """The pages the citations name (numbers naming no source are left out)."""
    by_number = {s.number: s for s in sources}
    return source_pages([by_number[n] for n in dict.fromkeys(citations) if n in by_number])


@dataclass
class ExtractiveResult:
    """An extractive answer with the sources it was given (numbered 1..n as cited) and its number check."""

    answer: ExtractiveAnswer
    sources: list[Source]
    seconds: float
    check: NumberCheck
    snapshot: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        return self.answer.question

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def citations(self) -> list[int]:
        return list(self.answer.citations)

    @property
    def unsupported(self) -> list[str]:
        return list(self.check.unsupported)

    def cited(self) -> list[dict]:
        """Each citation [n]: its file, 1-based page label, source URI and the statement rows quoted from it."""
        by_number = {s.number: s for s in self.sources}
        out = []
        for n in self.answer.citations:
            s = by_number.get(n)
            if s is None:
                continue
            quotes = list(dict.fromkeys(cv.quote for cv in self.answer.inputs if cv.citation == n))
            out.append({"number": n, "file": s.file, "source_uri": s.source_uri, "page": s.page,
                        "page_label": f"p. {s.page + 1}", "item_id": s.item_id, "quotes": quotes})
        return out

    def to_dict(self) -> dict:
        """The same keys as a generated answer's JSON (answer, citations, sources, ...) plus the structure."""
        a = self.answer
        inputs = [{"citation": cv.citation, "item": cv.item, "year": cv.year, "value": cv.value, "unit": cv.unit,
                   "cell": cv.cell, "page": cv.page, "page_label": f"p. {cv.page + 1}", "quote": cv.quote}
                  for cv in a.inputs]
        return {
            "answerer": ANSWERER, "question": a.question, "answer": a.text, "value": a.value, "unit": a.unit,
            "formula": a.formula, "label": a.label, "metric": a.metric, "abstained": a.abstained,
            "closest": list(a.closest), "quote": a.quote, "page": a.page, "inputs": inputs,
            "citations": list(a.citations), "cited": self.cited(), "invalid_citations": [],
            "unsupported": bool(self.check.unsupported), "unsupported_numbers": self.unsupported,
            "sources": [s.to_dict() for s in self.sources], "generator": ANSWERER, "snapshot": self.snapshot,
            "seconds": round(self.seconds, 3), "notes": self.notes,
        }


def extractive_from_sources(question: str, sources: Sequence[Source]) -> ExtractiveResult:
    """The extractive answer from ``sources`` (cited by their numbers), its numbers checked against them."""
    t0 = time.perf_counter()
    answer = answer_extractively(question, source_pages(sources))
    check = check_numbers(answer.text, question, cited_pages(answer.citations, sources))
    return ExtractiveResult(answer, list(sources), time.perf_counter() - t0, check)


# Searched within the top hit's document when the hits do not state the value: a metric is read from the
# statements, whose pages a question's wording often does not find (a table names neither company nor metric).
STATEMENT_QUERIES = ("consolidated statements of operations income statement net sales revenue",
                     "consolidated balance sheets total assets liabilities",
                     "consolidated statements of cash flows operating investing financing activities")
# A filing prints its statements on consecutive pages: the pages this far around a statement page are read too.
STATEMENT_SPAN = 3


def statement_hits(engine, hits: Sequence, per_statement: int) -> list:
    """The pages that read best as each financial statement within the first hit's document."""
    if not hits or per_statement <= 0:
        return []
    doc = {"doc": [Source(0, "", hits[0].source_uri, 0, "").file]}
    return [h for q in STATEMENT_QUERIES for h in engine.search(q, None, per_statement, filters=doc)]


def _statement_neighbours(items, sources: Sequence[Source], start: int) -> list[Source]:
    """Sources for the pages around each source that reads as a financial statement, numbered from ``start``
    (each the page's first item, or its bare page when it has none)."""
    seen = {(s.source_uri, s.page) for s in sources}
    wanted: list[tuple[str, int]] = []
    for s in sources:
        if read_page(0, s.source_uri, s.page, s.text).kind == "other":
            continue
        for p in range(max(0, s.page - STATEMENT_SPAN), s.page + STATEMENT_SPAN + 1):
            if (s.source_uri, p) not in seen:
                seen.add((s.source_uri, p))
                wanted.append((s.source_uri, p))
    if not wanted:
        return []
    rows = items.filter(pc.is_in(items.column("source_uri"), value_set=pa.array(sorted({u for u, _ in wanted}))))
    first: dict[tuple[str, int], dict] = {}
    for r in rows.select(["id", "kind", "source_uri", "page", "text"]).to_pylist():
        first.setdefault((r["source_uri"], int(r["page"])), r)
    out = []
    for n, (uri, page) in enumerate(wanted, start):
        r = first.get((uri, page), {})
        out.append(Source(n, r.get("kind", "chunk"), uri, page, r.get("text") or "", item_id=r.get("id")))
    return out


def _company(file: str) -> str:
    """A file name's first word, lower-cased: the issuer in names like ``ADOBE_2017_10K.pdf``."""
    return re.split(r"[_\-\s.]", file, maxsplit=1)[0].lower()


def named_hits(question: str, hits: Sequence) -> list:
    """The hits from documents whose file name's first word the question names ("Adobe" for ADOBE_2017_10K.pdf),
    when any is named; else all. A value read from another issuer's statement would be a wrong answer."""
    words = set(re.findall(r"[a-z0-9]+", question.lower()))
    named = [h for h in hits if len(c := _company(Source(0, "", h.source_uri, 0, "").file)) > 1 and c in words]
    return named or list(hits)


def ask_extractive(engine, question: str, settings: Settings, image: str | Path | bytes | None = None,
                   k: int | None = None) -> ExtractiveResult:
    """Search ``engine``'s snapshot, then answer extractively from the top ``k`` (``settings.extractive_k``)
    hits' pages (only those of the documents the question names, when it names any, see :func:`named_hits`);
    when that abstains, again with statement pages added after them: the top document's pages
    found by statement titles (``settings.extractive_statements`` each) and the pages around every source that
    reads as a statement. ``seconds`` includes the searches."""
    if not question or not question.strip():
        raise ValueError("a question is needed (an image alone can be searched with 'mmrag query --image')")
    t0 = time.perf_counter()
    hits = named_hits(question, engine.search(question, image, k or settings.extractive_k))
    result = extractive_from_sources(question, sources_from_hits(hits, engine.snapshot.items))
    if result.answer.abstained and settings.extractive_statements:
        seen = {(h.source_uri, h.page) for h in hits}
        extra = [h for h in statement_hits(engine, hits, settings.extractive_statements)
                 if (h.source_uri, h.page) not in seen and not seen.add((h.source_uri, h.page))]
        sources = sources_from_hits(list(hits) + extra, engine.snapshot.items)
        sources += _statement_neighbours(engine.snapshot.items, sources, len(sources) + 1)
        if len(sources) > len(result.sources):
            more = extractive_from_sources(question, sources)
            if not more.answer.abstained:
                more.notes.append(f"answered with {len(sources) - len(result.sources)} statement page(s) added")
                result = more
    result.seconds, result.snapshot = time.perf_counter() - t0, engine.snapshot.id
    return result
