"""PDF extraction on real PDFs: text layer, OCR fallback (rotated scans), figures, provenance."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image

import mmrag_core.ingest.extract.common as extract_common
from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from mmrag_core.config import Settings
from mmrag_core.ingest.extract import ExtractResult
from mmrag_core.storage.items import Item, item_id
from mmrag_core.ingest.extract.ocr import OcrResult, OcrUnavailable
from tests.extraction import extract_as_run

SHA = "ab" * 32


def extract(path: Path, **settings: Any) -> ExtractResult:
    return extract_as_run(path, f"file://{path}", SHA, Settings(**settings), whitespace_token_counter)


def of_kind(result: ExtractResult, kind: str) -> list[Item]:
    return [it for it in result.items if it.kind == kind]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def born_digital(test_data: Path) -> Path:
    return test_data / "pdfs" / "born_digital"


def test_text_layer_chunks_carry_provenance(born_digital: Path) -> None:
    path = born_digital / "financial_statement_notes.pdf"
    result = extract(path, chunk_tokens=120, chunk_overlap=20)

    assert result.failures == []
    assert result.stats["pages"] == 1 and result.stats["text_pages"] == 1 and result.stats["ocr_pages"] == 0
    chunks = of_kind(result, "chunk")
    # besides the chunks: the page's outline (its headings) and its render
    assert len(chunks) >= 3 and [it.kind for it in result.items if it.kind != "chunk"] == ["outline", "page"]
    assert chunks[0].text.startswith("NOTES TO FINANCIAL STATEMENTS\nOctober 31, 2018")
    for ordinal, chunk in enumerate(chunks):
        assert (chunk.page, chunk.ordinal, chunk.text_source) == (0, ordinal, "text_layer")
        assert chunk.id == item_id(SHA, "chunk", 0, ordinal)
        assert chunk.source_uri == f"file://{path}" and chunk.doc_sha256 == SHA
        assert chunk.ocr_confidence is None
        assert len(chunk.text.split()) <= 120
        x0, y0, x1, y1 = chunk.bbox
        assert 0 <= x0 < x1 <= 387 and 0 <= y0 < y1 <= 603  # inside the page (points)
    # same bytes, same items
    assert [it.id for it in extract(path, chunk_tokens=120, chunk_overlap=20).items] == [it.id for it in result.items]


def test_rotated_page_boxes_are_in_the_displayed_frame(born_digital: Path) -> None:
    # the page has /Rotate 90: displayed 792 x 612, text stored in the unrotated 612 x 792 frame
    result = extract(born_digital / "columbia_energy_policy_table_a1.pdf")
    chunks = of_kind(result, "chunk")
    assert chunks and "Renewable hydrogen projects" in " ".join(c.text for c in chunks)
    assert max(c.bbox[2] for c in chunks) > 612  # wide: turned into the landscape frame
    for chunk in chunks:
        x0, y0, x1, y1 = chunk.bbox
        assert 0 <= x0 < x1 <= 792 and 0 <= y0 < y1 <= 612


@pytest.mark.parametrize(
    "pdf, figure_ids",
    [
        ("tracemonkey_pldi09.pdf", ["fig008", "fig019"]),  # vector charts and diagrams
        ("ki67_breast_cancer_mdpi.pdf", ["fig003", "fig004"]),  # raster micrographs
    ],
)
def test_figures_match_the_author_figures(test_data: Path, born_digital: Path, pdf: str, figure_ids: list[str]) -> None:
    gold = {g["id"]: g for g in json.loads((test_data / "figure_captions" / "figure_captions.json").read_text())}
    result = extract(born_digital / pdf, figure_max_side=256)
    figures = of_kind(result, "figure")
    assert result.stats["figures"] == len(figures)
    for case in (gold[i] for i in figure_ids):
        on_page = [f for f in figures if f.page == case["page"]]
        best = max(on_page, key=lambda f: iou(f.bbox, case["figure_bbox"]), default=None)
        assert best is not None and iou(best.bbox, case["figure_bbox"]) > 0.9, case["id"]
        png = Image.open(io.BytesIO(best.image_png))
        assert png.format == "PNG" and png.size == (best.width, best.height)
        assert max(png.size) <= 256 and min(png.size) > 20
        assert best.id == item_id(SHA, "figure", best.page, best.ordinal)


def test_tables_are_not_figures(test_data: Path, tmp_path: Path) -> None:
    # a 10-K page of shaded financial tables, drawn as hundreds of vector boxes
    doc = pymupdf.open(test_data / "financebench-dev" / "pdfs" / "BESTBUY_2023_10K.pdf")
    assert len(doc[51].get_drawings()) > 100
    one_page = pymupdf.open()
    one_page.insert_pdf(doc, from_page=51, to_page=51)
    one_page.save(tmp_path / "tables.pdf")

    result = extract(tmp_path / "tables.pdf")
    assert of_kind(result, "chunk") and not of_kind(result, "figure")


def test_scanned_page_is_ocrd_and_its_scan_is_not_a_figure(test_data: Path) -> None:
    result = extract(test_data / "pdfs" / "scanned" / "scan_huckfinn_ch2_p22.pdf")

    assert result.failures == [] and not of_kind(result, "figure")
    assert result.stats["ocr_pages"] == 1 and result.stats["seconds_ocr"] > 0
    chunks = of_kind(result, "chunk")
    text = " ".join(c.text for c in chunks)
    assert "widow" in text and "garden" in text
    page = pymupdf.open(test_data / "pdfs" / "scanned" / "scan_huckfinn_ch2_p22.pdf")[0].rect
    for chunk in chunks:
        assert chunk.text_source == "ocr" and chunk.ocr_confidence is not None and chunk.ocr_confidence > 80
        x0, y0, x1, y1 = chunk.bbox  # OCR pixels mapped back to points
        assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height


def test_pages_scanned_in_four_orientations(test_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page of this PDF holds the same scan turned by another quarter. To keep the test fast,
    every page is cropped to the top 30% of the upright text (title and first bullets)."""
    doc = pymupdf.open(test_data / "pdfs" / "scanned" / "scan_linn_rotated_4ways.pdf")
    for page in doc:  # where the top of the text lies on each page, as displayed
        w, h = page.rect.width, page.rect.height
        top = [(0, 0, w, 0.3 * h), (0.7 * w, 0, w, h), (0, 0.7 * h, w, h), (0, 0, 0.3 * w, h)][page.number]
        page.set_cropbox(pymupdf.Rect(top))
    doc.save(tmp_path / "linn_tops.pdf")
    rotations: list[int] = []
    real_ocr = extract_common.ocr_image

    def spy(*args: Any, **kwargs: Any) -> OcrResult:
        result = real_ocr(*args, **kwargs)
        rotations.append(result.rotation)
        return result

    monkeypatch.setattr(extract_common, "ocr_image", spy)
    result = extract(tmp_path / "linn_tops.pdf", ocr_dpi=200)

    assert result.failures == [] and result.stats["ocr_pages"] == 4
    assert {90, 180} <= set(rotations)  # upside down and turned left need turning
    for page in range(4):
        text = " ".join(c.text for c in of_kind(result, "chunk") if c.page == page)
        assert "The LinnSequencer" in text and "32 Track MIDI Sequence Recorder" in text, page


def test_ocr_failure_on_one_page_spares_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "A page with a text layer that needs no OCR at all.")
    doc.new_page().draw_circle((300, 400), 100, fill=(0, 0, 0))  # no text layer: it is OCR'd
    doc.save(tmp_path / "two.pdf")

    def broken(*args: Any, **kwargs: Any) -> OcrResult:
        raise RuntimeError("tesseract crashed")

    monkeypatch.setattr(extract_common, "ocr_image", broken)
    result = extract(tmp_path / "two.pdf")

    assert [(f.stage, f.page, f.doc_sha256) for f in result.failures] == [("ocr", 1, SHA)]
    assert "tesseract crashed" in result.failures[0].reason
    assert [(it.kind, it.page) for it in result.items] == [("chunk", 0), ("page", 0)]


def test_blank_page_is_not_ocrd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "A page with a text layer that needs no OCR at all.")
    doc.new_page()
    doc.save(tmp_path / "blank.pdf")

    def unexpected(*args: Any, **kwargs: Any) -> OcrResult:
        raise AssertionError("a blank page was OCR'd")

    monkeypatch.setattr(extract_common, "ocr_image", unexpected)
    result = extract(tmp_path / "blank.pdf")
    assert result.failures == [] and [(it.kind, it.page) for it in result.items] == [("chunk", 0), ("page", 0)]
    assert (result.stats["pages"], result.stats["text_pages"], result.stats["ocr_pages"]) == (2, 1, 0)


def test_missing_tesseract_is_raised_not_recorded(test_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(OcrUnavailable):
        extract(test_data / "pdfs" / "scanned" / "scan_huckfinn_ch2_p22.pdf")


def test_complete_pdf_with_a_broken_xref_is_indexed(born_digital: Path, tmp_path: Path) -> None:
    # a wrong startxref offset: pymupdf repairs it, and nothing is missing (the file ends in %%EOF)
    data = (born_digital / "financial_statement_notes.pdf").read_bytes()
    cut = data.rindex(b"startxref")
    (tmp_path / "sloppy.pdf").write_bytes(data[:cut] + b"startxref\n123\n%%EOF\n")

    result = extract(tmp_path / "sloppy.pdf")
    assert result.failures == [] and of_kind(result, "chunk")
