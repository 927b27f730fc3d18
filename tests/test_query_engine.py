"""QueryEngine over a small published snapshot: real MiniLM text vectors, tiny real-architecture CLIP."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.items import Item, item_id
from mmrag_core.persist import build_record, read_record, write_record
from mmrag_core.query import Hit, QueryEngine, snippet_of
from mmrag_core.snapshot import open_snapshot
from mmrag_core.store import Store
from tests.published import publish_records
from tests.tiny_models import force_hf_offline, make_tiny_clip, single_torch_thread

Image = pytest.importorskip("PIL.Image")

SENTENCES = [
    "The quarterly revenue grew by twelve percent compared to last year.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "The bridge was closed for repairs after the storm damaged its steel cables.",
    "Our hiking trail climbs steeply through pine forest up to a glacier lake.",
    "The vaccine trial enrolled four thousand volunteers across ten hospitals.",
    "Espresso is brewed by forcing hot water through finely ground coffee beans.",
]


def _png(img) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _images() -> list[bytes]:
    red = Image.new("RGB", (48, 48), (220, 30, 30))
    stripes = Image.fromarray(np.tile(np.repeat(np.array([0, 255], np.uint8), 4), (48, 6))[:, :48, None].repeat(3, 2))
    yy, xx = np.mgrid[0:40, 0:64]
    gradient = Image.fromarray(np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=-1).astype(np.uint8))
    return [_png(red), _png(stripes), _png(gradient)]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Publish a snapshot: two PDFs with 3 text chunks each, one image file with 3 images."""
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        from mmrag_core.models.clip_encoder import ClipEncoder
        from mmrag_core.models.text_encoder import TextEncoder

        base = tmp_path_factory.mktemp("query")
        clip_dir = make_tiny_clip(base / "clip")
        text_enc = TextEncoder("all-MiniLM-L6-v2")
        clip = ClipEncoder(f"local-dir:{clip_dir}", None)
        store = Store(base / "store")

        docs = []
        for d, name in enumerate(["report.pdf", "notes.pdf"]):
            sha = hashlib.sha256(name.encode()).hexdigest()
            uri = f"/corpus/{name}"
            items = []
            for n in range(3):
                text = SENTENCES[3 * d + n]
                items.append(Item(item_id(sha, "chunk", n, 0), "chunk", uri, sha, n,
                                  (72.0, 100.0 + 10 * n, 540.125, 180.0 + 10 * n), text))
            vecs = text_enc.encode([it.text for it in items])
            docs.append((sha, uri, items, {"text": (np.array([it.id for it in items]), vecs)}))
        pngs = _images()
        sha = hashlib.sha256(b"album.png").hexdigest()
        uri = "/corpus/album.png"
        images = [Item(item_id(sha, "image", 0, o), "image", uri, sha, 0, (0.0, 0.0, 48.0, 48.0), f"picture {o}",
                       text_source="none", ordinal=o, width=48, height=48, image_png=png)
                  for o, png in enumerate(pngs)]
        docs.append((sha, uri, images, {"image": (np.array([it.id for it in images]), clip.encode_images(pngs))}))

        records = []
        for sha, uri, items, vectors in docs:
            write_record(store, build_record(sha, uri, items, vectors, [], "mk", {}))
            records.append(read_record(store, sha))
        models = {"text": text_enc.describe(), "image": {**clip.describe(), "model_config": None}}
        publish_records(store, records, models)
        snapshot = open_snapshot(store)
        engine = QueryEngine(snapshot)
        yield {"engine": engine, "snapshot": snapshot, "docs": docs, "pngs": pngs, "images": images, "base": base}
    finally:
        mp.undo()


def test_snapshot_records_models(built: dict) -> None:
    models = built["snapshot"].manifest["models"]
    assert models["text"]["name"] == "all-MiniLM-L6-v2" and models["text"]["dim"] == 384
    assert models["image"]["name"].startswith("local-dir:") and models["image"]["pretrained"] is None
    assert models["image"]["weights_sha256"]


@pytest.mark.parametrize(
    "query, sentence",
    [
        ("How do plants turn light into sugar?", 1),
        ("coffee preparation with pressurized hot water", 5),
        ("storm damage closed the bridge", 2),
    ],
)
def test_text_query_finds_paraphrased_chunk(built: dict, query: str, sentence: int) -> None:
    hits = built["engine"].search(text=query, k=5)
    assert 1 <= len(hits) <= 5
    top = hits[0]
    assert isinstance(top, Hit)
    doc, n = divmod(sentence, 3)
    sha, uri, items, _ = built["docs"][doc]
    assert top.key == items[n].id
    assert top.kind == "chunk"
    assert top.source_uri == uri
    assert top.page == n
    assert top.bbox == [72.0, round(100.0 + 10 * n, 2), 540.12, 180.0 + 10 * n]
    assert top.snippet == SENTENCES[sentence]
    assert top.text_source == "text_layer" and top.ocr_confidence is None
    assert top.ranks["text"] == 1
    assert 0.3 < top.similarities["text"] <= 1.0
    assert top.score == pytest.approx(round(1 / 61, 6))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the CLIP text tower was searched as well
    assert any("image:text" in h.ranks for h in hits)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_image_query_finds_same_image(built: dict, which: int) -> None:
    hits = built["engine"].search(image=built["pngs"][which], k=3)
    want = built["images"][which]
    assert hits[0].key == want.id
    assert hits[0].kind == "image" and hits[0].source_uri == "/corpus/album.png"
    assert hits[0].bbox == [0.0, 0.0, 48.0, 48.0] and hits[0].snippet == f"picture {which}"
    assert hits[0].ranks == {"image:image": 1}
    assert hits[0].similarities["image:image"] == pytest.approx(1.0, abs=1e-4)
    assert all(h.kind == "image" for h in hits)  # only the image space was searched


def test_image_query_from_path(built: dict, tmp_path: Path) -> None:
    path = tmp_path / "q.png"
    path.write_bytes(built["pngs"][1])
    for query in (path, str(path)):
        assert built["engine"].search(image=query, k=1)[0].key == built["images"][1].id


def test_text_and_image_query_fuses_all_lists(built: dict) -> None:
    hits = built["engine"].search(text="espresso coffee", image=built["pngs"][0], k=20)
    spaces = {s for h in hits for s in h.ranks}
    assert spaces == {"text", "image:text", "image:image"}
    ids = [h.key for h in hits]
    assert built["docs"][1][2][2].id in ids and built["images"][0].id in ids
    assert len(ids) == len(set(ids)) == 9  # every item once


def test_k_limits_hits(built: dict) -> None:
    assert len(built["engine"].search(text="anything at all", k=2)) == 2


def test_query_needs_text_or_image(built: dict) -> None:
    with pytest.raises(ValueError, match="text, an image"):
        built["engine"].search()
    with pytest.raises(ValueError):
        built["engine"].search(text="   \n")


def test_undecodable_image_rejected(built: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="could not be decoded"):
        built["engine"].search(image=b"definitely not an image")
    truncated = built["pngs"][2][:40]
    with pytest.raises(ValueError, match="could not be decoded"):
        built["engine"].search(image=truncated)


def test_hit_to_dict(built: dict) -> None:
    d = built["engine"].search(text="vaccine volunteers", k=1)[0].to_dict()
    assert d["kind"] == "chunk" and d["snippet"] == SENTENCES[4] and d["ranks"]["text"] == 1


def test_unavailable_image_model_degrades_to_text(built: dict, caplog: pytest.LogCaptureFixture) -> None:
    snap = built["snapshot"]
    manifest = {**snap.manifest, "models": {**snap.manifest["models"],
                                            "image": {"name": f"local-dir:{built['base'] / 'gone'}",
                                                      "pretrained": None}}}
    engine = QueryEngine(dataclasses.replace(snap, manifest=manifest))
    with caplog.at_level(logging.WARNING, logger="mmrag_core.query"):
        hits = engine.search(text="glacier lake hike", k=3)
    assert hits[0].snippet == SENTENCES[3]
    assert all(set(h.ranks) == {"text"} for h in hits)
    assert any("image space not searched" in r.getMessage() for r in caplog.records)


def test_snippet_of() -> None:
    assert snippet_of("  a\n b\t c ") == "a b c"
    assert snippet_of(None) == ""
    long = "word " * 100
    s = snippet_of(long, limit=20)
    assert len(s) <= 20 and s.endswith("…")


def test_image_only_query_without_image_space_is_a_clear_error(built: dict, tmp_path: Path) -> None:
    snap = built["snapshot"]
    manifest = {**snap.manifest, "models": {**snap.manifest["models"],
                                            "image": {"name": f"local-dir:{built['base'] / 'gone'}",
                                                      "pretrained": None}}}
    engine = QueryEngine(dataclasses.replace(snap, manifest=manifest))
    png = tmp_path / "q.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(png)
    with pytest.raises(ValueError, match="image queries need the image space"):
        engine.search(image=png, k=3)
