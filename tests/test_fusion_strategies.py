"""Query strategies (late, early, cascade, unified), per-page dedup and metadata filters applied inside the
FAISS search, through the engine, the CLI, the Prefect task and the HTTP service.

Two published snapshots: the shared query corpus (tests/query_corpus.py: real MiniLM chunks, three images of
a tiny real-architecture CLIP in one image file) and a *designed* one whose image-space vectors are built
from the tiny CLIP's own query vectors, so that the item each strategy must return is unambiguous:

- ``deck.pdf``: three pages of one chunk each (real MiniLM vectors); page 1 carries a figure whose vector IS
  the CLIP text vector of :data:`CASCADE_QUERY`, page 2 a figure orthogonal to it, page 0 none;
- three image files whose vectors are the CLIP text vector of :data:`EARLY_QUERY` (``e_text.png``), the CLIP
  image vector of the query image (``e_image.png``) and their normalised 0.5/0.5 sum (``e_both.png``).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from mmrag_core.config import Settings
from mmrag_core.config.sections import QuerySettings
from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.storage.items import Item, item_id
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.filters import QueryFilters, parse_pages
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.query_corpus import chunk_doc, offline_query_corpus, publish_docs

CASCADE_QUERY = "quarterly revenue growth"
DECK = ["Quarterly revenue grew by twelve percent, driven by strong retail sales in every region.",
        "Regional results are shown in the chart below.",
        "Appendix: tables of the last five years."]
EARLY_QUERY = "a striped pattern"


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(1, -1)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with offline_query_corpus(tmp_path_factory.mktemp("strategies")) as corpus:
        corpus["snapshot"] = open_snapshot(corpus["store"])
        corpus["engine"] = QueryEngine(corpus["snapshot"])
        yield corpus


@pytest.fixture(scope="module")
def designed(corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The designed snapshot (see the module docstring), searched with the same encoders."""
    clip, text_enc = corpus["clip"], corpus["text_enc"]
    store = Store(tmp_path_factory.mktemp("designed") / "store")
    t_cascade = _unit(clip.encode_texts([CASCADE_QUERY]))
    other = _unit(np.random.default_rng(0).standard_normal(t_cascade.shape[1]))
    other = _unit(other - (other @ t_cascade.T) * t_cascade)  # orthogonal: similarity 0
    sha, uri, items, vectors = chunk_doc("deck.pdf", DECK, text_enc, None)
    figures = [Item(item_id(sha, "figure", p, 0), "figure", uri, sha, p, (100.0, 300.0, 400.0, 500.0), "",
                    text_source="none", width=32, height=32, image_png=corpus["pngs"][0]) for p in (1, 2)]
    vectors["image"] = (np.array([f.id for f in figures]), np.concatenate([t_cascade, other]))
    docs = [(sha, uri, items + figures, vectors)]
    query_png = corpus["pngs"][1]
    t, i = _unit(clip.encode_texts([EARLY_QUERY])), _unit(clip.encode_images([query_png]))
    early = {"e_text.png": t, "e_image.png": i, "e_both.png": _unit(0.5 * t + 0.5 * i)}
    images = {}
    for name, vec in early.items():
        isha = hashlib.sha256(name.encode()).hexdigest()
        img = Item(item_id(isha, "image", 0, 0), "image", f"/designed/{name}", isha, 0, (0.0, 0.0, 48.0, 48.0),
                   name, text_source="none", width=48, height=48, image_png=corpus["pngs"][2])
        docs.append((isha, img.source_uri, [img], {"image": (np.array([img.id]), vec)}))
        images[name] = img
    publish_docs(store, docs, corpus["models"])
    snapshot = open_snapshot(store)
    return {"store": store, "snapshot": snapshot, "engine": QueryEngine(snapshot), "deck": items,
            "figures": figures, "images": images, "query_png": query_png, "t": t, "i": i}


# ---------------------------------------------------------------- strategies


@pytest.mark.parametrize("strategy", ["late", "early", "unified"])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_image_query_finds_its_own_image(corpus: dict, strategy: str, which: int) -> None:
    hits = corpus["engine"].search(image=corpus["pngs"][which], k=3, strategy=strategy, dedupe=False)
    assert hits[0].key == corpus["images"][which].id and hits[0].kind == "image"
    assert max(hits[0].similarities.values()) == pytest.approx(1.0, abs=1e-4)


def test_early_fusion_finds_the_item_matching_text_and_image(designed: dict) -> None:
    engine = designed["engine"]
    hits = engine.search(text=EARLY_QUERY, image=designed["query_png"], k=3, strategy="early")
    assert hits[0].key == designed["images"]["e_both.png"].id
    assert hits[0].ranks == {"image:early": 1}
    assert hits[0].similarities["image:early"] == pytest.approx(1.0, abs=1e-4)
    assert all(h.kind != "chunk" for h in hits)  # one vector, searched in the image space only
    # the query vector is the normalised 0.5/0.5 sum: the single-modality items score the same below it
    sims = {h.key: h.similarities["image:early"] for h in hits}
    t_id, i_id = designed["images"]["e_text.png"].id, designed["images"]["e_image.png"].id
    assert sims[t_id] == pytest.approx(sims[i_id], abs=1e-4) and sims[t_id] < 0.999


@pytest.mark.parametrize("weight, name", [(1.0, "e_text.png"), (0.0, "e_image.png")])
def test_early_fusion_weights(designed: dict, weight: float, name: str) -> None:
    engine = QueryEngine(designed["snapshot"], QuerySettings(early_fusion_text_weight=weight))
    hits = engine.search(text=EARLY_QUERY, image=designed["query_png"], k=1, strategy="early")
    assert hits[0].key == designed["images"][name].id
    assert hits[0].similarities["image:early"] == pytest.approx(1.0, abs=1e-4)


def test_cascade_reranks_the_text_shortlist_by_its_pages_images(designed: dict) -> None:
    engine = designed["engine"]
    text_only = engine.search(text=CASCADE_QUERY, k=3, spaces=["text"])
    assert text_only[0].page == 0 and text_only[0].kind == "chunk"  # the text space alone ranks page 0 first
    hits = engine.search(text=CASCADE_QUERY, k=3, strategy="cascade")
    assert [h.page for h in hits] == [1, 2, 0] and all(h.kind == "chunk" for h in hits)
    deck = designed["deck"]
    assert [h.key for h in hits] == [deck[1].id, deck[2].id, deck[0].id]
    # page 1's figure is the query's CLIP text vector: similarity 1; page 2's is orthogonal; page 0 has none
    assert hits[0].similarities["image"] == pytest.approx(1.0, abs=1e-4) and hits[0].ranks["image"] == 1
    assert hits[1].similarities["image"] == pytest.approx(0.0, abs=1e-4) and hits[1].ranks["image"] == 2
    assert "image" not in hits[2].ranks and hits[2].ranks["text"] == 1
    assert hits[0].ranks["text"] > 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_cascade_shortlist_depth(designed: dict) -> None:
    engine = QueryEngine(designed["snapshot"], QuerySettings(cascade_depth=1))
    hits = engine.search(text=CASCADE_QUERY, k=1, strategy="cascade")
    assert len(hits) == 1 and hits[0].page == 0  # the shortlist held page 0 only: nothing to re-rank it against


def test_cascade_needs_query_text(designed: dict) -> None:
    with pytest.raises(ValueError, match="cascade strategy shortlists from the text space"):
        designed["engine"].search(image=designed["query_png"], strategy="cascade")


def test_unified_searches_clip_only(designed: dict) -> None:
    engine = designed["engine"]
    hits = engine.search(text=EARLY_QUERY, k=10, strategy="unified")
    assert hits and all(h.kind != "chunk" and set(h.ranks) == {"image:text"} for h in hits)
    assert hits[0].key == designed["images"]["e_text.png"].id
    both = engine.search(text=EARLY_QUERY, image=designed["query_png"], k=10, strategy="unified")
    assert {s for h in both for s in h.ranks} == {"image:text", "image:image"}
    assert all(h.kind != "chunk" for h in both)


def test_late_fusion_methods(designed: dict) -> None:
    engine = designed["engine"]
    rrf = engine.search(text=EARLY_QUERY, image=designed["query_png"], k=10, strategy="late")
    assert {s for h in rrf for s in h.ranks} >= {"text", "image:text", "image:image"}
    weighted = engine.search(text=EARLY_QUERY, image=designed["query_png"], k=10, fusion="weighted")
    assert {(h.source_uri, h.page) for h in weighted} == {(h.source_uri, h.page) for h in rrf}  # the same pages
    assert [h.score for h in weighted] == sorted((h.score for h in weighted), reverse=True)
    # weighted: at most one point per list (the best of each list scores 1 there)
    assert all(0.0 <= h.score <= len(h.ranks) + 1e-6 for h in weighted)


def test_dedupe_keeps_one_hit_per_page_and_carries_ranks(designed: dict) -> None:
    engine = designed["engine"]
    items = engine.search(text=CASCADE_QUERY, k=20, dedupe=False)
    pages = engine.search(text=CASCADE_QUERY, k=20)
    assert len({(h.source_uri, h.page) for h in items}) == len(pages) < len(items)
    assert len(pages) == len({(h.source_uri, h.page) for h in pages})
    # deck page 1: its chunk (text) and its figure (image:text) merge; the kept hit shows both lists
    page1 = next(h for h in pages if h.source_uri == designed["deck"][0].source_uri and h.page == 1)
    assert {"text", "image:text"} <= set(page1.ranks)
    assert page1.ranks["image:text"] == next(h.ranks["image:text"] for h in items
                                             if h.key == designed["figures"][0].id)


def test_unknown_strategy_or_fusion(corpus: dict) -> None:
    engine = corpus["engine"]
    with pytest.raises(ValueError, match="unknown strategy 'magic'"):
        engine.search(text="x", strategy="magic")
    with pytest.raises(ValueError, match="unknown fusion method"):
        engine.search(text="x", fusion="max")
    with pytest.raises(ValueError, match="spaces selects the ranked lists of late fusion"):
        engine.search(text="x", strategy="cascade", spaces=["text"])


def test_strategy_default_from_settings(designed: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_FUSION_STRATEGY", "cascade")
    settings = Settings(store=designed["store"].uri)
    engine = QueryEngine.from_settings(designed["snapshot"], settings)
    assert engine.strategy == "cascade" and settings.fusion_strategy == "cascade"
    assert engine.search(text=CASCADE_QUERY, k=1)[0].page == 1
    monkeypatch.setenv("MMRAG_FUSION_STRATEGY", "nonsense")
    with pytest.raises(ValueError):
        Settings(store=designed["store"].uri)


# ---------------------------------------------------------------- filters


def test_filter_applies_before_truncation(corpus: dict) -> None:
    """An allowed item ranked beyond the search depth overall is still found: top-k is taken among allowed
    items inside the FAISS search, not cut from an unfiltered top-k."""
    shallow = QueryEngine(corpus["snapshot"], QuerySettings(search_depth=2))
    query = "storm damage closed the bridge"
    full = corpus["engine"].search(text=query, k=10, spaces=["text"])
    last = full[-1]  # the text space's least similar chunk: rank 6 of 6
    assert len(full) == 6 and last.ranks == {"text": 6}
    assert last.key not in {h.key for h in shallow.search(text=query, k=2, spaces=["text"])}
    filters = {"source": last.source_uri, "pages": [last.page, last.page]}
    hits = shallow.search(text=query, k=1, spaces=["text"], filters=filters)
    assert len(hits) == 1 and hits[0].key == last.key and hits[0].ranks == {"text": 1}
    assert hits[0].similarities["text"] == pytest.approx(last.similarities["text"], abs=1e-5)


@pytest.mark.parametrize("filters, check", [
    ({"kind": "image"}, lambda h: h.kind == "image"),
    ({"kind": ["chunk"]}, lambda h: h.kind == "chunk"),
    ({"source": "/corpus/notes"}, lambda h: h.source_uri == "/corpus/notes.pdf"),
    ({"doc": "report"}, lambda h: h.source_uri == "/corpus/report.pdf"),
    ({"pages": "1-2"}, lambda h: 1 <= h.page <= 2),
    ({"pages": [2, 2], "source": ["/corpus/report", "/corpus/notes"]}, lambda h: h.page == 2 and h.kind == "chunk"),
])
def test_filters_restrict_hits(corpus: dict, filters: dict, check: Callable) -> None:
    engine = corpus["engine"]
    hits = engine.search(text="espresso coffee", image=corpus["pngs"][0], k=20, filters=filters, dedupe=False)
    allowed = QueryFilters.parse(filters).mask(corpus["snapshot"].items)
    assert len(hits) == int(allowed.sum()) and all(check(h) for h in hits)


def test_filter_by_sha256_and_no_match(corpus: dict) -> None:
    engine = corpus["engine"]
    sha = corpus["docs"][1][0]
    hits = engine.search(text="coffee", k=10, filters={"doc": [sha]})
    assert hits and all(h.source_uri == "/corpus/notes.pdf" for h in hits)
    assert engine.search(text="coffee", k=10, filters={"doc": "missing.pdf"}) == []
    assert engine.search(text="coffee", k=10, filters={"pages": "7-9"}) == []


def test_filter_selector_forms(corpus: dict) -> None:
    engine = corpus["engine"]
    few = engine.id_filter({"kind": "image"})  # 3 of 9 items: the allowed ids
    many = engine.id_filter({"kind": "chunk"})  # 6 of 9: the excluded ids, the shorter list
    assert few.allow and len(few.ids) == 3 and few.fraction == pytest.approx(3 / 9)
    assert not many.allow and len(many.ids) == 3 and many.fraction == pytest.approx(6 / 9)
    assert engine.id_filter({"kind": "image"}) is few  # computed once per distinct filter
    assert engine.id_filter(None) is None and engine.id_filter({}) is None


@pytest.mark.parametrize("bad, message", [
    ({"colour": "red"}, "unknown filter"),
    ({"kind": "video"}, "unknown kind filter"),
    ({"pages": "two"}, "bad page range"),
    ({"pages": "3-1"}, "empty or negative"),
    ({"source": 5}, "string or a list of strings"),
    (["kind"], "must be an object"),
])
def test_bad_filters(corpus: dict, bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corpus["engine"].search(text="x", filters=bad)


def test_parse_pages() -> None:
    assert parse_pages("3-7") == (3, 7) and parse_pages("4") == (4, 4) and parse_pages(" 2 - ") == (2, 2**31 - 1)
    assert parse_pages("-5") == (0, 5) and parse_pages(6) == (6, 6) and parse_pages([1, 2]) == (1, 2)
    assert parse_pages(None) is None
    for bad in ("-", "a-b", True, [1], 1.5):
        with pytest.raises(ValueError):
            parse_pages(bad)


def test_restriction_combines_filter_and_tombstones() -> None:
    """Allowed ids that are tombstoned stay excluded; both selector forms, on an exact (IDMap2,Flat) index."""
    from mmrag_core.index.tombstones import Restriction, search_index

    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((10, 8)).astype(np.float32)
    index = faiss.index_factory(8, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    index.add_with_ids(vecs, np.arange(100, 110, dtype=np.int64))
    tombstones = np.array([103], dtype=np.int64)
    _, ids = search_index(index, vecs[3:4], 10, exclude_ids=Restriction(np.array([103, 104]), True, tombstones))
    assert [i for i in ids[0] if i >= 0] == [104]
    _, ids = search_index(index, vecs[3:4], 10, exclude_ids=Restriction(np.array([101]), False, tombstones))
    assert sorted(i for i in ids[0] if i >= 0) == [100, 102, 104, 105, 106, 107, 108, 109]


def test_ivf_filter_probes_enough_lists() -> None:
    """On an IVF index, a filter letting few ids through scales nprobe up so that they are all found."""
    from mmrag_core.index.codec import CodecSpec
    from mmrag_core.index.search import IdFilter, SpaceIndex
    from mmrag_core.index.shard_files import OpenShard
    from mmrag_core.index.tombstones import Restriction, search_index

    rng = np.random.default_rng(2)
    centers = rng.standard_normal((32, 16)).astype(np.float32) * 10
    vecs = (centers.repeat(50, axis=0) + rng.standard_normal((1600, 16)).astype(np.float32))
    ids = np.arange(1600, dtype=np.int64)
    index = faiss.index_factory(16, "IVF32,Flat", faiss.METRIC_L2)
    index.train(vecs)
    index.add_with_ids(vecs, ids)
    space = SpaceIndex([OpenShard(None, index, None)], CodecSpec("IVF32,Flat", "l2", nprobe=1), np.empty(0, np.int64),
                       1600)
    allowed = np.array([60, 700, 1550], dtype=np.int64)  # three other clusters than the query's
    query = vecs[:1]
    _, naive = search_index(index, query, 3, 1, Restriction(allowed, True, np.empty(0, np.int64)))
    assert (naive[0] >= 0).sum() < 3  # at the tuned nprobe the allowed ids are not in the probed list
    _, found = space.search(query, 3, IdFilter(allowed, True, 3 / 1600))
    assert sorted(found[0].tolist()) == allowed.tolist()


# ---------------------------------------------------------------- plumbing: CLI, task, HTTP


def test_cli_query_strategy_and_filters(designed: dict, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    store = str(designed["store"].root)
    rc = main(["query", CASCADE_QUERY, "--store", store, "--json", "--strategy", "cascade", "--filter-doc",
               "deck.pdf", "--filter-kind", "chunk", "--pages", "1-2", "-k", "5"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    data = json.loads(out.out)
    assert data["strategy"] == "cascade"
    assert data["filters"] == {"doc": ["deck.pdf"], "kind": ["chunk"], "pages": [1, 2]}
    assert [h["page"] for h in data["hits"]] == [1, 2] and data["hits"][0]["ranks"]["image"] == 1
    rc = main(["query", CASCADE_QUERY, "--store", store, "--pages", "two"])
    assert rc == 2 and "bad page range" in capsys.readouterr().err
    rc = main(["query", CASCADE_QUERY, "--store", store, "--filter-kind", "video"])
    assert rc == 2 and "unknown kind filter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["query", CASCADE_QUERY, "--store", store, "--strategy", "magic"])
    assert exit_info.value.code == 2


def test_query_task_strategy_and_filters(designed: dict) -> None:
    from tasks.query_tasks import query_snapshot

    settings = Settings(store=designed["store"].uri)
    hits = query_snapshot.fn(settings, text=CASCADE_QUERY, k=3, strategy="cascade", filters={"kind": "chunk"})
    assert [h["page"] for h in hits] == [1, 2, 0] and hits[0]["snapshot"] == designed["snapshot"].id
    hits = query_snapshot.fn(settings, text=CASCADE_QUERY, k=3, filters={"pages": "2"})
    assert hits and all(h["page"] == 2 for h in hits)
    with pytest.raises(ValueError, match="unknown strategy"):
        query_snapshot.fn(settings, text="x", strategy="magic")


def test_query_flow_parameters() -> None:
    """The flow exposes strategy and filters as run parameters (the Prefect UI's form)."""
    from flows.query_flow import query_flow

    props = query_flow.parameters.model_dump()["properties"]
    assert "cascade" in props["strategy"]["description"] and "pages" in props["filters"]["description"]


@pytest.fixture(scope="module")
def service(designed: dict) -> Iterator[httpx.Client]:
    from mmrag_core.service import create_app
    from tests.live_server import live_server

    settings = Settings(store=designed["store"].uri, service_poll_seconds=0)
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_http_strategy_and_filters(designed: dict, service: httpx.Client) -> None:
    r = service.post("/query", json={"text": CASCADE_QUERY, "k": 3, "strategy": "cascade",
                                     "filters": {"doc": "deck", "kind": "chunk"}})
    assert r.status_code == 200, r.text
    assert [h["page"] for h in r.json()["hits"]] == [1, 2, 0]
    r = service.post("/query", json={"text": CASCADE_QUERY, "k": 5, "filters": {"pages": "2-2"}})
    assert r.status_code == 200 and {h["page"] for h in r.json()["hits"]} == {2}
    files = {"image": ("q.png", designed["query_png"], "image/png")}
    r = service.post("/query", files=files, data={"text": EARLY_QUERY, "k": "1", "strategy": "early",
                                                  "filters": json.dumps({"kind": "image"})})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["key"] == designed["images"]["e_both.png"].id
    r = service.post("/query", files=files, data={"k": "5", "dedupe": "false", "filters": '{"source": "/designed/"}'})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3
    page = service.get("/").text  # the search page offers the strategies
    assert all(f"<option>{s}</option>" in page for s in ("late", "early", "cascade", "unified"))


@pytest.mark.parametrize("body, status, message", [
    ({"text": "x", "strategy": "magic"}, 422, "unknown strategy"),
    ({"text": "x", "filters": {"colour": "red"}}, 422, "unknown filter"),
    ({"text": "x", "filters": {"pages": "z"}}, 422, "bad page range"),
    ({"text": "x", "filters": ["kind"]}, 422, None),
])
def test_http_bad_strategy_or_filters(service: httpx.Client, body: dict, status: int, message: str | None) -> None:
    r = service.post("/query", json=body)
    assert r.status_code == status, r.text
    if message:
        assert message in r.json()["detail"]


def test_http_bad_multipart_fields(designed: dict, service: httpx.Client) -> None:
    files = {"image": ("q.png", designed["query_png"], "image/png")}
    r = service.post("/query", files=files, data={"filters": "{not json"})
    assert r.status_code == 422 and "JSON object" in r.json()["detail"]
    r = service.post("/query", files=files, data={"strategy": "magic"})
    assert r.status_code == 422 and "unknown strategy" in r.json()["detail"]
    r = service.post("/query", files=files, data={"dedupe": "maybe"})
    assert r.status_code == 422
    r = service.post("/query", files=files, data={"strategy": "cascade"})  # a valid strategy this query cannot run
    assert r.status_code == 400 and "needs query text" in r.json()["detail"]

