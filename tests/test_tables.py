"""Table-shaped pages read by rows: line items stay with their amounts and each amount with its column
header, on synthetic word boxes and on real statements; prose pages are left alone."""
from __future__ import annotations

import re
from pathlib import Path

import pymupdf
import pytest

from mmrag_core.ingest.extract.chunking import Word, whitespace_token_counter
from mmrag_core.config import Settings
from mmrag_core.ingest.extract.pdf import text_layer_words
from mmrag_core.ingest.extract.tables import table_words, visual_rows
from tests.extraction import extract_as_run


def lines_of(words: list[Word]) -> list[str]:
    lines: dict = {}
    for w in words:
        lines.setdefault(w.line, []).append(w.text)
    return [" ".join(v) for v in lines.values()]


def cell(x0: float, y0: float, text: str) -> list[Word]:
    """A cell's words, 5 points per character, 10 points high, one space between words."""
    out, x = [], x0
    for t in text.split():
        out.append(Word(x, y0, x + 5 * len(t), y0 + 10, t, None))
        x += 5 * len(t) + 3
    return out


def statement() -> list[Word]:
    """A small statement: a title, a header row of years (set a little left of the right-aligned amounts),
    rows of label + amounts, one with a separate "$", one row in a different order in the stream."""
    words = cell(50, 20, "Consolidated Statement of Cash Flows")
    words += cell(50, 40, "(Millions)") + cell(305, 40, "2018") + cell(385, 40, "2017")
    words += cell(50, 60, "Net income") + cell(300, 60, "$") + cell(320, 60, "5,363") + cell(400, 60, "4,869")
    words += cell(50, 80, "Depreciation and amortization") + cell(320, 80, "1,488") + cell(400, 80, "1,544")
    words += cell(400, 100, "(6,240)") + cell(50, 100, "Net cash provided by operating activities") + cell(
        320, 100, "6,439")
    return words


def test_rows_keep_items_with_amounts_and_year_headers() -> None:
    out = table_words(statement())
    assert out is not None
    assert lines_of(out) == [
        "Consolidated Statement of Cash Flows",
        "(Millions) | 2018 | 2017",
        "Net income | 2018: $ 5,363 | 2017: 4,869",
        "Depreciation and amortization | 2018: 1,488 | 2017: 1,544",
        "Net cash provided by operating activities | 2018: 6,439 | 2017: (6,240)",
    ]


def test_added_words_lie_on_their_cells() -> None:
    words = statement()
    out = table_words(words)
    x0, y0 = min(w.x0 for w in words), min(w.y0 for w in words)
    x1, y1 = max(w.x1 for w in words), max(w.y1 for w in words)
    assert all(x0 <= w.x0 <= w.x1 <= x1 and y0 <= w.y0 <= w.y1 <= y1 for w in out)


def test_prose_is_not_a_table() -> None:
    words = []
    for n in range(12):
        words += cell(50, 20 + 14 * n, f"line {n} of a paragraph with a number like {1990 + n} in it and words")
    assert table_words(words) is None


def test_visual_rows_group_by_line_and_sort_left_to_right() -> None:
    words = [Word(200, 10.5, 230, 20, "b", None), Word(10, 10, 40, 20, "a", None), Word(10, 30, 40, 40, "c", None)]
    assert [[w.text for w in r] for r in visual_rows(words)] == [["a", "b"], ["c"]]


@pytest.fixture(scope="module")
def filings(test_data: Path) -> Path:
    return test_data / "financebench-dev" / "pdfs"


def test_real_statement_rows(filings: Path) -> None:
    with pymupdf.open(filings / "3M_2018_10K.pdf") as doc:
        out = table_words(text_layer_words(doc[56]))  # statement of comprehensive income
    assert out is not None
    lines = lines_of(out)
    assert "(Millions) | 2018 | 2017 | 2016" in lines
    assert "Cumulative translation adjustment | 2018: (467) | 2017: 373 | 2016: (331)" in lines


def test_real_quarterly_statement_dates_as_headers(filings: Path) -> None:
    with pymupdf.open(filings / "BESTBUY_2024Q2_10Q.pdf") as doc:
        out = table_words(text_layer_words(doc[4]))
    assert out is not None
    row = next(ln for ln in lines_of(out) if ln.startswith("Net earnings"))
    assert re.fullmatch(r"Net earnings \| July 29, 2023: \$ 274 \| July 30, 2022: \$ 306 \| July 29, 2023: \$ 518 "
                        r"\| July 30, 2022: \$ 647", row)


def test_prose_pages_of_a_paper_are_untouched(test_data: Path) -> None:
    with pymupdf.open(test_data / "pdfs" / "born_digital" / "tracemonkey_pldi09.pdf") as doc:
        assert all(table_words(text_layer_words(doc[p])) is None for p in range(4))


def test_extraction_chunks_table_pages_by_rows_within_the_token_bound(filings: Path, tmp_path: Path) -> None:
    with pymupdf.open(filings / "3M_2018_10K.pdf") as doc:
        one = pymupdf.open()
        one.insert_pdf(doc, from_page=56, to_page=56)
        one.save(tmp_path / "statement.pdf")
    settings = {"page_render_px": 0, "chunk_context": False, "chunk_tokens": 60, "chunk_overlap": 10}
    on = extract_as_run(tmp_path / "statement.pdf", "u", "ab" * 32, Settings(**settings, table_structure=True),
                          whitespace_token_counter)
    off = extract_as_run(tmp_path / "statement.pdf", "u", "ab" * 32, Settings(**settings, table_structure=False),
                           whitespace_token_counter)
    assert on.stats["table_pages"] == 1 and "table_pages" not in off.stats
    text_on = "\n".join(c.text for c in on.items if c.kind == "chunk")
    text_off = "\n".join(c.text for c in off.items if c.kind == "chunk")
    assert "Cumulative translation adjustment | 2018: (467)" in text_on
    assert "Cumulative translation adjustment | 2018" not in text_off
    page = pymupdf.Rect(0, 0, 612, 792)
    for c in on.items:
        if c.kind == "chunk":
            assert len(c.text.split()) <= 60
            assert pymupdf.Rect(c.bbox) in page + (-1, -1, 1, 1)
