"""A page's headings, from the font information of its text layer: large or bold lines, with the running
headers and footers that repeat on many pages ("Table of Contents") told apart. Kept apart from the
document's facts and from the prefix composition so the layout heuristics can be read and tuned alone."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import pymupdf

# A heading seen on more than this share of the pages (and on more than MIN_REPEATS pages) is a running
# header or footer ("Table of Contents"), not a heading of the page.
BOILERPLATE_SHARE = 0.2
MIN_REPEATS = 3
MAX_HEADING_WORDS = 14

LETTER = re.compile(r"[^\W\d_]")
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)


@dataclass(frozen=True)
class Heading:
    """A heading line of a page and where it starts (top y, PDF points)."""

    y0: float
    text: str


@dataclass(frozen=True)
class StyledLine:
    """A text line with its box, largest font size, and whether it is bold."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    size: float
    bold: bool
    chars: int


def styled_lines(page: pymupdf.Page) -> list[StyledLine]:
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
        lettered = [s for s in spans if LETTER.search(s["text"])]
        bold = bool(lettered) and all(s["flags"] & 16 or _BOLD_FONT.search(s["font"]) for s in lettered)
        rect = pymupdf.Rect(line["bbox"])
        if rotate is not None:
            rect = rect * rotate
        out.append(StyledLine(rect.x0, rect.y0, rect.x1, rect.y1, text, max(s["size"] for s in spans), bold,
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


def body_size(lines: Sequence[StyledLine]) -> float:
    """The font size most of the page's characters are set in."""
    weights: Counter[float] = Counter()
    for ln in lines:
        weights[round(ln.size, 1)] += ln.chars
    return weights.most_common(1)[0][0] if weights else 0.0


def page_headings(lines: Sequence[StyledLine]) -> list[Heading]:
    """Heading lines of a page (from :func:`styled_lines`), top to bottom: short lines with letters, set
    larger than the body text or in bold, starting at the text's left edge or centred (not a column header
    inside a table), and not a table row (no number to their right on the same line). A page without any
    gives its first short line instead."""
    if not lines:
        return []
    body = body_size(lines)
    left, right = min(ln.x0 for ln in lines), max(ln.x1 for ln in lines)
    width = max(right - left, 1.0)
    numbers = [ln for ln in lines if any(ch.isdigit() for ch in ln.text)]
    found = []
    for ln in lines:
        if len(LETTER.findall(ln.text)) < 3 or len(ln.text.split()) > MAX_HEADING_WORDS:
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
        if len(LETTER.findall(first.text)) >= 3 and len(first.text.split()) <= 10:
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


def normalise(text: str) -> str:
    """Compared without case, digits or punctuation ("Page 3 of 40" ~ "Page 4 of 40")."""
    return re.sub(r"[\d\W_]+", " ", text.lower()).strip()


def running_lines(per_page_lines: Sequence[Sequence[StyledLine]]) -> set[str]:
    """Short lines (normalised) that repeat on many pages: running headers and footers ("Table of
    Contents", the company name in every page's header), which say nothing about a page."""
    counts: Counter[str] = Counter()
    for lines in per_page_lines:
        counts.update({normalise(ln.text) for ln in lines if len(ln.text.split()) <= MAX_HEADING_WORDS})
    limit = max(MIN_REPEATS, BOILERPLATE_SHARE * len(per_page_lines))
    return {t for t, n in counts.items() if n > limit}
