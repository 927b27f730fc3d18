"""OCR against real scans with ground truth: accuracy, rotation handling and word boxes."""
from __future__ import annotations

from pathlib import Path

import pytesseract
import pytest
from PIL import Image

from mmrag_core.ingest.extract.chunking import Word
from mmrag_core.ingest.extract.ocr import OcrUnavailable, ocr_image
from tests.textmetrics import cer, edit_distance


@pytest.fixture(scope="module")
def phototest(test_data: Path) -> tuple[Image.Image, str]:
    folder = test_data / "ocr" / "tesseract_test"
    img = Image.open(folder / "phototest.tif")
    img.load()
    return img, (folder / "phototest.gold.txt").read_text()


def test_edit_distance_and_cer() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert cer("a  b\nc", "a b c") == 0.0
    assert cer("", "") == 0.0


def test_phototest_character_error_rate(phototest: tuple[Image.Image, str]) -> None:
    img, gold = phototest
    result = ocr_image(img)
    assert cer(result.text, gold) < 0.02
    assert result.rotation == 0
    assert result.confidence is not None and result.confidence > 85
    assert len(result.words) == len(gold.split())
    # paragraphs survive as blank lines, lines as newlines
    assert result.text.startswith("This is a lot of 12 point text to test the\nocr code")
    assert "\n\nThe quick brown dog" in result.text


@pytest.fixture(scope="module")
def upright_words(phototest: tuple[Image.Image, str]) -> list[Word]:
    return ocr_image(phototest[0], rotation="off").words


@pytest.mark.parametrize(
    "transpose, expected_rotation, mode",
    [
        (Image.Transpose.ROTATE_180, 180, "osd"),
        (Image.Transpose.ROTATE_90, 90, "try"),  # ROTATE_90 turns counter-clockwise
    ],
)
def test_turned_page_is_read_and_boxes_map_back(
    phototest: tuple[Image.Image, str],
    upright_words: list[Word],
    transpose: Image.Transpose,
    expected_rotation: int,
    mode: str,
) -> None:
    img, gold = phototest
    result = ocr_image(img.transpose(transpose), rotation=mode)

    assert result.rotation == expected_rotation
    assert cer(result.text, gold) < 0.02
    # boxes are in the coordinates of the image as given: map the upright boxes the same way
    w, h = img.size
    for up, got in zip(upright_words, result.words, strict=True):
        assert up.text == got.text
        if transpose == Image.Transpose.ROTATE_180:
            expected = (w - up.x1, h - up.y1, w - up.x0, h - up.y0)
        else:  # counter-clockwise quarter turn: (x, y) -> (y, w - x)
            expected = (up.y0, w - up.x1, up.y1, w - up.x0)
        assert got[:4] == pytest.approx(expected, abs=4)


def test_rotation_off_reads_as_is(phototest: tuple[Image.Image, str]) -> None:
    img, gold = phototest
    result = ocr_image(img.transpose(Image.Transpose.ROTATE_180), rotation="off")
    assert result.rotation == 0
    assert cer(result.text, gold) > 0.5


def test_photo_without_text_is_not_turned(test_data: Path) -> None:
    result = ocr_image(Image.open(test_data / "images" / "coral" / "cat.bmp"))
    assert (result.text, result.words, result.confidence, result.rotation) == ("", [], None, 0)


def test_transparent_background_reads_as_white(phototest: tuple[Image.Image, str]) -> None:
    img, gold = phototest
    ink = img.convert("L").point(lambda v: 255 - v)  # opaque where the text is
    rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))
    rgba.putalpha(ink)
    assert cer(ocr_image(rgba, rotation="off").text, gold) < 0.02


def test_missing_tesseract_says_what_to_install(
    phototest: tuple[Image.Image, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(OcrUnavailable, match="tesseract-ocr"):
        ocr_image(phototest[0])


def test_missing_language_is_a_setup_error(phototest: tuple[Image.Image, str]) -> None:
    with pytest.raises(OcrUnavailable, match="language data"):
        ocr_image(phototest[0], lang="xyz")


def test_unknown_rotation_mode_is_refused(phototest: tuple[Image.Image, str]) -> None:
    with pytest.raises(ValueError):
        ocr_image(phototest[0], rotation="sideways")  # type: ignore[arg-type]
