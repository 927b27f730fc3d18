"""Table-shaped pages as rows: words regrouped by visual row, cells split at wide gaps, and each amount
labelled with the column header above it.

A PDF's text stream rarely follows a table's rows: a financial statement often comes out one cell per
line ("Net cash provided by operating activities", "6,439", "6,240", ...), so a chunk holds amounts with
neither their line item nor their year. On a page laid out as a table this module rewrites the words so
that chunk text reads ``Net cash provided by operating activities | 2018: 6,439 | 2017: 6,240``.

It works from the word boxes alone (no ruling lines needed, which most statements lack), costs a sort
and a few passes over the page's words, and leaves pages that do not look like tables untouched.
Added words (``|`` between cells, ``2018:`` labels) carry the box of the cell they belong to, so chunk
boxes stay on the page, and are counted by the chunker's tokenizer like any other word.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from mmrag_core.ingest.extract.chunking import Word

# An amount: 1,488  (370)  $5,363  12.3%  -4.5  0.375  and a dash standing for nil.
_AMOUNT = re.compile(r"^[(\-–−]?[$€£¥]?\(?\d[\d,]*(?:\.\d+)?\)?%?\)?$|^[$€£¥]?[—–-]$")
_YEAR = re.compile(r"^(?:FY)?(?:19|20)\d{2}$")
# Cells of only these characters belong to their neighbour: "$ 5,363" or "12.3 %".
_LEADING_SYMBOL = re.compile(r"^[$€£¥(]+$")
_TRAILING_SYMBOL = re.compile(r"^[%)]+$")

# A page is a table when at least this many rows hold amounts beside a label or another amount ...
MIN_DATA_ROWS = 3
# ... and those rows hold at least this share of the page's words.
MIN_DATA_WORD_SHARE = 0.25
# A column header label longer than this is cut (labels are repeated before every amount).
MAX_LABEL_WORDS = 4
# A cell with more words than this, in a row without amounts, is running text rather than a table cell.
PROSE_CELL_WORDS = 8
# How far up (in rows) a data row looks for its column headers.
MAX_HEADER_DISTANCE = 60


@dataclass(frozen=True)
class _Cell:
    words: tuple[Word, ...]
    text: str
    x0: float
    x1: float
    is_amount: bool

    @classmethod
    def of(cls, words: Sequence[Word]) -> _Cell:
        text = " ".join(w.text for w in words)
        compact = text.replace(" ", "")
        return cls(tuple(words), text, min(w.x0 for w in words), max(w.x1 for w in words),
                   bool(_AMOUNT.match(compact)) and not _YEAR.match(compact))


@dataclass(frozen=True)
class _Row:
    cells: tuple[_Cell, ...]
    n_words: int
    # Amounts beside a label or beside each other: a table line, not a sentence that has a number.
    is_data: bool

    @classmethod
    def of(cls, cells: Sequence[_Cell]) -> _Row:
        return cls(tuple(cells), sum(len(c.words) for c in cells),
                   len(cells) >= 2 and any(c.is_amount for c in cells))


def visual_rows(words: Sequence[Word]) -> list[list[Word]]:
    """Words grouped into rows of the page (vertical centres within about half a line), top to bottom,
    each row left to right."""
    if not words:
        return []
    order = sorted(words, key=lambda w: ((w.y0 + w.y1) / 2, w.x0))
    rows: list[list[Word]] = [[order[0]]]
    anchor = (order[0].y0 + order[0].y1) / 2
    for w in order[1:]:
        centre = (w.y0 + w.y1) / 2
        height = max(w.y1 - w.y0, rows[-1][0].y1 - rows[-1][0].y0, 1.0)
        if centre - anchor <= 0.45 * height:
            rows[-1].append(w)
        else:
            rows.append([w])
            anchor = centre
    return [sorted(r, key=lambda w: w.x0) for r in rows]


def _cells(row: list[Word]) -> list[_Cell]:
    """Split a row at gaps wider than about a line height; stray currency and percent signs join their
    number."""
    height = statistics.median(w.y1 - w.y0 for w in row)
    gap = max(height, 5.0)
    groups: list[list[Word]] = [[row[0]]]
    for prev, w in pairwise(row):
        if w.x0 - prev.x1 > gap:
            groups.append([w])
        else:
            groups[-1].append(w)
    for group, after in pairwise(groups):  # "274 $" + "306": the "$" is the next amount's
        while len(group) > 1 and _LEADING_SYMBOL.match(group[-1].text):
            after.insert(0, group.pop())
    merged: list[list[Word]] = []
    pending: list[Word] = []
    for group in groups:
        text = "".join(w.text for w in group)
        if _LEADING_SYMBOL.match(text):
            pending.extend(group)
        elif _TRAILING_SYMBOL.match(text) and merged:
            merged[-1].extend(pending + group)
            pending = []
        else:
            merged.append(pending + group)
            pending = []
    if pending:
        merged.append(pending)
    return [_Cell.of(g) for g in merged]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def _zones(row: _Row) -> dict[int, tuple[float, float]]:
    """The horizontal zone of each amount cell of a data row (by cell index): from halfway to the amount
    on its left to halfway to the amount on its right, so that a header set off-centre over a
    right-aligned column still falls in its column's zone."""
    amounts = [(i, c) for i, c in enumerate(row.cells) if c.is_amount]
    centres = [(c.x0 + c.x1) / 2 for _, c in amounts]
    zones = {}
    for k, (i, c) in enumerate(amounts):
        left = (centres[k - 1] + centres[k]) / 2 if k else c.x0 - (c.x1 - c.x0) - 20
        right = (centres[k] + centres[k + 1]) / 2 if k + 1 < len(amounts) else c.x1 + 20
        zones[i] = (left, right)
    return zones


def _header_for(rows: list[_Row], index: int, zone: tuple[float, float], label_x1: float | None) -> str | None:
    """The column header of the zone ``zone`` of row ``index``: the nearest header-like cell above it, in a
    row without amounts, right of the row's label; with the header cell stacked right above it when the
    nearest one has no year ("Three Months Ended" / "July 29, 2023")."""
    for j in range(index - 1, max(-1, index - 1 - MAX_HEADER_DISTANCE), -1):
        if rows[j].is_data:
            continue
        found = _in_zone(rows[j], zone, label_x1)
        if found is None:
            continue
        words = found.text.split()
        if j > 0 and not rows[j - 1].is_data and not any(_YEAR.match(w.strip(",.")) for w in words):
            above = _in_zone(rows[j - 1], zone, label_x1)
            if above is not None:
                words = above.text.split() + words
        if len(words) > MAX_LABEL_WORDS:
            years = [n for n, w in enumerate(words) if _YEAR.match(w.strip(",."))]
            words = words[max(0, years[-1] + 1 - MAX_LABEL_WORDS):years[-1] + 1] if years else words[:MAX_LABEL_WORDS]
        return " ".join(words)
    return None


def _in_zone(row: _Row, zone: tuple[float, float], label_x1: float | None) -> _Cell | None:
    """The header-like cell of ``row`` (short, not an amount, right of the label column) whose centre lies
    in ``zone``, else the one overlapping it most (a header spanning several columns)."""
    best, best_overlap = None, 0.0
    for c in row.cells:
        if (label_x1 is not None and c.x0 < label_x1) or c.is_amount or len(c.words) > 8:
            continue
        if zone[0] <= (c.x0 + c.x1) / 2 <= zone[1]:
            return c
        ov = _overlap(c.x0, c.x1, *zone)
        if ov > best_overlap:
            best, best_overlap = c, ov
    return best


def is_tabular(rows: list[_Row]) -> bool:
    """Enough rows of amounts, holding enough of the page's words, to read the page by rows."""
    data = [r for r in rows if r.is_data]
    total = sum(r.n_words for r in rows)
    return len(data) >= MIN_DATA_ROWS and total > 0 and sum(r.n_words for r in data) >= MIN_DATA_WORD_SHARE * total


def table_words(words: Sequence[Word]) -> list[Word] | None:
    """The page's words rewritten row by row (``label | header: amount | ...``), or None when the page does
    not look like a table (then its words are chunked as they are). Runs of rows that hold prose (a cell
    of more than a few words, and the rows without amounts after it) keep the words' own reading order, so that two columns
    of text around a table are not interleaved line by line."""
    position = {id(w): n for n, w in enumerate(words)}
    rows = [_Row.of(_cells(r)) for r in visual_rows(words)]
    if not is_tabular(rows):
        return None
    out: list[Word] = []
    prose: list[Word] = []
    for n, row in enumerate(rows):
        if not row.is_data and (prose or any(len(c.words) > PROSE_CELL_WORDS for c in row.cells)):
            prose.extend(w for c in row.cells for w in c.words)
            continue
        if prose:
            out.extend(sorted(prose, key=lambda w: position[id(w)]))
            prose = []
        out.extend(_row_words(rows, n))
    out.extend(sorted(prose, key=lambda w: position[id(w)]))
    return out


def _row_words(rows: list[_Row], n: int) -> list[Word]:
    """Row ``n`` as words on one line: cells separated by ``|``, amounts preceded by their column header."""
    row = rows[n]
    key = ("row", n)
    first = row.cells[0]
    label_x1 = None if first.is_amount else first.x1
    zones = _zones(row) if row.is_data else {}
    out: list[Word] = []
    for i, cell in enumerate(row.cells):
        w0 = cell.words[0]
        if i:
            out.append(Word(w0.x0, w0.y0, w0.x0, w0.y1, "|", key))
        if i in zones:
            header = _header_for(rows, n, zones[i], label_x1)
            if header:
                parts = header.split()
                parts[-1] = parts[-1].rstrip(":,") + ":"
                out.extend(Word(w0.x0, w0.y0, w0.x1, w0.y1, p, key) for p in parts)
        out.extend(Word(w.x0, w.y0, w.x1, w.y1, w.text, key) for w in cell.words)
    return out
