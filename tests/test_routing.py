"""Hybrid retrieval and two-stage document routing through the QueryEngine, over a small published snapshot
with real all-MiniLM-L6-v2 vectors and the snapshot's published lexical index."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmrag_core.config import Settings
from mmrag_core.storage.items import Item, item_id
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.routing import DocumentRouter, choose_documents, document_title, documents_of
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_minilm_docs
from tests.tiny_models import one_torch_thread  # noqa: F401 - an autouse fixture

# Three filings whose statement pages look alike and never name their issuer; the first page does.
FILINGS = {
    "ACME_2019_10K.pdf": [
        "ACME Corporation. Annual report on Form 10-K for the fiscal year ended December 31, 2019.",
        ("Consolidated cash flow statement. Capital expenditure: purchases of property, plant and equipment "
         "(1,577). Net cash used in investing activities (2,010)."),
        ("Inventory counts at the Denver plant were reconciled and the auditors reviewed the obsolete stock "
         "reserve (see QX-7731-B)."),
    ],
    "GLOBEX_2019_10K.pdf": [
        "Globex Inc. Annual report on Form 10-K for the fiscal year 2019.",
        ("Consolidated cash flow statement: capital expenditure for property, plant and equipment was "
         "(2,210); capital expenditure rose with the FY2019 plan. Net cash used in investing activities (2,900)."),
        "Warranty claim reference QZ-7713-D was reopened after the recall of the series units.",
    ],
    "INITECH_2018_10K.pdf": [
        "Initech LLC annual report, Form 10-K, fiscal year 2018.",
        "Consolidated balance sheet: property, plant and equipment, net 8,700; total assets 36,500.",
        "Ticket QB-1377-X about a warranty claim reference code was answered within two business days.",
    ],
}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    docs = []
    for name, pages in FILINGS.items():
        sha = hashlib.sha256(name.encode()).hexdigest()
        docs.append((sha, f"/corpus/{name}", [Item(item_id(sha, "chunk", p, 0), "chunk", f"/corpus/{name}", sha, p,
                                                   (0.0, 0.0, 1.0, 1.0), text) for p, text in enumerate(pages)]))
    store = Store(tmp_path_factory.mktemp("routing") / "store")
    publish_minilm_docs(store, docs)
    return open_snapshot(store)


def engine_for(snapshot, **settings: object) -> QueryEngine:
    return QueryEngine.from_settings(snapshot, Settings(store="unused", **settings))


def pages(hits) -> list[str]:
    return [f"{Path(h.source_uri).stem}#p{h.page}" for h in hits]


def test_hybrid_finds_an_exact_identifier_dense_misses(snapshot) -> None:
    engine = engine_for(snapshot, routing=False)
    query = "QX-7731-B"
    dense = pages(engine.search(query, k=3, spaces=["text"]))
    lexical = pages(engine.search(query, k=3, spaces=["lexical"]))
    hybrid = engine.search(query, k=3)
    assert dense[0] != "ACME_2019_10K#p2"  # the dense space alone does not put it first
    assert lexical[0] == "ACME_2019_10K#p2"
    assert pages(hybrid)[0] == "ACME_2019_10K#p2" and set(hybrid[0].ranks) >= {"text", "lexical"}
    # without hybrid (and routing), the default is the dense list alone
    assert pages(engine_for(snapshot, hybrid=False, routing=False).search(query, k=3)) == dense


def test_router_ranks_documents_by_name_and_first_pages(snapshot) -> None:
    router = DocumentRouter.from_items(snapshot.items, first_pages=1)
    by_sha = {r["doc_sha256"]: Path(r["source_uri"]).stem for r in snapshot.items.to_pylist()}
    assert by_sha[router.rank("Acme annual report 2019")[0][0]] == "ACME_2019_10K"
    assert by_sha[router.rank("initech 2018")[0][0]] == "INITECH_2018_10K"
    assert router.rank("zzz unknown words") == []
    assert document_title("/x/ACME_2019_10K.pdf") == "ACME 2019 10K"


def test_choose_documents_router_first_flat_lists_fill_up() -> None:
    flat = {"text": documents_of([(1, 0.9), (2, 0.8), (3, 0.7)], {1: "b", 2: "b", 3: "c"}.get),
            "lexical": [("c", 3.0), ("d", 1.0)]}
    assert flat["text"] == [("b", 0.9), ("c", 0.7)]
    assert choose_documents([("a", 5.0), ("d", 1.0)], flat, 2) == ["a", "d"]
    assert choose_documents([("a", 5.0)], flat, 3) == ["a", "c", "b"]  # c: 2nd and 1st beats b: 1st once
    assert choose_documents([], {}, 2) == []


def test_routing_picks_the_right_documents_page(snapshot) -> None:
    """The question names its issuer and year; the statement pages do not. Flat retrieval prefers the
    other filing's page (it says 'capital expenditure'); routing finds ACME's filing, then its page."""
    query = "What is the FY2019 capital expenditure of ACME? Use the cash flow statement."
    flat = pages(engine_for(snapshot, routing=False).search(query, k=3))
    assert flat[0] == "GLOBEX_2019_10K#p1"
    routed_engine = engine_for(snapshot, route_docs=1, route_pages=1)  # routing: on by default
    routed = routed_engine.search(query, k=3)
    assert pages(routed)[0] == "ACME_2019_10K#p1" and "routed" in routed[0].ranks
    routed_list = routed_engine.search(query, k=3, spaces=["routed"])
    assert {Path(h.source_uri).stem for h in routed_list} == {"ACME_2019_10K"}  # only the chosen document
    # a filter still holds inside the routed list
    only_globex = routed_engine.search(query, k=3, spaces=["routed"], filters={"doc": ["GLOBEX_2019_10K"]})
    assert {Path(h.source_uri).stem for h in only_globex} <= {"GLOBEX_2019_10K"}


def test_page_votes_fuse_page_by_page_only_when_on(snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    """``page_votes`` (with one hit per page) collapses every ranked list to pages before fusing, the routed
    list's inner fusion included; off, or with every item returned, the lists are fused item by item."""
    import mmrag_core.query.fusion as fusion_module
    import mmrag_core.query.lists as lists_module
    import mmrag_core.query.strategies as strategies_module

    calls: list[list[str]] = []
    real = fusion_module.by_unit

    def spy(ranked, unit):
        calls.append(sorted(ranked))
        return real(ranked, unit)

    for query_module in (lists_module, strategies_module):  # the routed list's inner fusion, then late fusion
        monkeypatch.setattr(query_module, "by_unit", spy)
    query = "What is the FY2019 capital expenditure of ACME? Use the cash flow statement."
    engine_for(snapshot, route_docs=1, route_pages=1).search(query, k=3)
    engine_for(snapshot, route_docs=1, route_pages=1, page_votes=True).search(query, k=3, dedupe=False)
    assert calls == []
    hits = engine_for(snapshot, route_docs=1, route_pages=1, page_votes=True).search(query, k=3)
    assert calls == [["lexical", "text"], ["lexical", "routed", "text"]]  # routed's inner fusion, then late
    assert pages(hits)[0] == "ACME_2019_10K#p1" and len(set(pages(hits))) == len(hits)
