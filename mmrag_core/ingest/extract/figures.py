"""Find figures on a PDF page and render them.

A figure is an embedded raster image, or a cluster of vector drawings (charts and diagrams in
papers are usually vector art), that is large enough to matter. Boxes are in the displayed page
frame (``page.rect``); pymupdf reports images and drawings unrotated, so they are turned here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymupdf
from PIL import Image

from mmrag_core.ingest.extract.chunking import Word
from mmrag_core.config import IngestSettings
from mmrag_core.ingest.extract.common import png_thumbnail

# An image covering more than this share of a page with no text layer is the scan of the page
# itself, not a figure on it; a drawing this large is a page background or frame.
PAGE_FILLING_FRACTION = 0.9
# Fewer vector paths than this is a rule, a box or an underline, not a figure.
MIN_VECTOR_PATHS = 8
# Above this many paths, pymupdf's clustering (worse than quadratic: ~7 s for 1500 scattered
# paths) is too slow, and the page's drawings are taken as one figure (maps, plans, dense charts).
MAX_CLUSTERED_PATHS = 1000
# Drawings closer than this (points) belong to one figure: charts leave gaps between their
# parts (panels, legend) for the text labels. With 12, 13 of the 17 figures of the caption test
# set are found (IoU > 0.5); with pymupdf's default of 3, 11.
CLUSTER_GAP = 12
# Boxes overlapping by more than this share of the smaller one are one figure.
MERGE_OVERLAP = 0.5
# Tables, forms and code blocks are drawn boxes full of text (words cover 0.16-0.55 of their area
# in the born-digital test PDFs); charts and diagrams carry sparse labels (0-0.13). The text of
# the former is indexed as chunks already.
MAX_VECTOR_TEXT_COVERAGE = 0.15
# Tables (row shading, rules, cell borders) are all straight axis-parallel strokes and fills;
# charts and diagrams have curves and slanted lines (in the test PDFs: 0.2-0.9 of their paths,
# and 0.0 in every one of the ~100 table clusters of the financebench filings). Bar charts made
# only of rectangles are missed by this rule.
MIN_SHAPED_SHARE = 0.1


@dataclass
class FigureBox:
    """Where a figure is, and the pixels per point it was embedded at (None: vector art)."""

    rect: pymupdf.Rect
    native_zoom: float | None = None


def find_figures(page: pymupdf.Page, words: Sequence[Word], scanned: bool, settings: IngestSettings) -> list[FigureBox]:
    """The page's figures, top to bottom, each once. ``words``: the page's words (displayed frame);
    ``scanned``: the page has no text layer, so a page-filling image is its scan, not a figure."""
    boxes = _raster_boxes(page, scanned, settings) + _vector_boxes(page, words, settings)
    return sorted(_merge(boxes), key=lambda b: (b.rect.y0, b.rect.x0))


def render_figure(page: pymupdf.Page, box: FigureBox, max_side: int) -> tuple[bytes, int, int]:
    """PNG of the figure's area as a viewer shows it (masks, colour spaces, placement and any
    overlaid labels applied), at its embedded resolution and at most ``max_side`` pixels long."""
    rect = box.rect
    zoom = max_side / max(rect.width, rect.height)
    if box.native_zoom is not None:
        zoom = min(zoom, box.native_zoom)
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), clip=rect, colorspace=pymupdf.csRGB, alpha=False)
    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    return png_thumbnail(img, max_side)


def _page_area(page: pymupdf.Page) -> float:
    return max(page.rect.width * page.rect.height, 1.0)


def _displayed(page: pymupdf.Page, rect: pymupdf.Rect) -> pymupdf.Rect:
    """An unrotated-frame rect in the displayed frame, cut to the page."""
    if page.rotation:
        rect = rect * page.rotation_matrix
    return rect & page.rect


def _raster_boxes(page: pymupdf.Page, scanned: bool, settings: IngestSettings) -> list[FigureBox]:
    """Placed images big enough to be figures. Without ``xrefs=True``, which would decode and hash
    every image (4-6x slower); an image placed twice in one spot is joined by ``_merge``."""
    page_area = _page_area(page)
    boxes: list[FigureBox] = []
    for info in page.get_image_info():
        rect = _displayed(page, pymupdf.Rect(info["bbox"]))
        if rect.is_empty:
            continue
        fraction = _area(rect) / page_area
        if (
            info["width"] * info["height"] < settings.figure_min_pixels
            or fraction < settings.figure_min_page_fraction
            or (scanned and fraction > PAGE_FILLING_FRACTION)
        ):
            continue
        boxes.append(FigureBox(rect, max(info["width"], info["height"]) / max(rect.width, rect.height)))
    return boxes


def _vector_boxes(page: pymupdf.Page, words: Sequence[Word], settings: IngestSettings) -> list[FigureBox]:
    page_area = _page_area(page)
    paths = [
        p
        for p in page.get_drawings()
        if p["rect"].width * p["rect"].height < PAGE_FILLING_FRACTION * page_area
    ]
    if len(paths) < MIN_VECTOR_PATHS:
        return []
    if len(paths) > MAX_CLUSTERED_PATHS:
        clusters = [_union([p["rect"] for p in paths])]
    else:
        unrotated = page.rect * page.derotation_matrix if page.rotation else page.rect
        clusters = page.cluster_drawings(
            clip=unrotated, drawings=paths, x_tolerance=CLUSTER_GAP, y_tolerance=CLUSTER_GAP
        )
    boxes = []
    for cluster in clusters:
        rect = _displayed(page, cluster)
        if rect.is_empty or _area(rect) < settings.figure_min_page_fraction * page_area:
            continue
        grown = cluster + (-1, -1, 1, 1)
        members = [p for p in paths if p["rect"] in grown]
        if (
            len(members) >= MIN_VECTOR_PATHS
            and sum(map(_is_shaped, members)) >= MIN_SHAPED_SHARE * len(members)
            and _text_coverage(rect, words) <= MAX_VECTOR_TEXT_COVERAGE
        ):
            boxes.append(FigureBox(rect))
    return boxes


def _is_shaped(path: dict[str, Any]) -> bool:
    """A path with a curve or a slanted line: what charts and diagrams have and tables do not."""
    for item in path["items"]:
        if item[0] in ("c", "qu"):
            return True
        if item[0] == "l" and abs(item[1].x - item[2].x) > 0.5 and abs(item[1].y - item[2].y) > 0.5:
            return True
    return False


def words_inside(rect: pymupdf.Rect, words: Sequence[Word]) -> list[Word]:
    """Words whose centre lies in ``rect``."""
    return [
        w for w in words if rect.x0 <= (w.x0 + w.x1) / 2 <= rect.x1 and rect.y0 <= (w.y0 + w.y1) / 2 <= rect.y1
    ]


def _text_coverage(rect: pymupdf.Rect, words: Sequence[Word]) -> float:
    """Share of ``rect`` covered by the boxes of the words in it."""
    covered = sum((w.x1 - w.x0) * (w.y1 - w.y0) for w in words_inside(rect, words))
    return covered / max(_area(rect), 1e-6)


def _merge(boxes: list[FigureBox]) -> list[FigureBox]:
    """Join boxes that mostly overlap (an image and its mask, a chart drawn over a bitmap)."""
    merged: list[FigureBox] = []
    for box in boxes:
        for other in merged:
            overlap = box.rect & other.rect
            smaller = min(_area(box.rect), _area(other.rect))
            if not overlap.is_empty and _area(overlap) > MERGE_OVERLAP * smaller:
                other.rect = other.rect | box.rect
                if box.native_zoom is None or other.native_zoom is None:
                    other.native_zoom = None  # vector art in it: render at full size
                else:
                    other.native_zoom = max(box.native_zoom, other.native_zoom)
                break
        else:
            merged.append(box)
    return merged


def _area(rect: pymupdf.Rect) -> float:
    return rect.width * rect.height


def _union(rects: list[pymupdf.Rect]) -> pymupdf.Rect:
    """Bounding box of rects, including degenerate ones (a straight line has zero width)."""
    out = pymupdf.Rect(rects[0].tl, rects[0].tl)
    for rect in rects:
        out |= rect.tl
        out |= rect.br
    return out
