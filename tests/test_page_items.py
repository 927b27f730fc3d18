"""Page-level visual items: every PDF page rendered small as a ``page`` item in the image space, found by an
image query made from a render of that page (tiny real-architecture CLIP, real MiniLM)."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from PIL import Image

from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from mmrag_core.config import Settings
from mmrag_core.ingest.encoder_inputs import image_inputs, text_inputs
from mmrag_core.ingest.record_keys import config_key
from mmrag_core.ingest.extract import ExtractResult
from mmrag_core.storage.items import item_id
from mmrag_core.storage.records import build_record
from mmrag_core.query.engine import QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.extraction import extract_as_run
from tests.published import publish_records
from tests.tiny_models import force_hf_offline, make_tiny_clip, single_torch_thread

SHA = "cd" * 32
# Each page: a sentence and a large shape of its own colour, so that the pages look different.
PAGES = [
    ("The harbour market opens daily at dawn.", (0.9, 0.1, 0.1), "circle"),
    ("Quarterly revenue by region, in millions.", (0.1, 0.6, 0.1), "rect"),
    ("Notes on the survey of mountain lakes.", (0.1, 0.2, 0.9), "stripes"),
]


def make_pdf(path: Path, rotate_last: bool = False, blank_page: bool = False) -> Path:
    """A PDF with the pages of ``PAGES`` (the last one turned by /Rotate 90 when asked, and a blank page
    after them when asked)."""
    doc = pymupdf.open()
    for text, colour, shape in PAGES:
        page = doc.new_page()
        page.insert_text((72, 72), text, fontsize=14)
        if shape == "circle":
            page.draw_circle((300, 420), 180, color=colour, fill=colour)
        elif shape == "rect":
            page.draw_rect(pymupdf.Rect(60, 150, 550, 700), color=colour, fill=colour)
        else:
            for n in range(8):
                page.draw_rect(pymupdf.Rect(60, 150 + 70 * n, 550, 180 + 70 * n), color=colour, fill=colour)
    if rotate_last:
        doc[-1].set_rotation(90)
    if blank_page:
        doc.new_page()
    doc.save(path)
    return path


def extract(path: Path, **settings: Any) -> ExtractResult:
    return extract_as_run(path, str(path), SHA, Settings(**settings), whitespace_token_counter)


def pages_of(result: ExtractResult) -> list:
    return [it for it in result.items if it.kind == "page"]


def test_every_page_gets_a_page_item(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "three.pdf", rotate_last=True, blank_page=True)
    result = extract(path, page_render_px=200)
    assert result.failures == []
    pages = pages_of(result)
    assert [p.page for p in pages] == [0, 1, 2], "one per page; none for the blank page"
    doc = pymupdf.open(path)
    for item in pages:
        rect = doc[item.page].rect
        assert item.id == item_id(SHA, "page", item.page, 0)
        assert item.bbox == (0.0, 0.0, rect.width, rect.height)  # the whole page, displayed frame
        assert (item.text, item.text_source, item.source_uri, item.doc_sha256) == ("", "none", str(path), SHA)
        png = Image.open(io.BytesIO(item.image_png))
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (item.width, item.height)
        assert max(png.size) == 200
        assert (png.width > png.height) == (rect.width > rect.height)  # the rotated page is rendered turned
    assert pages[2].width > pages[2].height and pages[0].width < pages[0].height
    assert result.stats["seconds_page_render"] > 0
    # the page renders go to the image space along with figures; the text space still holds only text
    ids, _ = image_inputs(result.items)
    assert {p.id for p in pages} <= set(ids.tolist())
    assert not {p.id for p in pages} & set(text_inputs(result.items)[0].tolist())


def test_page_items_only_when_something_uses_them(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "three.pdf")
    assert len(pages_of(extract(path))) == 3  # CLIP is on by default
    assert pages_of(extract(path, clip_model="off")) == []
    assert pages_of(extract(path, page_render_px=0)) == []
    assert len(pages_of(extract(path, clip_model="off", caption_enabled=True))) == 3  # pages to caption
    # the render size is part of what keys stored records: changing it re-processes documents
    assert config_key(Settings(page_render_px=256)) != config_key(Settings(page_render_px=320))


def test_scanned_page_gets_a_page_item(test_data: Path) -> None:
    result = extract(test_data / "pdfs" / "scanned" / "scan_huckfinn_ch2_p22.pdf")
    assert result.stats["ocr_pages"] == 1
    (page,) = pages_of(result)
    assert page.page == 0 and max(page.width, page.height) == Settings().page_render_px


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The three-page PDF extracted, embedded (tiny CLIP for the image space, MiniLM for the text space) and
    published through the same code the indexing flow runs."""
    from mmrag_core.models.clip_encoder import ClipEncoder
    from mmrag_core.models.text_encoder import TextEncoder

    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        with single_torch_thread():
            base = tmp_path_factory.mktemp("pages")
            path = make_pdf(base / "three.pdf")
            clip_name = f"local-dir:{make_tiny_clip(base / 'clip')}"
            result = extract(path, clip_model=clip_name)
            text_enc, clip = TextEncoder("all-MiniLM-L6-v2"), ClipEncoder(clip_name, None)
            t_ids, texts = text_inputs(result.items)
            i_ids, pngs = image_inputs(result.items)
            vectors = {"text": (t_ids, text_enc.encode(texts)), "image": (i_ids, clip.encode_images(pngs))}
            record = build_record(SHA, str(path), result.items, vectors, result.failures, "k", result.stats)
            store = Store(base / "store")
            models = {"text": text_enc.describe(), "image": {**clip.describe(), "model_config": None}}
            publish_records(store, [record], models)
            yield {"path": path, "engine": QueryEngine(open_snapshot(store)), "result": result}
    finally:
        mp.undo()


def test_page_items_are_in_the_image_space(snapshot: dict) -> None:
    engine = snapshot["engine"]
    kinds = engine.snapshot.items.column("kind").to_pylist()
    assert kinds.count("page") == len(PAGES)
    assert engine.snapshot.manifest["spaces"]["image"]["count"] == len(image_inputs(snapshot["result"].items)[0])


@pytest.mark.parametrize("page_no", range(len(PAGES)))
def test_image_query_of_a_page_render_finds_the_page(snapshot: dict, page_no: int) -> None:
    # a render at another size than the indexed one, as a user's screenshot of the page would be
    page = pymupdf.open(snapshot["path"])[page_no]
    pix = page.get_pixmap(dpi=100, colorspace=pymupdf.csRGB, alpha=False)
    query = io.BytesIO()
    Image.frombytes("RGB", (pix.width, pix.height), pix.samples).save(query, "PNG")
    hits = snapshot["engine"].search(image=query.getvalue(), k=3)
    top = hits[0]
    assert (top.kind, top.page, top.source_uri) == ("page", page_no, str(snapshot["path"]))
    assert top.bbox == [0.0, 0.0, round(page.rect.width, 2), round(page.rect.height, 2)]
    assert top.ranks == {"image:image": 1} and top.similarities["image:image"] > 0.95
    assert top.similarities["image:image"] > max(h.similarities["image:image"] for h in hits[1:])
