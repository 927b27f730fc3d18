"""Shared setup of the answer tests: a small published snapshot of text pages (real MiniLM vectors), its
queries with reference answers and qrels, and where the converted SmolLM2 model is kept between runs."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from mmrag_core.storage.items import Item, item_id
from mmrag_core.storage.records import build_record, read_record, write_record
from mmrag_core.storage.store import Store
from tests.published import publish_records

# The GGUF -> transformers conversion takes ~30 s; kept here it is paid once per machine, not per run.
GENERATOR_CACHE = Path(tempfile.gettempdir()) / "mmrag-test-generators"

# (file, 0-based page) -> chunk texts
PAGES = {
    ("3M_2018_10K.pdf", 59): [("Purchases of property, plant and equipment (capital expenditure) were $1,577 "
                               "million in 2018, compared with $1,373 million in 2017.")],
    ("3M_2018_10K.pdf", 60): ["Net cash provided by operating activities was $6,439 million in 2018."],
    ("notes.pdf", 0): ["Espresso is brewed by forcing hot water through finely ground coffee beans."],
    ("notes.pdf", 1): ["The bridge was closed for repairs after the storm damaged its steel cables."],
}
# A cash-flow statement page as index chunks hold rows, for the extractive answerer (and a page and a document
# it must not cite).
STATEMENT_ROW = "Purchases of property, plant and equipment (PP&E) | 2018: (1,577) | 2017: (1,373)"
STATEMENT_PAGES = {
    ("3M_2018_10K.pdf", 59): ["3M Company and Subsidiaries\nConsolidated Statement of Cash Flows\n(Millions)\n"
                              "Net income including noncontrolling interest | 2018: 5,363 | 2017: 4,869\n"
                              f"{STATEMENT_ROW}\n"
                              "Net cash provided by operating activities | 2018: 6,439 | 2017: 6,240"],
    ("3M_2018_10K.pdf", 12): ["3M employs about 93,000 people worldwide in its four business segments."],
    ("notes.pdf", 0): ["Espresso is brewed by forcing hot water through finely ground coffee beans."],
}
QUERIES = [
    {"query_id": "capex", "text": "What was 3M's capital expenditure in 2018?", "answer": "$1577.00"},
    {"query_id": "coffee", "text": "How is espresso made?",
     "answer": "By forcing hot water through finely ground coffee."},
    {"query_id": "no-answer", "text": "Which bridge was closed?"},
]
QRELS = "query_id\tcorpus_id\tscore\ncapex\t3M_2018_10K#p59\t1\ncoffee\tnotes#p0\t1\nno-answer\tnotes#p1\t1\n"


def publish_text_snapshot(base: Path, pages: dict[tuple[str, int], list[str]] | None = None) -> Path:
    """Publish ``pages`` (default :data:`PAGES`) as a snapshot with a text space into ``base / "store"``; write
    ``queries.jsonl`` and ``qrels.tsv`` beside it. Returns the store folder."""
    from mmrag_core.models.text_encoder import TextEncoder

    encoder = TextEncoder("all-MiniLM-L6-v2")
    store = Store(base / "store")
    records, pages = [], PAGES if pages is None else pages
    for name in sorted({doc for doc, _ in pages}):
        sha, uri = hashlib.sha256(name.encode()).hexdigest(), f"/corpus/{name}"
        items = [Item(item_id(sha, "chunk", page, o), "chunk", uri, sha, page, (0.0, 0.0, 10.0, 10.0), text,
                      ordinal=o)
                 for (doc, page), texts in pages.items() if doc == name for o, text in enumerate(texts)]
        vectors = {"text": (np.array([it.id for it in items]), encoder.encode([it.text for it in items]))}
        write_record(store, build_record(sha, uri, items, vectors, [], "mk", {}))
        records.append(read_record(store, sha))
    publish_records(store, records, {"text": encoder.describe()})
    (base / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (base / "qrels.tsv").write_text(QRELS)
    return base / "store"
