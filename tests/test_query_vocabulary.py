"""Query-time vocabulary (``lexical_expansion``): a question's analyst terms bring the labels statements print
into its BM25 text, so the statement page that answers it is found; other questions search exactly as before."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmrag_core.config import Settings
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.vocabulary import expand_query
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_minilm_docs
from tests.test_outline_list import doc_items
from tests.tiny_models import one_torch_thread  # noqa: F401 - an autouse fixture


def test_expansion_adds_printed_labels_and_leaves_other_questions_alone() -> None:
    q = "What was FY2018 capex? Use the cash flow statement."
    expanded = expand_query(q)
    assert expanded.startswith(q)
    assert "purchases of property, plant and equipment" in expanded and "statements of cash flows" in expanded
    assert expand_query("What was net income in 2023?").endswith("net income net earnings")
    assert expand_query("D&A for 2022") != "D&A for 2022"
    for other in ("how do I adjust the brakes", "a photo of a red kite over the hills", "", "capexes"):
        assert expand_query(other) == other


PAGES = [
    (0, "ACME CORP | fiscal year 2019 | Management discussion",
     ["Capex rose as we built the new plant; capex guidance for next year is higher.",
      "Our capex plan focuses on the plant, capex discipline stays."]),
    (1, "ACME CORP | fiscal year 2019 | Consolidated Statements of Cash Flows",
     ["Investing activities: Purchases of property, plant and equipment (1,577) (1,373) Proceeds from sale 12 8",
      "Net cash used in investing activities (1,402) (1,220) Capital expenditures by segment in note 9"]),
    (2, "ACME CORP | fiscal year 2019 | Notes", ["Leases and other commitments of the company."]),
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("vocab") / "store")
    sha, items = doc_items("ACME_2019_10K.pdf", PAGES)
    publish_minilm_docs(store, [(sha, items[0].source_uri, items)])
    return open_snapshot(store)


def lexical_pages(snapshot, expansion: bool, text: str) -> list[int]:
    engine = QueryEngine.from_settings(snapshot, Settings(store="unused", lexical_expansion=expansion))
    return [h.page for h in engine.search(text, k=3, spaces=["lexical"])]


def test_the_statement_page_comes_first_with_expansion_on(snapshot) -> None:
    question = "What was ACME's FY2019 capex according to its cash flow statement?"
    assert lexical_pages(snapshot, False, question)[0] == 0  # the prose page repeats the question's word
    assert lexical_pages(snapshot, True, question)[0] == 1  # the statement prints the line item
    plain = "leases and commitments"
    assert lexical_pages(snapshot, True, plain) == lexical_pages(snapshot, False, plain)
