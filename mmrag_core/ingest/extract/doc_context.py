"""A chunk's context: what document it is from and where in it, as a short prefix of its indexed text.

Questions name a company, a period and a statement ("FY2018 capital expenditure for 3M, from the cash flow
statement") while the page that answers them, a table, names none of them. The prefix carries, within a
token budget:

- the document: its title (the PDF's metadata title when it is a real one, else the first page's most
  prominent heading, else the file name made readable); for filings, the issuer, the form and the period,
  as the first pages state them ("FORM 10-K", "For the fiscal year ended December 31, 2018", the line above
  "(Exact name of registrant as specified in its charter)"). Nothing here knows any company: documents
  that are not filings simply have no issuer, form or period;
- the page: its first headings, and the heading the chunk sits under (large or bold lines from the font
  information of the text layer; running headers that repeat on many pages are left out; a page without
  any falls back to its first short line);
- the page number (1-based, as a reader counts).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import PurePosixPath

import pymupdf

from mmrag_core.ingest.extract.chunking import TokenCounter

# Pages read for the document's facts (cover page and the one after: some covers spill over).
FACT_PAGES = 2
# Share of the budget the document's facts may use; the rest is for headings and the page number.
DOC_SHARE = 0.65
# A heading seen on more than this share of the pages (and on more than MIN_REPEATS pages) is a running
# header or footer ("Table of Contents"), not a heading of the page.
BOILERPLATE_SHARE = 0.2
MIN_REPEATS = 3
MAX_HEADING_WORDS = 14
HEADINGS_PER_PAGE = 2
SEPARATOR = " | "

_MONTH_DATE = r"([A-Z][a-z]{2,8}\.?\s+\d{1,2},?\s+((?:19|20)\d{2}))"
_FISCAL_YEAR = re.compile(r"for\s+the\s+(?:fiscal\s+)?year\s+ended:?\s+" + _MONTH_DATE, re.IGNORECASE)
_QUARTER = re.compile(r"for\s+the\s+(quarterly\s+period|quarter|three\s+months|six\s+months|nine\s+months)"
                      r"\s+ended:?\s+" + _MONTH_DATE, re.IGNORECASE)
_REPORT_DATE = re.compile(r"date\s+of\s+report[^:]{0,60}:\s*" + _MONTH_DATE, re.IGNORECASE)
_FISCAL_NAMED = re.compile(r"\bfiscal\s+(?:year\s+)?((?:19|20)\d{2})\b", re.IGNORECASE)
# A filing's form as its cover sets it, in capitals ("FORM 10-K", "FORM 8-K", "FORM 20-F", "FORM S-1").
_FORM = re.compile(r"\bFORM\s+(\d{1,2}-[A-Z]{1,2}(?:/A)?|[A-Z]{1,3}-\d{1,2}(?:/A)?|DEF\s+14A)\b")
_REPORT_KIND = re.compile(r"\b(ANNUAL|QUARTERLY|CURRENT|TRANSITION)\s+REPORT\b", re.IGNORECASE)
_REGISTRANT = re.compile(r"^\(?\s*exact\s+name\s+of\s+(?:the\s+)?registrant", re.IGNORECASE)
_FILE_NUMBER = re.compile(r"commission\s+file\s+(?:number|no\.?)", re.IGNORECASE)
# Metadata titles that name nothing: accession or file numbers, placeholders, converter leftovers.
_JUNK_TITLE = re.compile(r"^[\d\W_]*$|^(untitled|none|null|document|title|unknown|slide \d+)$|\.(docx?|pdf|indd|tex)$",
                         re.IGNORECASE)
_CONVERTER_PREFIX = re.compile(r"^(microsoft\s+(word|powerpoint)\s*-\s*)", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)


@dataclass(frozen=True)
class DocumentFacts:
    """What a document says it is. Any field may be missing."""

    title: str | None = None
    issuer: str | None = None
    form: str | None = None
    period: str | None = None

    def parts(self) -> list[str]:
        """The facts in the order they are kept when the budget is short, the title dropped when it only
        repeats the issuer and the form."""
        parts = [p for p in (self.issuer, self.period, self.form) if p]
        if self.title and not _covered(self.title, parts):
            parts.append(self.title)
        return parts


@dataclass(frozen=True)
class Heading:
    """A heading line of a page and where it starts (top y, PDF points)."""

    y0: float
    text: str


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


# ---- the document --------------------------------------------------------------------------------


def document_facts(doc: pymupdf.Document, source_uri: str) -> DocumentFacts:
    """Title, issuer, form and period of a document, from its metadata and first pages."""
    lines: list[str] = []
    for pno in range(min(FACT_PAGES, doc.page_count)):
        try:
            lines.extend(ln.strip() for ln in doc.load_page(pno).get_text("text").splitlines())
        except Exception:  # an unreadable page: the facts come from what can be read
            continue
    lines = [ln for ln in lines if ln]
    text = " ".join(lines)
    form = _form(text)
    issuer = _issuer(lines)
    issuer = " ".join(issuer.split()) if issuer else None
    period = _period(text, lines)
    title = _metadata_title(doc)
    if title is None and form is None:
        title = _prominent_heading(doc)
    if title is None and issuer is None:
        title = readable_file_name(source_uri)
    return DocumentFacts(title=title, issuer=issuer, form=form, period=period)


def readable_file_name(source_uri: str) -> str | None:
    """``/a/annual_report-2018.pdf`` -> ``annual report 2018``."""
    stem = PurePosixPath(source_uri.rstrip("/")).stem
    name = " ".join(re.sub(r"[_\-.+]+", " ", stem).split())
    return name or None


def _metadata_title(doc: pymupdf.Document) -> str | None:
    raw = ((doc.metadata or {}).get("title") or "").strip()
    title = " ".join(_CONVERTER_PREFIX.sub("", raw).split())
    if len(_LETTER.findall(title)) < 3 or _JUNK_TITLE.search(title):
        return None
    return _clip_words(title, MAX_HEADING_WORDS)


def _prominent_heading(doc: pymupdf.Document) -> str | None:
    """The first page's text in its largest font (consecutive lines of that size joined), if it is larger
    than the body text."""
    if doc.page_count == 0:
        return None
    try:
        lines = styled_lines(doc.load_page(0))
    except Exception:
        return None
    lines = [ln for ln in lines if len(_LETTER.findall(ln.text)) >= 3]
    if not lines:
        return None
    body = _body_size(lines)
    top = max(ln.size for ln in lines)
    if top < body * 1.15:
        return None
    picked = [ln.text for ln in lines if abs(ln.size - top) < 0.5]
    return _clip_words(" ".join(picked[:3]), MAX_HEADING_WORDS)


def _form(text: str) -> str | None:
    m = _FORM.search(text)
    if not m:
        return None
    form = "Form " + " ".join(m.group(1).upper().split())
    kind = _REPORT_KIND.search(text)
    return f"{form} {kind.group(1).lower()} report" if kind else form


def _period(text: str, lines: list[str]) -> str | None:
    if m := _FISCAL_YEAR.search(text):
        return f"fiscal year ended {_norm_date(m.group(1))} (FY{m.group(2)})"
    if m := _QUARTER.search(text):
        return f"{' '.join(m.group(1).lower().split())} ended {_norm_date(m.group(2))}"
    if m := _REPORT_DATE.search(text):
        return f"report dated {_norm_date(m.group(1))}"
    head = " ".join(lines[:5])  # a release's headline: "... reports fiscal 2023 results"
    if m := _FISCAL_NAMED.search(head):
        return f"fiscal {m.group(1)} (FY{m.group(1)})"
    return None


def _norm_date(date: str) -> str:
    return " ".join(date.split())


def _issuer(lines: list[str]) -> str | None:
    """The registrant's name: the line(s) right above "(Exact name of registrant as specified in its
    charter)", else the line after the commission file number."""
    for i in range(len(lines)):
        if _REGISTRANT.match(" ".join(lines[i:i + 3])):
            name = _name_before(lines, i)
            if name:
                return name
    for i, ln in enumerate(lines[:-1]):
        if _FILE_NUMBER.search(ln) and _name_like(lines[i + 1]):
            return lines[i + 1]
    return None


def _name_before(lines: list[str], i: int) -> str | None:
    """A name ending at line ``i - 1``; a short line above it joins ("AMCOR" / "PLC")."""
    if i == 0 or not _name_like(lines[i - 1]):
        return None
    name = [lines[i - 1]]
    if len(name[0].split()) <= 2 and i >= 2 and _name_like(lines[i - 2]) and len(lines[i - 2].split()) <= 3:
        name.insert(0, lines[i - 2])
    return " ".join(name)


def _name_like(line: str) -> bool:
    """Short, has letters, no sentence or form punctuation, not mostly digits."""
    words = line.split()
    letters = len(_LETTER.findall(line))
    digits = sum(ch.isdigit() for ch in line)
    return (1 <= len(words) <= 8 and letters >= 2 and digits <= letters and ":" not in line
            and not line.startswith("(") and not _FILE_NUMBER.search(line))


def _covered(title: str, parts: Sequence[str]) -> bool:
    """True when every word with letters in ``title`` already appears in ``parts``."""
    have = {w.lower() for p in parts for w in re.findall(r"\w+", p)}
    words = [w.lower() for w in re.findall(r"\w+", title) if _LETTER.search(w) or len(w) >= 4]
    return bool(words) and all(w in have for w in words)


def _clip_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


# ---- the pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """A text line with its box, largest font size, and whether it is bold."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    size: float
    bold: bool
    chars: int


def styled_lines(page: pymupdf.Page) -> list[_Line]:
    """Text lines with their largest font size and whether all their lettered spans are bold. Lines that
    run across the page's main text direction (an arXiv stamp in the margin) are left out."""
    rotate = page.rotation_matrix if page.rotation else None
    lines = [ln for b in page.get_text("dict", flags=0)["blocks"] for ln in b.get("lines", ())]
    weights: Counter[tuple[float, float]] = Counter()
    for line in lines:
        weights[_direction(line)] += sum(len(s["text"]) for s in line["spans"])
    main = weights.most_common(1)[0][0] if weights else (1.0, 0.0)
    out = []
    for line in lines:
        spans = [s for s in line["spans"] if s["text"].strip()]
        if not spans or _direction(line) != main:
            continue
        text = _join_spans(spans)
        lettered = [s for s in spans if _LETTER.search(s["text"])]
        bold = bool(lettered) and all(s["flags"] & 16 or _BOLD_FONT.search(s["font"]) for s in lettered)
        rect = pymupdf.Rect(line["bbox"])
        if rotate is not None:
            rect = rect * rotate
        out.append(_Line(rect.x0, rect.y0, rect.x1, rect.y1, text, max(s["size"] for s in spans), bold,
                         sum(len(s["text"]) for s in spans)))
    return out


def _join_spans(spans: list[dict]) -> str:
    """A line's text: spans side by side join as one word (small capitals are set as two sizes), spans
    apart by more than a quarter of the font size are separate words."""
    parts = [spans[0]["text"]]
    for prev, span in pairwise(spans):
        gap = span["bbox"][0] - prev["bbox"][2]
        parts.append(" " if gap > 0.25 * max(span["size"], 1.0) else "")
        parts.append(span["text"])
    return " ".join("".join(parts).split())


def _direction(line: dict) -> tuple[float, float]:
    return round(line["dir"][0], 1), round(line["dir"][1], 1)


def _body_size(lines: Sequence[_Line]) -> float:
    """The font size most of the page's characters are set in."""
    weights: Counter[float] = Counter()
    for ln in lines:
        weights[round(ln.size, 1)] += ln.chars
    return weights.most_common(1)[0][0] if weights else 0.0


def page_headings(lines: Sequence[_Line]) -> list[Heading]:
    """Heading lines of a page (from :func:`styled_lines`), top to bottom: short lines with letters, set
    larger than the body text or in bold, starting at the text's left edge or centred (not a column header
    inside a table), and not a table row (no number to their right on the same line). A page without any
    gives its first short line instead."""
    if not lines:
        return []
    body = _body_size(lines)
    left, right = min(ln.x0 for ln in lines), max(ln.x1 for ln in lines)
    width = max(right - left, 1.0)
    numbers = [ln for ln in lines if any(ch.isdigit() for ch in ln.text)]
    found = []
    for ln in lines:
        if len(_LETTER.findall(ln.text)) < 3 or len(ln.text.split()) > MAX_HEADING_WORDS:
            continue
        if not (ln.size >= body * 1.15 or ln.bold):
            continue
        if ln.x0 - left > 0.15 * width and abs((ln.x0 + ln.x1) / 2 - (left + right) / 2) > 0.1 * width:
            continue
        if any(o.x0 > ln.x1 + 5 and o.y0 < ln.y1 and ln.y0 < o.y1 for o in numbers):
            continue  # a bold row label of a table ("Total assets  $ 36,500")
        found.append(Heading(ln.y0, ln.text))
    if not found:
        first = min(lines, key=lambda ln: ln.y0)
        if len(_LETTER.findall(first.text)) >= 3 and len(first.text.split()) <= 10:
            found.append(Heading(first.y0, first.text))
    found.sort(key=lambda h: h.y0)
    return _dedupe(found)


def _dedupe(headings: list[Heading]) -> list[Heading]:
    seen, out = set(), []
    for h in headings:
        if h.text.lower() not in seen:
            seen.add(h.text.lower())
            out.append(h)
    return out


def _norm(text: str) -> str:
    """Compared without case, digits or punctuation ("Page 3 of 40" ~ "Page 4 of 40")."""
    return re.sub(r"[\d\W_]+", " ", text.lower()).strip()


def running_lines(per_page_lines: Sequence[Sequence[_Line]]) -> set[str]:
    """Short lines (normalised) that repeat on many pages: running headers and footers ("Table of
    Contents", the company name in every page's header), which say nothing about a page."""
    counts: Counter[str] = Counter()
    for lines in per_page_lines:
        counts.update({_norm(ln.text) for ln in lines if len(ln.text.split()) <= MAX_HEADING_WORDS})
    limit = max(MIN_REPEATS, BOILERPLATE_SHARE * len(per_page_lines))
    return {t for t, n in counts.items() if n > limit}


def pdf_page_contexts(doc: pymupdf.Document, source_uri: str, budget: int,
                      count_tokens: TokenCounter) -> dict[int, PageContext]:
    """The context builder of every page of ``doc``: one pass over the pages for their lines (so that
    running headers can be told from headings), facts from the first pages."""
    facts = document_facts(doc, source_uri).parts()
    known = {_norm(f) for f in facts}
    per_page: list[list[_Line]] = []
    for pno in range(doc.page_count):
        try:
            per_page.append(styled_lines(doc.load_page(pno)))
        except Exception:  # the page's own extraction reports what is wrong with it
            per_page.append([])
    running = running_lines(per_page)
    contexts = {}
    for pno, lines in enumerate(per_page):
        headings = [h for h in page_headings(lines) if _norm(h.text) and _norm(h.text) not in running | known]
        contexts[pno] = PageContext(facts, headings, pno, budget, count_tokens)
    return contexts
