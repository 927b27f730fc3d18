"""Small PNG previews of hits: an image, figure or page render from its document's stored record (the downscaled
bytes the image space embedded), else rendered from the source file (a PDF page with the chunk's box marked, a
figure's area, an image file). Kept in a bounded in-memory cache keyed by the item's content id."""
from __future__ import annotations

import io
import threading
from collections import OrderedDict

import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageOps

from mmrag_core.config import Settings
from mmrag_core.ingest.sources import local_path
from mmrag_core.storage.items import ItemKind
from mmrag_core.storage.store import Store, doc_key, storage_options_for

HIGHLIGHT = (255, 196, 0)


class ThumbnailCache:
    """The most recently used ``capacity`` thumbnails."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            png = self._entries.get(key)
            if png is not None:
                self._entries.move_to_end(key)
            return png

    def put(self, key: tuple, png: bytes) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[key] = png
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def png_thumbnail(img: Image.Image, max_side: int) -> tuple:
    """Extraction's thumbnail maker, imported on first use: its module loads pymupdf and tesseract's wrapper,
    1-2 s that ``mmrag serve`` would otherwise spend before it answers."""
    from mmrag_core.ingest.extract.common import png_thumbnail as make

    return make(img, max_side)


def render_thumbnail(store: Store, settings: Settings, row: dict, max_side: int) -> bytes:
    """PNG of the item described by ``row`` (a snapshot items row) at most ``max_side`` pixels long.
    Raises OSError or ValueError when neither the stored record nor the source can give one."""
    if row["kind"] in (ItemKind.FIGURE, ItemKind.IMAGE, ItemKind.PAGE):  # the picture the image space embedded
        stored = _stored_image(store, row)
        if stored is not None:
            return png_thumbnail(Image.open(io.BytesIO(stored)), max_side)[0]
    with local_path(row["source_uri"], storage_options_for(row["source_uri"], settings.s3_endpoint_url)) as path:
        with open(path, "rb") as f:
            is_pdf = f.read(5) == b"%PDF-"
        img = _render_pdf(path, row, max_side) if is_pdf else _open_image(path, row, settings.max_image_pixels)
    return png_thumbnail(img, max_side)[0]


def render_preview(store: Store, settings: Settings, row: dict, max_side: int) -> bytes:
    """PNG of the item's whole page (or image) at most ``max_side`` pixels long, its box outlined: the enlarged
    view of a thumbnail, where the hit sits on its page. Falls back to the stored picture when the source
    cannot be read. Raises OSError or ValueError when neither gives one."""
    try:
        with local_path(row["source_uri"], storage_options_for(row["source_uri"], settings.s3_endpoint_url)) as path:
            with open(path, "rb") as f:
                is_pdf = f.read(5) == b"%PDF-"
            if is_pdf:
                box = None if row["kind"] == ItemKind.PAGE else row.get("bbox")
                img = _render_pdf(path, {**row, "kind": ItemKind.CHUNK, "bbox": box}, max_side)  # box marked
            else:
                img = _open_image(path, {**row, "bbox": None}, settings.max_image_pixels)
                img = _outline(img.convert("RGB"), row.get("bbox"), max_side)
    except (OSError, ValueError):
        if row["kind"] not in (ItemKind.FIGURE, ItemKind.IMAGE, ItemKind.PAGE):
            raise
        stored = _stored_image(store, row)
        if stored is None:
            raise
        img = Image.open(io.BytesIO(stored))
    return png_thumbnail(img, max_side)[0]


def _outline(img: Image.Image, bbox: list[float] | None, max_side: int) -> Image.Image:
    """``img`` with ``bbox`` (pixels) outlined, unless the box is the whole image."""
    if bbox:
        x0, y0, x1, y1 = bbox
        if x1 > x0 and y1 > y0 and (round(x1 - x0), round(y1 - y0)) != img.size:
            ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], outline=HIGHLIGHT,
                                          width=max(2, max(img.size) // 200))
    return img


def placeholder(kind: str, max_side: int) -> bytes:
    """A grey tile naming the item's kind, for items whose picture cannot be produced."""
    img = Image.new("RGB", (max_side, max_side * 3 // 4), (225, 225, 225))
    ImageDraw.Draw(img).text((10, 10), f"{kind}\n(no preview)", fill=(90, 90, 90))
    return png_thumbnail(img, max_side)[0]


def _stored_image(store: Store, row: dict) -> bytes | None:
    key = row.get("item_key")
    if key is None or not store.exists(doc_key(row["doc_sha256"])):
        return None
    with store.open(doc_key(row["doc_sha256"])) as f:
        table = pq.read_table(f, columns=["id", "image_png"])
    match = table.filter(pc.equal(table.column("id"), key))
    return match.column("image_png")[0].as_py() if match.num_rows else None


def _render_pdf(path: str, row: dict, max_side: int) -> Image.Image:
    import pymupdf

    with pymupdf.open(path) as doc:
        if not 0 <= row["page"] < doc.page_count:
            raise ValueError(f"page {row['page']} is not in {row['source_uri']} ({doc.page_count} pages)")
        page = doc[row["page"]]
        bbox = pymupdf.Rect(row["bbox"]) & page.rect if row.get("bbox") else None
        clip = bbox if row["kind"] == ItemKind.FIGURE and bbox and not bbox.is_empty else page.rect
        zoom = max_side / max(clip.width, clip.height, 1.0)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), clip=clip, colorspace=pymupdf.csRGB, alpha=False)
        img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    if row["kind"] not in (ItemKind.FIGURE, ItemKind.PAGE) and bbox and not bbox.is_empty:  # a chunk: mark where it is
        box = [(bbox.x0 - clip.x0) * zoom, (bbox.y0 - clip.y0) * zoom, (bbox.x1 - clip.x0) * zoom,
               (bbox.y1 - clip.y0) * zoom]
        ImageDraw.Draw(img).rectangle(box, outline=HIGHLIGHT, width=max(1, max_side // 128))
    return img


def _open_image(path: str, row: dict, max_pixels: int) -> Image.Image:
    img = Image.open(path)
    if img.width * img.height > max_pixels:
        raise ValueError(f"{row['source_uri']} has more than {max_pixels} pixels (max_image_pixels)")
    if getattr(img, "n_frames", 1) > row["page"]:
        img.seek(row["page"])
    img = ImageOps.exif_transpose(img)
    if row["kind"] == ItemKind.IMAGE and row.get("bbox"):
        x0, y0, x1, y1 = (round(v) for v in row["bbox"])
        if (x1 - x0, y1 - y0) != img.size and x1 > x0 and y1 > y0:
            img = img.crop((x0, y0, x1, y1))
    return img
