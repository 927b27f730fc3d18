"""The trained page re-ranker (issue 16, item 5): off by default; when on, it reorders only the first
``rerank_depth`` pages of the fused list and keeps every hit's fields; a model loads only when its files match
their sha256; training on labelled candidates learns what separates the positives. A small published snapshot
with real all-MiniLM-L6-v2 vectors (the outline tests' filings)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrag_core.config import Settings
from mmrag_core.config.sections import QuerySettings
from mmrag_core.learn.rerank_training import QueryCandidates, fit, ndcg_at, publish
from mmrag_core.models import ModelUnavailable
from mmrag_core.query.engine import QueryEngine
from mmrag_core.query.rerank import FEATURES, RERANK_FILE, RERANK_LISTS, Reranker, load_reranker
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_minilm_docs
from tests.test_outline_list import OTHER, PAGES, QUERY, doc_items
from tests.tiny_models import one_torch_thread  # noqa: F401 - an autouse fixture


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("rerank") / "store")
    docs = [doc_items(name, pages) for name, pages in (("ACME_2019_10K.pdf", PAGES), ("GLOBEX_2019_10K.pdf", OTHER))]
    publish_minilm_docs(store, [(sha, items[0].source_uri, items) for sha, items in docs])
    return store, open_snapshot(store)


def reversing_model(folder: Path) -> Path:
    """A model that ranks by fused position reversed (the last candidate first): easy to see what it moved."""
    weight = np.zeros(len(FEATURES), np.float32)
    weight[FEATURES.index("fused_position")] = -1.0
    Reranker(weight, 0.0, np.zeros(len(FEATURES), np.float32), np.ones(len(FEATURES), np.float32)).save(
        folder, {"id": "test-reversing"})
    return folder


def engine_for(snapshot, **query: object) -> QueryEngine:
    return QueryEngine.from_settings(snapshot, Settings(store="unused", **query))


def page(hit) -> str:
    return f"{Path(hit.source_uri).stem}#p{hit.page}"


def test_off_by_default(published) -> None:
    _, snapshot = published
    assert QuerySettings().rerank_model == "off"
    engine = engine_for(snapshot)
    default = engine.search(QUERY, k=5)
    assert [h.to_dict() for h in default] == [h.to_dict() for h in engine.search(QUERY, k=5, rerank=False)]
    assert all(RERANK_LISTS not in h.similarities for h in default)
    with pytest.raises(ValueError, match="no re-ranking model"):
        engine.search(QUERY, k=5, rerank=True)


def test_reorders_only_the_first_depth_pages_and_keeps_the_hits_fields(published, tmp_path: Path) -> None:
    _, snapshot = published
    model = reversing_model(tmp_path / "model")
    before = engine_for(snapshot).search(QUERY, k=10)
    engine = engine_for(snapshot, rerank_model=str(model), rerank_depth=3)
    after = engine.search(QUERY, k=10)
    assert len(before) == len(after) >= 5
    assert [page(h) for h in after[:3]] == [page(h) for h in reversed(before[:3])]
    assert [h.to_dict() for h in after[3:]] == [h.to_dict() for h in before[3:]]  # below the depth: untouched
    by_id = {h.id: h for h in before}
    for h in after[:3]:  # the same hit, with the model's score beside the lists' similarities
        was = by_id[h.id].to_dict()
        now = h.to_dict()
        assert now.pop("similarities").pop(RERANK_LISTS) is not None
        was.pop("similarities")
        assert now == was
    # only late fusion of the default lists is re-ranked unless asked for; a single list stays as it is
    assert [h.id for h in engine.search(QUERY, k=5, spaces=["text"])] == \
        [h.id for h in engine_for(snapshot).search(QUERY, k=5, spaces=["text"])]
    assert [h.id for h in engine.search(QUERY, k=10, rerank=False)] == [h.id for h in before]


def test_page_features_see_headings_and_tables(published) -> None:
    _, snapshot = published
    engine = engine_for(snapshot)
    hits = engine.search(QUERY, k=10, rerank=False)
    x = engine.page_features.matrix(QUERY, engine.text_encoder.encode([QUERY]), hits)
    assert x.shape == (len(hits), len(FEATURES)) and np.isfinite(x).all()
    row = {page(h): dict(zip(FEATURES, r, strict=True)) for h, r in zip(hits, x, strict=True)}
    sheet, prose = row["ACME_2019_10K#p2"], row["ACME_2019_10K#p1"]  # the balance sheet, the MD&A page
    assert sheet["heading_overlap"] > prose["heading_overlap"]
    assert sheet["digit_share"] > 0.4 > prose["digit_share"]
    assert max(r["page_best_sim_gap"] for r in row.values()) == 0.0


def test_model_loads_only_with_matching_checksums(published, tmp_path: Path) -> None:
    store, _ = published
    assert load_reranker("off") is None
    folder = reversing_model(tmp_path / "model")
    assert load_reranker(str(folder)).meta["id"] == "test-reversing"
    model_id, ref = publish(store, load_reranker(str(folder)), {"trained_on": "test"})
    assert ref == f"store:models/rerank/{model_id}"
    assert load_reranker(ref, store).meta["trained_on"] == "test"
    data = bytearray((folder / RERANK_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / RERANK_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelUnavailable, match="sha256"):
        load_reranker(str(folder))
    with pytest.raises(ModelUnavailable, match="no mmrag_model.json"):
        load_reranker(str(tmp_path))


def test_fit_learns_which_feature_marks_the_positives() -> None:
    rng = np.random.default_rng(0)
    queries = []
    for n in range(30):  # the positive is never first in fused order; its digit share gives it away
        x = rng.normal(size=(10, len(FEATURES))).astype(np.float32)
        x[:, FEATURES.index("fused_score")] = np.linspace(1.0, 0.1, 10)
        target = int(rng.integers(2, 10))
        x[target, FEATURES.index("digit_share")] += 4.0
        queries.append(QueryCandidates(f"q{n}", "labelled", x, np.arange(10) == target, 1))
    model = fit(queries)
    before = np.mean([ndcg_at(q.relevant, 1) for q in queries])
    after = np.mean([ndcg_at(q.relevant[np.argsort(-model.scores(q.x), kind="stable")], 1) for q in queries])
    assert before < 0.5 < 0.9 < after
    assert int(np.argmax(np.abs(model.weight))) == FEATURES.index("digit_share")


def test_a_model_with_unknown_features_is_refused() -> None:
    with pytest.raises(ModelUnavailable, match="unknown features"):
        Reranker(np.ones(1), 0.0, np.zeros(1), np.ones(1), ["colour_of_the_page"])


def test_rerank_train_command_keeps_a_model_the_setting_loads(published, tmp_path: Path) -> None:
    """``mmrag rerank-train`` on labelled questions: the model lands in the store with checksums, and
    ``rerank_model: store:models/rerank/<id>`` loads it and re-ranks; bad input is a clear error (exit 2)."""
    import json

    from flows.cli import main

    store, snapshot = published
    queries, qrels = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    questions = [("q1", QUERY, "ACME_2019_10K#p2"), ("q2", "ACME capital spending outlook", "ACME_2019_10K#p1"),
                 ("q3", "Globex inventories 2019", "GLOBEX_2019_10K#p0")]
    queries.write_text("".join(json.dumps({"query_id": q, "text": t, "answer": ""}) + "\n" for q, t, _ in questions))
    qrels.write_text("query_id\tcorpus_id\tscore\n" + "".join(f"{q}\t{p}\t1\n" for q, _, p in questions))
    out = tmp_path / "rr.json"
    assert main(["rerank-train", "--store", str(store.root), "--queries", str(queries), "--qrels", str(qrels),
                 "--depth", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["path"].startswith("store:models/rerank/") and result["trained_on"]["n_queries"] == 3
    assert set(result["weights"]) == set(FEATURES)
    engine = engine_for(snapshot, rerank_model=result["path"], rerank_depth=5)
    assert RERANK_LISTS in engine.search(QUERY, k=5)[0].similarities
    assert main(["rerank-train", "--store", str(store.root), "--queries", str(queries)]) == 2  # no --qrels
    assert main(["rerank-train", "--store", str(store.root), "--queries", str(queries), "--qrels", str(qrels),
                 "--drop", "no_such_feature"]) == 2
