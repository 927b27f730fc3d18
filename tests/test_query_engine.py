"""QueryEngine over a small published snapshot: real MiniLM text vectors, tiny real-architecture CLIP."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from mmrag_core.query.engine import Hit, QueryEngine, snippet_of
from mmrag_core.snapshot.open import open_snapshot
from tests.query_corpus import SENTENCES, publish_query_corpus
from tests.tiny_models import force_hf_offline, one_torch_thread  # noqa: F401 - an autouse fixture

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Publish a snapshot: two PDFs with 3 text chunks each, one image file with 3 images."""
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        base = tmp_path_factory.mktemp("query")
        corpus = publish_query_corpus(base)
        store = corpus["store"]
        snapshot = open_snapshot(store)
        engine = QueryEngine(snapshot)
        yield {"engine": engine, "snapshot": snapshot, "docs": corpus["docs"], "pngs": corpus["pngs"],
               "images": corpus["images"], "base": base}
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
    _sha, uri, items, _ = built["docs"][doc]
    assert top.key == items[n].id
    assert top.kind == "chunk"
    assert top.source_uri == uri
    assert top.page == n
    assert top.bbox == [72.0, round(100.0 + 10 * n, 2), 540.12, 180.0 + 10 * n]
    assert top.snippet == SENTENCES[sentence]
    assert top.text_source == "text_layer" and top.ocr_confidence is None
    assert top.ranks["text"] == 1
    assert 0.3 < top.similarities["text"] <= 1.0
    # reciprocal rank over the lists that found it (the text space; the lexical list when a query word is in it)
    k = built["engine"].settings.rrf_k
    assert top.score == pytest.approx(round(sum(1 / (k + r) for r in top.ranks.values()), 6), abs=1e-6)
    assert set(top.ranks) <= {"text", "lexical", "routed", "image:text"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the CLIP text tower was searched as well
    assert any("image:text" in h.ranks for h in built["engine"].search(text=query, k=20))


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
    hits = built["engine"].search(text="espresso coffee", image=built["pngs"][0], k=20, dedupe=False)
    spaces = {s for h in hits for s in h.ranks}
    assert spaces == {"text", "image:text", "image:image", "lexical", "routed"}  # hybrid and routing: on
    ids = [h.key for h in hits]
    assert built["docs"][1][2][2].id in ids and built["images"][0].id in ids
    assert len(ids) == len(set(ids)) == 9  # every item once
    # by default one hit per page: the album's three images share its page 0
    pages = built["engine"].search(text="espresso coffee", image=built["pngs"][0], k=20)
    assert len(pages) == len({(h.source_uri, h.page) for h in pages}) == 7


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
    manifest = snap.manifest.model_copy(update={"models": {
        **snap.manifest.models, "image": {"name": f"local-dir:{built['base'] / 'gone'}", "pretrained": None}}})
    engine = QueryEngine(dataclasses.replace(snap, manifest=manifest))
    with caplog.at_level(logging.WARNING, logger="mmrag_core.query.engine"):
        hits = engine.search(text="glacier lake hike", k=3)
    assert hits[0].snippet == SENTENCES[3]
    assert all(set(h.ranks) <= {"text", "lexical", "routed"} and "text" in h.ranks for h in hits)
    assert any("image space not searched" in r.getMessage() for r in caplog.records)


def test_snippet_of() -> None:
    assert snippet_of("  a\n b\t c ") == "a b c"
    assert snippet_of(None) == ""
    long = "word " * 100
    s = snippet_of(long, limit=20)
    assert len(s) <= 20 and s.endswith("…")


def test_image_only_query_without_image_space_is_a_clear_error(built: dict, tmp_path: Path) -> None:
    snap = built["snapshot"]
    manifest = snap.manifest.model_copy(update={"models": {
        **snap.manifest.models, "image": {"name": f"local-dir:{built['base'] / 'gone'}", "pretrained": None}}})
    engine = QueryEngine(dataclasses.replace(snap, manifest=manifest))
    png = tmp_path / "q.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(png)
    with pytest.raises(ValueError, match="image queries need the image space"):
        engine.search(image=png, k=3)
