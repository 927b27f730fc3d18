"""Page outlines through the QueryEngine: pages ranked by their outline item (document facts and page headings)
in the text space, each page given as its first chunk; the text list never returns an outline. A small published
snapshot with real all-MiniLM-L6-v2 vectors and its lexical index."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.config import Settings
from mmrag_core.eval.retrieval import available_systems
from mmrag_core.storage.items import Item, item_id
from mmrag_core.storage.records import build_record
from mmrag_core.query.engine import OUTLINE, QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_minilm_docs, publish_records
from tests.tiny_models import one_torch_thread  # noqa: F401 - an autouse fixture

FACTS = "ACME CORPORATION | fiscal year ended December 31, 2019 (FY2019) | Form 10-K annual report"
# (page, outline or None, chunk texts): the statement pages are numbers under a heading; the MD&A page talks
# about the balance sheet in prose.
PAGES = [
    (0, None, ["ACME Corporation. Annual report on Form 10-K for the fiscal year ended December 31, 2019."]),
    (1, f"{FACTS} | Liquidity and Capital Resources | Outlook",
     ["Our balance sheet remains strong: liquidity and cash generation fund the dividend and buybacks.",
      "Management expects capital spending to rise next year with the new plant."]),
    (2, f"{FACTS} | Consolidated Balance Sheet | Assets | Liabilities | Equity",
     ["2019 2018 Cash 2,853 3,053 Marketable securities 380 1,076 Receivables 2,941 Total 36,500 37,987",
      "Borrowings 1,211 1,853 Payables 2,266 1,945 Total 26,652 26,365"]),
    (3, f"{FACTS} | Consolidated Statement of Cash Flows | Operating Activities | Investing Activities",
     ["2019 2018 Net income 5,363 4,869 Depreciation 1,488 1,544 Purchases (1,577) (1,373)"]),
]
OTHER = [(0, "GLOBEX INC | fiscal year 2019 | Form 10-K annual report | Consolidated Balance Sheet",
          ["Globex 2019 Cash 1,100 Inventories 4,200 Total 18,000"])]
MODELS = {"text": {"name": "all-MiniLM-L6-v2", "dim": 384}}
QUERY = "Using the balance sheet, what were ACME's total assets at the end of FY2019?"


def doc_items(name: str, pages: list) -> tuple[str, list[Item]]:
    sha = hashlib.sha256(name.encode()).hexdigest()
    uri = f"/corpus/{name}"
    items = []
    for page, outline, chunks in pages:
        items += [Item(item_id(sha, "chunk", page, n), "chunk", uri, sha, page, (0.0, 10.0 * n, 1.0, 1.0), text,
                       ordinal=n) for n, text in enumerate(chunks)]
        if outline:
            items.append(Item(item_id(sha, "outline", page, 0), "outline", uri, sha, page, (0.0, 0.0, 612.0, 792.0),
                              outline))
    return sha, items


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("outline") / "store")
    docs = [doc_items(name, pages) for name, pages in (("ACME_2019_10K.pdf", PAGES), ("GLOBEX_2019_10K.pdf", OTHER))]
    publish_minilm_docs(store, [(sha, items[0].source_uri, items) for sha, items in docs])
    return open_snapshot(store)


def engine_for(snapshot, **settings: object) -> QueryEngine:
    return QueryEngine.from_settings(snapshot, Settings(store="unused", **settings))


def kinds(snapshot) -> dict[int, str]:
    cols = snapshot.items.select(["id", "kind"]).to_pydict()
    return dict(zip(cols["id"], cols["kind"]))


def test_outline_list_ranks_pages_by_their_headings_as_their_first_chunk(snapshot) -> None:
    engine = engine_for(snapshot)
    outline = engine.search(QUERY, k=5, spaces=[OUTLINE], dedupe=False)
    assert f"{Path(outline[0].source_uri).stem}#p{outline[0].page}" == "ACME_2019_10K#p2"
    assert {h.kind for h in outline} == {"chunk"}  # a page comes back as its first chunk, shown as hits are
    acme = hashlib.sha256(b"ACME_2019_10K.pdf").hexdigest()
    assert outline[0].key == item_id(acme, "chunk", 2, 0)
    assert len(outline) == 4  # the pages with an outline; page 0 has none


def test_text_list_never_returns_an_outline(snapshot) -> None:
    engine = engine_for(snapshot)
    kind = kinds(snapshot)
    for query in (QUERY, FACTS, "Consolidated Statement of Cash Flows"):
        hits = engine.search(query, k=20, spaces=["text"], dedupe=False)
        assert hits and {kind[h.id] for h in hits} == {"chunk"}
    cascade = engine.search(QUERY, k=20, strategy="cascade", dedupe=False)
    assert {kind[h.id] for h in cascade} == {"chunk"}


def test_default_fuses_the_outline_list_only_when_on(snapshot) -> None:
    on = engine_for(snapshot).search(QUERY, k=5)
    off = engine_for(snapshot, page_outline=False).search(QUERY, k=5)
    on_pages = [f"{Path(h.source_uri).stem}#p{h.page}" for h in on]
    off_pages = [f"{Path(h.source_uri).stem}#p{h.page}" for h in off]
    # the balance sheet's page, numbers under a heading, rises by its outline; the prose pages stay near the top
    assert on[on_pages.index("ACME_2019_10K#p2")].ranks[OUTLINE] == 1
    assert on_pages.index("ACME_2019_10K#p2") < off_pages.index("ACME_2019_10K#p2")
    assert all(OUTLINE not in h.ranks for h in off)
    assert OUTLINE not in engine_for(snapshot, page_outline=False).default_lists()


def test_filters_hold_inside_the_outline_list(snapshot) -> None:
    engine = engine_for(snapshot)
    only_globex = engine.search(QUERY, k=5, spaces=[OUTLINE], filters={"doc": ["GLOBEX_2019_10K"]})
    assert [f"{Path(h.source_uri).stem}#p{h.page}" for h in only_globex] == ["GLOBEX_2019_10K#p0"]
    pages_3 = engine.search(QUERY, k=5, spaces=[OUTLINE], filters={"pages": "3-"})
    assert [h.page for h in pages_3] == [3]
    # a filter that leaves no outline: nothing from this list, and a late fusion of it alone says so
    assert engine.lists[OUTLINE](engine_query(engine, {"doc": ["ACME_2019_10K"], "pages": 0})) == []


def engine_query(engine: QueryEngine, filters: dict):
    from mmrag_core.query.lists import Query

    return Query(QUERY, None, engine.id_filter(filters))


def test_snapshot_without_outlines_has_no_outline_list(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    sha, items = doc_items("PLAIN.pdf", [(0, None, ["plain text"])])
    vec = np.zeros((1, 384), dtype=np.float32)
    vec[0, 0] = 1.0
    publish_records(store, [build_record(sha, "/corpus/PLAIN.pdf", items,
                                         {"text": (np.array([items[0].id], dtype=np.int64), vec)}, [], "k", {})],
                    MODELS)
    engine = engine_for(open_snapshot(store))
    assert not engine.has_outlines
    assert "outline" not in available_systems(engine)
