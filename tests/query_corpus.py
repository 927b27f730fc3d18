"""A small published snapshot for query tests: two PDFs of three one-sentence chunks (one per page, real
MiniLM vectors) and an image file holding three images (tiny real-architecture CLIP vectors).

``publish_query_corpus(base)`` names the sources ``/corpus/...`` (no files); with ``files=True`` it writes
them under ``base/corpus`` (real PDFs and a PNG) so that they can be rendered."""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.storage.items import Item, item_id
from mmrag_core.storage.records import build_record, read_record, write_record
from mmrag_core.storage.store import Store
from tests.published import publish_records
from tests.tiny_models import force_hf_offline, make_tiny_clip, single_torch_thread

SENTENCES = [
    "The quarterly revenue grew by twelve percent compared to last year.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "The bridge was closed for repairs after the storm damaged its steel cables.",
    "Our hiking trail climbs steeply through pine forest up to a glacier lake.",
    "The vaccine trial enrolled four thousand volunteers across ten hospitals.",
    "Espresso is brewed by forcing hot water through finely ground coffee beans.",
]


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def sample_images() -> list[bytes]:
    from PIL import Image

    red = Image.new("RGB", (48, 48), (220, 30, 30))
    stripes = Image.fromarray(np.tile(np.repeat(np.array([0, 255], np.uint8), 4), (48, 6))[:, :48, None].repeat(3, 2))
    yy, xx = np.mgrid[0:40, 0:64]
    gradient = Image.fromarray(np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=-1).astype(np.uint8))
    return [png_bytes(red), png_bytes(stripes), png_bytes(gradient)]


def chunk_doc(name: str, sentences: list[str], text_enc, folder: Path | None) -> tuple:
    """(sha, uri, items, vectors) of a PDF with one chunk per page; written to ``folder`` when given."""
    sha = hashlib.sha256(name.encode()).hexdigest()
    uri = f"/corpus/{name}"
    boxes = [(72.0, 100.0 + 10 * n, 540.125, 180.0 + 10 * n) for n in range(len(sentences))]
    if folder is not None:
        import pymupdf

        folder.mkdir(parents=True, exist_ok=True)
        uri = str(folder / name)
        with pymupdf.open() as pdf:
            for text, box in zip(sentences, boxes):
                pdf.new_page().insert_textbox(pymupdf.Rect(box), text, fontsize=11)
            pdf.save(uri)
    items = [Item(item_id(sha, "chunk", n, 0), "chunk", uri, sha, n, box, text)
             for n, (text, box) in enumerate(zip(sentences, boxes))]
    vecs = text_enc.encode([it.text for it in items])
    return sha, uri, items, {"text": (np.array([it.id for it in items]), vecs)}


def publish_query_corpus(base: Path, files: bool = False) -> dict:
    """Publish the corpus into ``base/store``; returns the store, documents, images and encoders."""
    from mmrag_core.models.clip_encoder import ClipEncoder
    from mmrag_core.models.text_encoder import TextEncoder

    clip_dir = make_tiny_clip(base / "clip")
    text_enc = TextEncoder("all-MiniLM-L6-v2")
    clip = ClipEncoder(f"local-dir:{clip_dir}", None)
    store = Store(base / "store")
    folder = base / "corpus" if files else None
    docs = [chunk_doc(name, SENTENCES[3 * d:3 * d + 3], text_enc, folder)
            for d, name in enumerate(["report.pdf", "notes.pdf"])]
    pngs = sample_images()
    sha = hashlib.sha256(b"album.png").hexdigest()
    uri = "/corpus/album.png"
    if folder is not None:
        uri = str(folder / "album.png")
        Path(uri).write_bytes(pngs[0])
    images = [Item(item_id(sha, "image", 0, o), "image", uri, sha, 0, (0.0, 0.0, 48.0, 48.0), f"picture {o}",
                   text_source="none", ordinal=o, width=48, height=48, image_png=png)
              for o, png in enumerate(pngs)]
    docs.append((sha, uri, images, {"image": (np.array([it.id for it in images]), clip.encode_images(pngs))}))
    models = {"text": text_enc.describe(), "image": {**clip.describe(), "model_config": None}}
    publish_docs(store, docs, models)
    return {"store": store, "docs": docs, "pngs": pngs, "images": images, "models": models,
            "text_enc": text_enc, "clip": clip, "folder": folder}


def publish_docs(store: Store, docs: list[tuple], models: dict) -> dict:
    """Store ``docs`` ((sha, uri, items, vectors) tuples) and publish them as the next snapshot."""
    records = []
    for sha, uri, items, vectors in docs:
        write_record(store, build_record(sha, uri, items, vectors, [], "mk", {}))
        records.append(read_record(store, sha))
    return publish_records(store, records, models)


@contextmanager
def offline_query_corpus(base: Path, files: bool = False) -> Iterator[dict]:
    """:func:`publish_query_corpus` for a module-scoped fixture: the model hub refused and torch on one thread
    until the block ends."""
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        with single_torch_thread():
            yield publish_query_corpus(base, files)
    finally:
        mp.undo()
