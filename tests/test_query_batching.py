"""Micro-batching of concurrent queries (issue 20, item 2): many queries answered together return each request its
own hits, in order, exactly as the same query searched alone; one request's error fails no other; the service
batches concurrent HTTP requests and still answers each its own query."""
from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mmrag_core.config import Settings
from mmrag_core.query.batched import SearchRequest, length_groups
from mmrag_core.query.engine import QueryEngine
from mmrag_core.service import create_app
from mmrag_core.snapshot.open import open_snapshot
from tests.live_server import live_server
from tests.query_corpus import SENTENCES, offline_query_corpus

# Texts of very different token lengths, so that batched encoding forms several length groups.
TEXTS = [
    "revenue", "coffee", "glacier lake hike", "How do plants turn light into sugar?",
    "Which bridge was closed after the storm damaged its cables, and for how long?",
    "vaccine trial volunteers hospitals", *SENTENCES,
    "A long question about the quarterly revenue growth compared with the previous year, the reasons the company "
    "gives for it, and whether the espresso machines or the hiking equipment sold better in the second half.",
]
FILTERS = [None, {"doc": "report.pdf"}, {"doc": "notes.pdf"}, {"kind": "chunk"}, {"pages": "1-2"},
           {"kind": "image"}]
STRATEGY_SPACES = [("late", None), ("late", ["text"]), ("late", ["lexical", "text"]), ("late", ["image:text"]),
                   ("cascade", None), ("early", None), ("unified", None), (None, None)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with offline_query_corpus(tmp_path_factory.mktemp("batching")) as corpus:
        yield corpus


@pytest.fixture(scope="module")
def engine(corpus: dict) -> QueryEngine:
    settings = Settings(store=corpus["store"].uri)
    return QueryEngine.from_settings(open_snapshot(corpus["store"]), settings).load_models()


def _requests(n: int, seed: int = 0) -> list[SearchRequest]:
    """``n`` varied requests: texts of many lengths, k, filters, strategies and lists, dedupe on and off."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        strategy, spaces = STRATEGY_SPACES[i % len(STRATEGY_SPACES)]
        out.append(SearchRequest(text=TEXTS[i % len(TEXTS)], k=rng.choice([1, 2, 3, 5, 10]), strategy=strategy,
                                 spaces=spaces, filters=rng.choice(FILTERS), dedupe=rng.choice([None, False])))
    return out


def _alone(engine: QueryEngine, r: SearchRequest) -> list | Exception:
    try:
        return engine.search(text=r.text, image=r.image, k=r.k, spaces=r.spaces, strategy=r.strategy,
                             filters=r.filters, fusion=r.fusion, dedupe=r.dedupe)
    except ValueError as e:
        return e


def _same_hits(got: list, want: list) -> None:
    assert [h.id for h in got] == [h.id for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert [h.ranks for h in got] == [h.ranks for h in want]


def test_length_groups_cost_no_more_than_one_call_per_text_or_one_call_for_all() -> None:
    lengths = [39, 50, 18, 39, 27, 77, 61, 38, 18, 98, 56, 38, 22, 49, 27, 11]  # tokens of 16 financebench questions

    def cost(groups: list[list[int]]) -> float:
        return sum(48 + len(g) * max(lengths[i] for i in g) for g in groups)

    groups = length_groups(lengths, 48)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for a, b in zip(groups, groups[1:]):  # consecutive lengths: no group reaches into another's range
        assert max(lengths[i] for i in a) <= min(lengths[i] for i in b)
    alone, together = [[i] for i in range(len(lengths))], [list(range(len(lengths)))]
    assert cost(groups) < min(cost(alone), cost(together))
    assert 1 < len(groups) < len(lengths)
    assert length_groups([40] * 8, 48) == [list(range(8))]  # equal lengths: one call
    assert length_groups([12, 500], 48) == [[0], [1]]  # padding 12 to 500 costs more than a call
    assert length_groups([], 48) == []


def test_search_many_gives_each_request_what_search_gives_it_alone(engine: QueryEngine) -> None:
    requests = _requests(40)
    alone = [_alone(engine, r) for r in requests]
    assert sum(isinstance(a, list) and len(a) > 0 for a in alone) >= 25  # most requests do find something
    together = engine.search_many(requests)
    assert len(together) == len(requests)
    for r, got, want in zip(requests, together, alone):
        if isinstance(want, Exception):
            assert isinstance(got, ValueError) and str(got) == str(want), r
        else:
            assert not isinstance(got, Exception), (r, got)
            _same_hits(got, want)


def test_one_bad_request_fails_no_other(engine: QueryEngine) -> None:
    good = _requests(6, seed=1)
    bad = [SearchRequest(text="revenue", strategy="no-such-strategy"),
           SearchRequest(text="revenue", spaces=["image:image"]),  # a text query cannot feed the image-query list
           SearchRequest(text="   "),  # no text and no image
           SearchRequest(text="revenue", strategy="cascade", spaces=["text"])]  # spaces are late fusion's
    requests = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4], good[5]]
    results = engine.search_many(requests)
    for r, got in zip(requests, results):
        if r in bad:
            assert isinstance(got, ValueError), (r, got)
        else:
            _same_hits(got, _alone(engine, r))


def test_service_batches_concurrent_queries_and_answers_each_its_own(corpus: dict) -> None:
    settings = Settings(store=corpus["store"].uri, service_poll_seconds=0, service_microbatch_wait_ms=30,
                        service_max_queue=64)
    app = create_app(settings)
    requests = _requests(48, seed=2) + [SearchRequest(text=t, k=3) for t in TEXTS]
    requests += [SearchRequest(text=text, image=png, k=4) for png, text in zip(corpus["pngs"], [None, "red", None])]
    start = threading.Barrier(16)

    def ask(client: httpx.Client, r: SearchRequest) -> httpx.Response:
        if r.image is not None:  # answered whole by the encoder thread, alongside the text queries' pipeline
            fields = {"k": str(r.k), **({"text": r.text} if r.text else {})}
            return client.post("/query", files={"image": ("q.png", r.image, "image/png")}, data=fields)
        body = {"text": r.text, "k": r.k, "strategy": r.strategy, "spaces": r.spaces, "filters": r.filters,
                "dedupe": r.dedupe}
        return client.post("/query", json={k: v for k, v in body.items() if v is not None})

    with live_server(app) as url, httpx.Client(base_url=url, timeout=60,
                                               limits=httpx.Limits(max_connections=16)) as client:
        engine = app.state.holder.engine
        expected = [_alone(engine, r) for r in requests]

        def worker(w: int) -> list[tuple[int, httpx.Response]]:
            start.wait()
            return [(n, ask(client, requests[n])) for n in range(w, len(requests), 16)]

        with ThreadPoolExecutor(16) as pool:
            answered = [pair for part in pool.map(worker, range(16)) for pair in part]
        batcher = app.state.batcher
        assert batcher.requests == len(requests)
        assert batcher.batches < len(requests)  # concurrent requests were answered together
        assert len(answered) == len(requests)
        for n, response in answered:
            want = expected[n]
            if isinstance(want, Exception):
                assert response.status_code == 400 and str(want) in response.json()["detail"], response.text
                continue
            assert response.status_code == 200, response.text
            data = response.json()
            assert data["snapshot"] == engine.snapshot.id
            assert [h["id"] for h in data["hits"]] == [h.id for h in want], requests[n]
            assert [h["score"] for h in data["hits"]] == pytest.approx([h.score for h in want], abs=1e-6)
    assert not batcher.running  # the app's shutdown ended its threads
