"""Hard-negative mining from a published snapshot: for each training query, the pages the current dense,
lexical and routed lists rank high that are not its positives (from the same filing and others), minus pages
that may hold the answer after all (:func:`~mmrag_core.learn.pairs.is_false_negative`).

The mined table is kept in the store as Parquet, ``learn/negatives/<fingerprint>.parquet``, keyed on the snapshot,
the model that ranked, the examples and the mining settings: the same inputs are mined once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

import pyarrow as pa

from mmrag_core.learn.pairs import Example, Page, corpus_pages, fingerprint, is_false_negative
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.lists import Query

log = logging.getLogger(__name__)

NEGATIVES_PREFIX = "learn/negatives"
MINED_LISTS = ("text", "lexical", "routed")

NEGATIVE_SCHEMA = pa.schema([
    ("query_id", pa.string()), ("query", pa.string()), ("source", pa.string()),
    ("doc", pa.string()), ("page", pa.int32()), ("positive", pa.string()), ("outline", pa.string()),
    ("negative_doc", pa.string()), ("negative_page", pa.int32()), ("negative", pa.string()),
    ("negative_rank", pa.int32()), ("negative_list", pa.string()), ("same_doc", pa.bool_()),
])


def mining_fingerprint(engine: QueryEngine, examples: list[Example], depth: int, per_query: int) -> str:
    """What a mined table depends on: the snapshot, the text model's weights, the examples, the settings."""
    text_model = engine.snapshot.manifest["models"].get("text") or {}
    key = {"snapshot": engine.snapshot.id, "model": text_model.get("state_sha256"),
           "examples": fingerprint(examples), "depth": depth, "per_query": per_query, "lists": MINED_LISTS}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def mine(engine: QueryEngine, examples: list[Example], depth: int = 30, per_query: int = 4,
         pages: dict[tuple[str, int], Page] | None = None) -> pa.Table:
    """Mine up to ``per_query`` hard negatives per example (at least one from another filing when the lists
    offer one); an example with none gets one row with empty negative columns, so it still trains in-batch."""
    pages = pages if pages is not None else corpus_pages(engine.snapshot.items)
    page_of_item = {iid: key for key, p in pages.items() for iid, _ in p.chunks}
    text_of_item = {iid: t for p in pages.values() for iid, t in p.chunks}
    old_depth = engine.search_depth
    engine.search_depth = depth
    rows: list[dict] = []
    try:
        for e in examples:
            rows.extend(_mine_one(engine, e, per_query, pages, page_of_item, text_of_item))
    finally:
        engine.search_depth = old_depth
    return pa.Table.from_pylist(rows, schema=NEGATIVE_SCHEMA)


def _mine_one(engine: QueryEngine, e: Example, per_query: int, pages: dict[tuple[str, int], Page],
              page_of_item: dict[int, tuple[str, int]], text_of_item: dict[int, str]) -> list[dict]:
    q = Query(e.query, None, None)
    ranked = {name: engine.lists[name](q) or [] for name in MINED_LISTS if name in engine.lists}
    positives = {(e.doc, pg) for pg in (e.pages or (e.page,))}
    candidates: dict[tuple[str, int], tuple[int, str, int]] = {}  # page -> (rank, list, item)
    for name, hits in ranked.items():
        for rank, (iid, _) in enumerate(hits):
            key = page_of_item.get(int(iid))
            if key is None or key in positives:
                continue
            if key not in candidates or rank < candidates[key][0]:
                candidates[key] = (rank, name, int(iid))
    chosen: list[tuple[tuple[str, int], tuple[int, str, int]]] = []
    for key, cand in sorted(candidates.items(), key=lambda kv: (kv[1][0], kv[0])):
        if is_false_negative(pages[key], e.guards):
            continue
        chosen.append((key, cand))
    picked = chosen[:per_query]
    if picked and all(k[0] == e.doc for k, _ in picked):  # one from another filing, when there is one
        other = next(((k, c) for k, c in chosen[per_query:] if k[0] != e.doc), None)
        if other is not None:
            picked[-1] = other
    base = {"query_id": e.query_id, "query": e.query, "source": e.source, "doc": e.doc, "page": e.page,
            "positive": e.positive, "outline": e.outline}
    if not picked:
        return [{**base, "negative_doc": None, "negative_page": None, "negative": None, "negative_rank": None,
                 "negative_list": None, "same_doc": None}]
    return [{**base, "negative_doc": k[0], "negative_page": k[1], "negative": text_of_item[c[2]],
             "negative_rank": c[0], "negative_list": c[1], "same_doc": k[0] == e.doc} for k, c in picked]


def negatives_key(fp: str) -> str:
    """The store key of a mined table."""
    return f"{NEGATIVES_PREFIX}/{fp}.parquet"


def mine_to_store(store, engine: QueryEngine, examples: list[Example], depth: int = 30,
                  per_query: int = 4) -> tuple[str, pa.Table]:
    """Mine (or read back, when these inputs were mined before) and keep the table in ``store``; returns its key
    and the table, whose schema metadata holds the fingerprint, the snapshot and the examples' sources."""
    fp = mining_fingerprint(engine, examples, depth, per_query)
    key = negatives_key(fp)
    if store.exists(key):
        return key, store.read_parquet(key)
    table = mine(engine, examples, depth, per_query)
    meta = {"fingerprint": fp, "snapshot": engine.snapshot.id, "examples": len(examples), "depth": depth,
            "per_query": per_query, "sources": sorted({e.source for e in examples})}
    table = table.replace_schema_metadata({"mmrag.mining": json.dumps(meta)})
    store.write_parquet(key, table)
    log.info("mined %d rows for %d examples into %s", table.num_rows, len(examples), key)
    return key, table


def examples_json(examples: list[Example]) -> list[dict]:
    """Examples as plain dicts (to pass to training workers)."""
    return [asdict(e) for e in examples]
