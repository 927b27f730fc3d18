"""Bounded work per document: blank pages and frames cost no OCR, a huge page is not rendered big just to find
it blank, and a document past its time budget keeps what was extracted and says which pages it skipped."""
from __future__ import annotations

from pathlib import Path

import pymupdf
from PIL import Image

from mmrag_core.config import Settings
from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from tests.extraction import extract_as_run

SHA = "ab" * 32


def _extract(path: Path, **settings) -> object:
    return extract_as_run(path, str(path), SHA, Settings(page_render_px=0, **settings), whitespace_token_counter)


def test_thousands_of_blank_pages_cost_no_ocr(tmp_path: Path) -> None:
    doc = pymupdf.open()
    for _ in range(2000):
        doc.new_page()
    doc.save(tmp_path / "blank.pdf")
    result = _extract(tmp_path / "blank.pdf")
    assert result.items == [] and result.failures == []
    assert result.stats["pages"] == 2000 and result.stats["ocr_pages"] == 0 and result.stats["seconds_ocr"] == 0


def test_a_huge_blank_page_is_found_blank_without_ocr(tmp_path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page(width=14_400, height=14_400)  # the largest page PDF allows, 200 x 200 inches
    doc.save(tmp_path / "huge.pdf")
    result = _extract(tmp_path / "huge.pdf")
    assert result.items == [] and result.stats["ocr_pages"] == 0


def test_blank_tiff_frames_make_no_items_and_no_ocr(tmp_path: Path) -> None:
    frames = [Image.new("L", (850, 1100), 255) for _ in range(500)]
    frames[0].save(tmp_path / "blank.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    result = _extract(tmp_path / "blank.tif")
    assert result.items == [] and result.failures == []
    assert result.stats["blank_pages"] == 500 and result.stats["ocr_pages"] == 0


def test_a_tiff_frame_with_text_is_still_read(tmp_path: Path, test_data: Path) -> None:
    scan = Image.open(test_data / "ocr" / "tesseract_test" / "phototest.tif").convert("L")
    blank = Image.new("L", scan.size, 255)
    blank.save(tmp_path / "mixed.tif", save_all=True, append_images=[scan], compression="tiff_lzw")
    result = _extract(tmp_path / "mixed.tif")
    assert result.stats["blank_pages"] == 1 and result.stats["ocr_pages"] == 1
    assert {it.page for it in result.items} == {1}
    assert "quick brown dog" in " ".join(it.text for it in result.items if it.kind == "chunk")


def test_past_its_time_budget_a_document_keeps_what_was_read_and_names_what_was_skipped(
        tmp_path: Path, test_data: Path) -> None:
    scanned = test_data / "pdfs" / "scanned" / "scan_multipage_mixed.pdf"
    pages = pymupdf.open(scanned).page_count
    result = _extract(scanned, max_doc_seconds=0.01)  # spent by the first OCR'd page
    budget = [f for f in result.failures if f.stage == "budget"]
    assert len(budget) == 1
    done = int(result.stats["pages"])
    assert 1 <= done < pages and result.stats["pages_skipped"] == pages - done
    assert f"after {done} of {pages} pages" in budget[0].reason and "max_doc_seconds" in budget[0].reason
    assert result.items and {it.page for it in result.items} <= set(range(done))


def test_the_budget_applies_to_tiff_frames_too(tmp_path: Path, test_data: Path) -> None:
    scan = Image.open(test_data / "ocr" / "tesseract_test" / "phototest.tif").convert("L")
    scan.save(tmp_path / "three.tif", save_all=True, append_images=[scan, scan], compression="tiff_lzw")
    result = _extract(tmp_path / "three.tif", max_doc_seconds=0.01)
    assert [f.stage for f in result.failures] == ["budget"]
    assert result.stats["pages"] == 1 and result.stats["pages_skipped"] == 2
