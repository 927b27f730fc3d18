"""OCR with tesseract (through pytesseract): text, word boxes, confidence, and page rotation.

Scans come in any orientation; tesseract reads upright text only, so rotation is detected
(OSD, or by trying the four right angles) when the upright reading looks poor. Word boxes are
always given in the coordinates of the image as passed in, whatever rotation was applied.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pytesseract
from PIL import Image

from mmrag_core.ingest.extract.chunking import Word

Rotation = Literal["osd", "try", "off"]
RIGHT_ANGLES: tuple[int, ...] = (0, 90, 180, 270)
# An upright reading with fewer words than this is not trusted, whatever its confidence.
MIN_WORDS_FOR_NO_ROTATION = 5

# Transposes that turn an image clockwise by the given angle.
_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


class OcrUnavailable(RuntimeError):
    """Tesseract (or the requested language data) is not installed: a setup problem, not bad input."""


@dataclass
class OcrResult:
    """What tesseract read. ``rotation`` is the clockwise angle the image was turned before
    reading; ``words`` are in the coordinates of the image as given (not the turned one)."""

    text: str
    confidence: float | None
    rotation: int = 0
    words: list[Word] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Total word confidence: how much trustworthy text a reading holds (used to pick rotations)."""
        return (self.confidence or 0.0) * len(self.words)


def ocr_image(
    img: Image.Image,
    lang: str = "eng",
    rotation: Rotation = "osd",
    min_confidence_for_no_rotation: float = 70.0,
) -> OcrResult:
    """OCR ``img``. ``rotation``: "off" reads it as is; "osd" reads it upright and, if that reading
    is poor, asks tesseract's orientation detection (or, when that fails, tries all four angles);
    "try" reads it at 0/90/180/270 degrees and keeps the best reading. An image in which the
    upright reading finds no word at all (a photo, a blank page) is not turned: turned text still
    reads as words, if garbage ones.

    Raises ``OcrUnavailable`` when tesseract or the language data is missing.
    """
    if rotation not in ("osd", "try", "off"):
        raise ValueError(f"rotation must be 'osd', 'try' or 'off', got {rotation!r}")
    img = _ocr_ready(img)
    upright = _read(img, lang, 0)
    if rotation == "off" or not upright.words:
        return upright
    if rotation == "osd":
        if _good_enough(upright, min_confidence_for_no_rotation):
            return upright
        angle = _osd_rotation(img)
        if angle == 0:
            return upright
        if angle is not None:
            return _best([upright, _read(img, lang, angle)])
    return _best([upright] + [_read(img, lang, a) for a in RIGHT_ANGLES[1:]])


def _good_enough(result: OcrResult, min_confidence: float) -> bool:
    return (
        result.confidence is not None
        and result.confidence >= min_confidence
        and len(result.words) >= MIN_WORDS_FOR_NO_ROTATION
    )


def _best(results: Sequence[OcrResult]) -> OcrResult:
    """The reading with the highest total confidence; the earliest (least turned) on ties."""
    return max(results, key=lambda r: r.score)


def eight_bit(img: Image.Image) -> Image.Image:
    """Deep grey images (16/32-bit, float: scanners write them) scaled to 8 bits by their
    maximum; other modes unchanged. Pillow's own conversion clips them to white instead."""
    if not img.mode.startswith(("I", "F")):
        return img
    deep = img.convert("F")
    _, top = cast(tuple[float, float], deep.getextrema())
    scale = 255.0 / top if top > 255 else 1.0
    return deep.point(lambda v: v * scale).convert("L")


def _ocr_ready(img: Image.Image) -> Image.Image:
    """Tesseract wants plain grey or RGB pixels; transparent areas become white, not black."""
    img = eight_bit(img)
    if img.mode in ("1", "L", "RGB"):
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _osd_rotation(img: Image.Image) -> int | None:
    """Clockwise angle that makes the text upright per tesseract OSD; None when OSD cannot tell
    (it refuses pages with too few characters)."""
    try:
        osd = _tesseract(pytesseract.image_to_osd, img, output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractError:
        return None
    angle = int(osd.get("rotate", 0)) % 360
    return angle if angle in RIGHT_ANGLES else None


def _read(img: Image.Image, lang: str, angle: int) -> OcrResult:
    """One tesseract pass over ``img`` turned clockwise by ``angle``."""
    turned = img.transpose(_CLOCKWISE[angle]) if angle else img
    data = _tesseract(pytesseract.image_to_data, turned, lang=lang, output_type=pytesseract.Output.DICT)
    words: list[Word] = []
    keyed: list[tuple[tuple[int, int, int], str]] = []
    confs: list[float] = []
    for i, raw in enumerate(data["text"]):
        text = str(raw).strip()
        if int(data["level"][i]) != 5 or not text:
            continue
        box = (
            float(data["left"][i]),
            float(data["top"][i]),
            float(data["left"][i] + data["width"][i]),
            float(data["top"][i] + data["height"][i]),
        )
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        words.append(Word(*_unturn_box(box, angle, img.size), text=text, line=key))
        keyed.append((key, text))
        conf = float(data["conf"][i])
        if conf >= 0:
            confs.append(conf)
    confidence = sum(confs) / len(confs) if confs else None
    return OcrResult(text=_layout_text(keyed), confidence=confidence, rotation=angle, words=words)


def _unturn_box(
    box: tuple[float, float, float, float], angle: int, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Map a box from the image turned clockwise by ``angle`` back to the original image (W x H)."""
    u0, v0, u1, v1 = box
    w, h = size
    if angle == 90:
        return v0, h - u1, v1, h - u0
    if angle == 180:
        return w - u1, h - v1, w - u0, h - v0
    if angle == 270:
        return w - v1, u0, w - v0, u1
    return box


def _layout_text(words: Sequence[tuple[tuple[int, int, int], str]]) -> str:
    """Words, keyed by (block, paragraph, line), joined by spaces, lines by newlines, paragraphs
    and blocks by a blank line."""
    out: list[str] = []
    prev: tuple[int, int, int] | None = None
    for key, text in words:
        if prev is not None:
            if key[:2] != prev[:2]:
                out.append("\n\n")
            elif key != prev:
                out.append("\n")
            else:
                out.append(" ")
        out.append(text)
        prev = key
    return "".join(out)


def _tesseract(fn: Callable[..., Any], img: Image.Image, **kwargs: Any) -> Any:
    """Call a pytesseract function, turning a missing binary or language into ``OcrUnavailable``."""
    # One tesseract thread per process (pytesseract hands os.environ to each tesseract subprocess): extraction
    # runs one process per core, and tesseract's OpenMP threads only fight each other then (~2x slower). Set
    # where tesseract runs, not at import: a process that only imports this module (the flow's driver, whose
    # environment Ray's workers and encoder actors inherit) keeps its torch and faiss threads.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        return fn(img, **kwargs)
    except pytesseract.TesseractNotFoundError as exc:
        raise OcrUnavailable(
            "tesseract is not installed or not on PATH; install it (Debian/Ubuntu: "
            "apt-get install tesseract-ocr) or set pytesseract.pytesseract.tesseract_cmd"
        ) from exc
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc) or "Error opening data file" in str(exc):
            lang = kwargs.get("lang", "osd")
            raise OcrUnavailable(
                f"tesseract language data for {lang!r} is missing; install it "
                f"(Debian/Ubuntu: apt-get install tesseract-ocr-<lang>): {exc}"
            ) from exc
        raise
