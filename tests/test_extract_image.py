"""Image-file extraction: OCR text, thumbnails, EXIF orientation, multi-page TIFF."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from mmrag_core.config import Settings
from mmrag_core.ingest.extract import ExtractResult
from mmrag_core.storage.items import Item, item_id
from tests.extraction import extract_as_run
from tests.textmetrics import cer

SHA = "cd" * 32
EXIF_ORIENTATION = 0x0112


def extract(path: Path, **settings: Any) -> ExtractResult:
    return extract_as_run(path, str(path), SHA, Settings(**settings), whitespace_token_counter)


def of_kind(result: ExtractResult, kind: str) -> list[Item]:
    return [it for it in result.items if it.kind == kind]


@pytest.fixture(scope="module")
def tesseract_test(test_data: Path) -> Path:
    return test_data / "ocr" / "tesseract_test"


def test_scanned_text_image(tesseract_test: Path) -> None:
    result = extract(tesseract_test / "phototest.tif")

    assert result.failures == []
    assert result.stats["pages"] == 1 and result.stats["ocr_pages"] == 1
    (image,) = of_kind(result, "image")
    assert image.id == item_id(SHA, "image", 0, 0) and image.page == 0
    assert image.bbox == (0, 0, 640, 480)  # pixels of the image file
    assert image.text_source == "ocr" and image.ocr_confidence is not None and image.ocr_confidence > 85
    assert cer(image.text, (tesseract_test / "phototest.gold.txt").read_text()) < 0.02
    thumb = Image.open(io.BytesIO(image.image_png))
    assert thumb.format == "PNG" and thumb.size == (image.width, image.height) == (512, 384)
    chunks = of_kind(result, "chunk")
    assert chunks and all(c.text_source == "ocr" and c.page == 0 for c in chunks)
    assert "quick brown dog" in chunks[0].text


def test_photo_without_text(test_data: Path) -> None:
    result = extract(test_data / "images" / "coral" / "parrot.jpg", figure_max_side=128)

    assert result.failures == [] and [it.kind for it in result.items] == ["image"]
    image = result.items[0]
    assert (image.text, image.text_source, image.ocr_confidence) == ("", "none", None)
    assert max(image.width, image.height) == 128
    assert Image.open(io.BytesIO(image.image_png)).mode == "RGB"


def test_exif_orientation_is_applied(tesseract_test: Path, tmp_path: Path) -> None:
    # stored turned a quarter left, with the EXIF tag that tells viewers to turn it back right
    stored = Image.open(tesseract_test / "phototest.tif").convert("L").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)

    result = extract(tmp_path / "phone.jpg", ocr_rotation="off")
    (image,) = of_kind(result, "image")
    assert image.bbox == (0, 0, 640, 480)  # upright size
    assert cer(image.text, (tesseract_test / "phototest.gold.txt").read_text()) < 0.03


def test_sixteen_bit_scan_is_scaled_not_clipped(tesseract_test: Path, tmp_path: Path) -> None:
    grey = Image.open(tesseract_test / "phototest.tif").convert("L")
    deep = grey.convert("I").point(lambda v: v * 257).convert("I;16")  # 0..255 -> 0..65535
    deep.save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")

    (image,) = of_kind(extract(tmp_path / "deep.png"), "image")
    assert cer(image.text, (tesseract_test / "phototest.gold.txt").read_text()) < 0.02
    thumb = Image.open(io.BytesIO(image.image_png))
    assert thumb.mode == "L" and thumb.getextrema() == (0, 255)


def test_each_tiff_page_is_a_page(tesseract_test: Path, test_data: Path, tmp_path: Path) -> None:
    text_page = Image.open(tesseract_test / "phototest.tif").convert("L")
    photo = Image.open(test_data / "images" / "coral" / "cat.bmp").convert("L")
    text_page.save(tmp_path / "two.tif", save_all=True, append_images=[photo])

    result = extract(tmp_path / "two.tif")

    assert result.failures == [] and result.stats["pages"] == 2
    images = of_kind(result, "image")
    assert [im.page for im in images] == [0, 1]
    assert images[0].id != images[1].id
    assert "quick brown dog" in images[0].text and images[1].text == ""
    assert {c.page for c in of_kind(result, "chunk")} == {0}


def test_transparent_png_keeps_its_alpha(tmp_path: Path) -> None:
    Image.new("RGBA", (300, 200), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    (image,) = extract(tmp_path / "clear.png").items
    assert Image.open(io.BytesIO(image.image_png)).mode == "RGBA"
