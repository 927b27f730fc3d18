"""Financial-statement pages read as rows of (line item, {fiscal year: amount}) with the page's scale.

An extractive answer must quote the row it read and say which column and unit it took, so a page is parsed
into explicit rows rather than searched as flat text. Rows come from the table rewriting of
``ingest.extract.tables`` (``label | 2018: 1,577 | 2017: 1,373``), applied to the PDF's word boxes when
the file can be opened, else to a source's own text (index chunks hold rows in that same form).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from mmrag_core.ingest.extract.tables import table_words

_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")
_AMOUNT = re.compile(r"^\$?\s*\(?\s*\$?\s*-?\d[\d,]*(?:\.\d+)?\s*\)?\s*%?$|^\$?\s*[—–-]$")
_MULTI = re.compile(r"\$?\s*\(?-?\d[\d,]*(?:\.\d+)?\)?%?")
_SCALE = re.compile(r"\b(?:in|of)?\s*(thousands|millions|billions|million|billion|thousand)\b", re.I)
# Matched against the page head with spaces removed ("Balance Shee t" happens).
_KINDS = (
    ("balance", re.compile(r"balancesheet|financialposition|financialcondition", re.I)),
    ("cashflow", re.compile(r"statements?ofcashflow|cashflowsstatement", re.I)),
    ("income", re.compile(r"statements?of(?:consolidated)?(?:comprehensive)?(?:income|operations|earnings)"
                          r"|incomestatement", re.I)),
)
_CONTINUED = re.compile(r"\b(?:of|to|and|for|in|from|by|on|the|net)\s*$|[,—–-]\s*$", re.I)
SCALES = {"thousand": 1e3, "thousands": 1e3, "million": 1e6, "millions": 1e6, "billion": 1e9, "billions": 1e9}


@dataclass(frozen=True)
class Row:
    """One line item: its label, its amounts by fiscal year (as printed, with the parsed number), the line."""

    label: str
    values: dict[int, tuple[str, float]]
    line: str


@dataclass
class StatementPage:
    """A source page read as statement rows. ``kind`` is balance / income / cashflow / other (from its title),
    ``scale`` the multiplier of its amounts (1e6 for "in millions"; 1.0 when the page states none)."""

    source: int  # 1-based source number, as cited
    uri: str
    page: int  # 0-based
    kind: str
    scale: float
    scale_word: str
    rows: list[Row] = field(default_factory=list)
    text: str = ""


def parse_amount(text: str) -> float | None:
    """``$ (1,577)`` -> -1577.0, ``—`` -> 0.0, ``12.3%`` -> 12.3; None when ``text`` is not one amount."""
    t = text.replace(" ", "")
    if not _AMOUNT.match(t):
        return None
    if re.fullmatch(r"\$?[—–-]", t):
        return 0.0
    negative = "(" in t or t.lstrip("$").startswith("-")
    digits = re.sub(r"[^\d.]", "", t)
    try:
        value = float(digits)
    except ValueError:
        return None
    return -value if negative else value


def page_lines(path: str | Path, page: int) -> list[str]:
    """The page's text lines, table rows rewritten as ``label | header: amount | ...`` (pymupdf)."""
    import pymupdf

    from mmrag_core.ingest.extract.pdf import text_layer_words

    with pymupdf.open(str(path)) as doc:
        if not 0 <= page < doc.page_count:
            return []
        words = text_layer_words(doc[page])
    rewritten = table_words(words)
    if rewritten is None:
        rewritten = words
    return [" ".join(w.text for w in g) for _, g in groupby(rewritten, key=lambda w: w.line)]


def _kind(lines: list[str]) -> str:
    head = "".join(lines[:12]).replace(" ", "")
    for kind, pattern in _KINDS:
        if pattern.search(head):
            return kind
    return "other"


def _scale(lines: list[str]) -> tuple[float, str]:
    for line in lines[:15]:
        low = line.lower()
        if ("million" in low or "thousand" in low or "billion" in low) and len(low) < 160:
            m = _SCALE.search(low)
            if m and ("(" in low or "$" in low or low.strip().startswith(("in ", "dollars", "amounts"))):
                word = m.group(1).rstrip("s")
                return SCALES[word], word
    return 1.0, ""


def _split_cells(line: str) -> tuple[str, list[tuple[str | None, str]]]:
    """The label and the (header, amount text) pairs of a row line; ``header`` None when there is none."""
    cells = [c.strip() for c in line.split(" | ")]
    label = "" if parse_amount(cells[0]) is not None else cells[0]
    out: list[tuple[str | None, str]] = []
    for cell in cells[1:] if label else cells:
        head, amount = None, cell
        if ": " in cell:
            head, amount = cell.rsplit(": ", 1)
        if parse_amount(amount) is not None:
            out.append((head, amount))
        else:
            parts = _MULTI.findall(amount)
            if len(parts) > 1 and "".join(parts).replace(" ", "") == amount.replace(" ", ""):
                out.extend((None, p) for p in parts)
    return label, out


def _year_of(header: str | None) -> int | None:
    years = _YEAR.findall(header or "")
    return int(years[-1]) if years and not re.search(r"\$|\d,\d", header or "") else None


def parse_rows(lines: list[str]) -> list[Row]:
    """Rows with amounts; each amount's fiscal year from its column header, else from the page's usual
    order of year columns when the row has that many amounts."""
    split = []
    for prev, line in zip([""] + lines, lines, strict=False):
        if " | " not in line:
            continue
        line_split = _split_cells(line)
        if " | " not in prev and _CONTINUED.search(prev) and line_split[0]:  # a label wrapped onto two lines
            line_split = (f"{prev.strip()} {line_split[0]}", line_split[1])
        split.append((line, *line_split))
    sequences = Counter(tuple(_year_of(h) for h, _ in cells) for _, _, cells in split
                        if len(cells) >= 2 and all(_year_of(h) for h, _ in cells))
    for line in lines:  # a header line of years only: "2019 | 2018 | 2017"
        years = [int(y) for y in _YEAR.findall(line)]
        if len(years) >= 2 and re.fullmatch(r"[\d\s|]+", re.sub(r"\([^)]*\)\s*\|", "", line)):
            sequences[tuple(years)] += 1
    order = sequences.most_common(1)[0][0] if sequences else ()
    rows = []
    for line, label, cells in split:
        if not label or not cells:
            continue
        years = [_year_of(h) for h, _ in cells]
        if not all(years) or len(set(years)) != len(years):
            if len(cells) != len(order):
                continue
            years = list(order)
        if len(set(years)) != len(years):  # year columns repeated per segment: no one value per year
            continue
        values = {y: (a, v) for y, (_, a) in zip(years, cells, strict=True)
                  if y is not None and (v := parse_amount(a)) is not None and a.strip() != str(y)}
        if values:
            rows.append(Row(label, values, line))
    return rows


def read_page(source: int, uri: str, page: int, text: str | None = None) -> StatementPage:
    """Source ``source`` (1-based) read as statement rows, from the PDF at ``uri`` when it opens, else from
    ``text``."""
    path = uri[7:] if uri.startswith("file://") else uri
    lines: list[str] = []
    if path.lower().endswith(".pdf") and Path(path).is_file():
        try:
            lines = page_lines(path, page)
        except Exception:  # a damaged file reads as its text below
            lines = []
    if not lines and text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    scale, word = _scale(lines)
    return StatementPage(source, uri, page, _kind(lines), scale, word, parse_rows(lines), "\n".join(lines))
