"""What a document says it is: its title, and for filings the issuer, the form and the period, as the
metadata and the first pages state them ("FORM 10-K", "For the fiscal year ended December 31, 2018", the
line above "(Exact name of registrant as specified in its charter)"). Nothing here knows any company:
documents that are not filings simply have no issuer, form or period."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pymupdf

from mmrag_core.ingest.extract.context.page_headings import LETTER, MAX_HEADING_WORDS, body_size, styled_lines
from mmrag_core.storage.names import file_stem

# Pages read for the document's facts (cover page and the one after: some covers spill over).
FACT_PAGES = 2

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
    stem = file_stem(source_uri)
    name = " ".join(re.sub(r"[_\-.+]+", " ", stem).split())
    return name or None


def _metadata_title(doc: pymupdf.Document) -> str | None:
    raw = ((doc.metadata or {}).get("title") or "").strip()
    title = " ".join(_CONVERTER_PREFIX.sub("", raw).split())
    if len(LETTER.findall(title)) < 3 or _JUNK_TITLE.search(title):
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
    lines = [ln for ln in lines if len(LETTER.findall(ln.text)) >= 3]
    if not lines:
        return None
    body = body_size(lines)
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
    letters = len(LETTER.findall(line))
    digits = sum(ch.isdigit() for ch in line)
    return (1 <= len(words) <= 8 and letters >= 2 and digits <= letters and ":" not in line
            and not line.startswith("(") and not _FILE_NUMBER.search(line))


def _covered(title: str, parts: Sequence[str]) -> bool:
    """True when every word with letters in ``title`` already appears in ``parts``."""
    have = {w.lower() for p in parts for w in re.findall(r"\w+", p)}
    words = [w.lower() for w in re.findall(r"\w+", title) if LETTER.search(w) or len(w) >= 4]
    return bool(words) and all(w in have for w in words)


def _clip_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])
