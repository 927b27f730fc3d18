"""Retrieval evaluation: metrics by hand, qrels/queries loading, the BM25 baseline, and ``evaluate`` /
``mmrag eval`` end to end on a tiny snapshot (real MiniLM text vectors, tiny real-architecture CLIP)."""
from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmrag_core.ingest.encoder_inputs import text_inputs
from mmrag_core.storage.items import Item, item_id, items_to_table
from mmrag_core.eval.bm25_baseline import PageBM25, doc_name, page_id, page_texts, tokenize
from mmrag_core.eval.retrieval import METRICS, SYSTEMS, Evaluation, available_systems, evaluate
from mmrag_core.eval.metrics import (
    dedup, hits_ranking, ndcg_at_k, percentile_ms, recall_at_k, reciprocal_rank, score_rankings,
)
from mmrag_core.eval.data import load_qrels, load_queries, qrels_level
from mmrag_core.eval.report import markdown_table, plot_recall, write_json
from mmrag_core.storage.records import build_record, read_record, write_record
from mmrag_core.config.sections import QuerySettings
from mmrag_core.query.engine import QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_records
from tests.tiny_models import (  # noqa: F401 - one_torch_thread is an autouse fixture
    force_hf_offline,
    make_tiny_clip,
    one_torch_thread,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- metrics by hand


def test_recall_at_k() -> None:
    ranking = ["a", "x", "b", "y", "c"]
    assert recall_at_k(ranking, {"a", "b", "c", "d"}, 1) == 0.25
    assert recall_at_k(ranking, {"a", "b", "c", "d"}, 3) == 0.5
    assert recall_at_k(ranking, {"a", "b", "c", "d"}, 10) == 0.75
    assert recall_at_k(ranking, {"z"}, 10) == 0.0  # nothing relevant found
    assert recall_at_k([], {"a"}, 10) == 0.0
    assert recall_at_k(ranking, set(), 10) == 0.0


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(["x", "a", "b"], {"a", "b"}) == 0.5
    assert reciprocal_rank(["a"], {"a"}) == 1.0
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0
    assert reciprocal_rank([f"x{i}" for i in range(10)] + ["a"], {"a"}, k=10) == 0.0  # rank 11 is past @10
    assert reciprocal_rank([f"x{i}" for i in range(9)] + ["a"], {"a"}, k=10) == 0.1


def test_ndcg_graded() -> None:
    grades = {"a": 2.0, "b": 1.0, "c": 3.0}
    # DCG = 2/log2(2) + 0 + 1/log2(4) = 2.5; ideal = 3/1 + 2/log2(3) + 1/2
    want = 2.5 / (3 + 2 / math.log2(3) + 0.5)
    assert ndcg_at_k(["a", "x", "b"], grades, 3) == pytest.approx(want)
    assert ndcg_at_k(["c", "a", "b"], grades, 3) == pytest.approx(1.0)
    # @1: only the top counts, the ideal is the best grade alone
    assert ndcg_at_k(["a", "c"], grades, 1) == pytest.approx(2 / 3)
    assert ndcg_at_k(["x", "y"], grades, 5) == 0.0
    assert ndcg_at_k(["a"], {}, 5) == 0.0
    # binary relevance, two relevant, found at ranks 2 and 3
    assert ndcg_at_k(["x", "a", "b"], {"a": 1, "b": 1}, 5) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_score_rankings_averages_over_judged_queries() -> None:
    qrels = {"q1": {"a": 1.0}, "q2": {"b": 1.0, "c": 1.0}, "q3": {"z": 1.0}}
    rankings = {"q1": ["a", "x"], "q2": ["x", "b"]}  # q3 has no ranking: counts as all misses
    metrics, curve = score_rankings(rankings, qrels, max_k=3)
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert curve == pytest.approx([1 / 3, 0.5, 0.5])
    with pytest.raises(ValueError, match="no query"):
        score_rankings({}, {})


def test_percentiles() -> None:
    assert percentile_ms([0.001, 0.002, 0.003, 0.004], 50) == pytest.approx(2.5)
    assert percentile_ms([0.001, 0.002, 0.003, 0.004], 99) == pytest.approx(3.97)
    assert math.isnan(percentile_ms([], 50))


def test_page_ranking_keeps_first_occurrence() -> None:
    hits = [SimpleNamespace(source_uri=u, page=p) for u, p in [
        ("/c/A.pdf", 3), ("/c/A.pdf", 3), ("s3://b/x/B.pdf", 0), ("/c/A.pdf", 1), ("/c/A.pdf", 3), ("/c/img.png", 0)]]
    assert hits_ranking(hits) == ["A#p3", "B#p0", "A#p1", "img#p0"]
    assert hits_ranking(hits, k=2) == ["A#p3", "B#p0"]
    assert hits_ranking(hits, level="doc") == ["A", "B", "img"]
    assert dedup(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_page_ids() -> None:
    assert doc_name("/data/pdfs/3M_2018_10K.pdf") == "3M_2018_10K"
    assert doc_name("s3://bucket/AMCOR_2022_8K_dated-2022-07-01.pdf") == "AMCOR_2022_8K_dated-2022-07-01"
    assert page_id("/data/pdfs/3M_2018_10K.pdf", 59) == "3M_2018_10K#p59"


# ---------------------------------------------------------------- loading


def test_load_queries_and_qrels(tmp_path: Path) -> None:
    q = tmp_path / "queries.jsonl"
    q.write_text('{"query_id": "q1", "text": "first?", "answer": "x"}\n\n{"query_id": 2, "text": "second"}\n')
    assert load_queries(q) == {"q1": "first?", "2": "second"}
    r = tmp_path / "qrels.tsv"
    r.write_text("query_id\tcorpus_id\tscore\nq1\tA#p1\t1\nq1\tA#p2\t2\nq2\tB#p0\t0\n")
    assert load_qrels(r) == {"q1": {"A#p1": 1.0, "A#p2": 2.0}}  # score 0 is not relevant
    assert qrels_level(load_qrels(r)) == "page"
    assert qrels_level({"q": {"A": 1.0}}) == "doc"
    with pytest.raises(ValueError, match="mix"):
        qrels_level({"q": {"A": 1.0, "A#p1": 1.0}})


def test_load_errors_name_the_line(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"query_id": "q1", "text": "ok"}\n{"id": "q2"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2"):
        load_queries(q)
    r = tmp_path / "r.tsv"
    r.write_text("query_id\tcorpus_id\tscore\nq1 A#p1 1\n")
    with pytest.raises(ValueError, match=r"r.tsv:2"):
        load_qrels(r)


def test_financebench_files_load(test_data: Path) -> None:
    root = test_data / "financebench-dev"
    if not (root / "qrels.tsv").is_file():
        pytest.skip("financebench-dev not in the test data")
    queries, qrels = load_queries(root / "queries.jsonl"), load_qrels(root / "qrels.tsv")
    assert set(qrels) <= set(queries) and qrels_level(qrels) == "page"


# ---------------------------------------------------------------- BM25


def test_tokenize() -> None:
    assert tokenize("Capital-Expenditure: $1,577 (FY2018)") == ["capital", "expenditure", "1", "577", "fy2018"]


def test_bm25_ranks_the_page_with_the_query_words_first() -> None:
    index = PageBM25.from_texts({
        "A#p0": "The bridge was closed for repairs after the storm.",
        "A#p1": "Capital expenditure for the year was 1,577 million dollars.",
        "B#p0": "Espresso is brewed by forcing hot water through ground coffee.",
        "B#p1": "The year was good for coffee growers.",
    })
    results = index.search("capital expenditure this year", k=10)
    assert results[0][0] == "A#p1"
    assert [p for p, _ in results] == ["A#p1", "B#p1"]  # only pages sharing a term
    assert results[0][1] > results[1][1] > 0
    assert index.search("zebra unicorn") == []
    assert index.search("!!!") == []
    assert len(index.search("the", k=1)) == 1


def test_page_texts_from_items() -> None:
    sha = "d" * 64
    items = [
        Item(item_id(sha, "chunk", 0, 1), "chunk", "/c/Doc.pdf", sha, 0, None, "second chunk", ordinal=1),
        Item(item_id(sha, "chunk", 0, 0), "chunk", "/c/Doc.pdf", sha, 0, None, "first chunk", ordinal=0),
        Item(item_id(sha, "figure", 0, 0), "figure", "/c/Doc.pdf", sha, 0, None, "figure words", ordinal=0),
        Item(item_id(sha, "chunk", 2, 0), "chunk", "/c/Doc.pdf", sha, 2, None, "page two", ordinal=0),
        Item(item_id("e" * 64, "image", 0, 0), "image", "/c/scan.png", "e" * 64, 0, None, "ocr text"),
        Item(item_id("f" * 64, "image", 0, 0), "image", "/c/blank.png", "f" * 64, 0, None, ""),
    ]
    assert page_texts(items_to_table(items)) == {
        "Doc#p0": "first chunk\nsecond chunk", "Doc#p2": "page two", "scan#p0": "ocr text"}


# ---------------------------------------------------------------- end to end on a tiny snapshot

# (file, page) -> chunk texts. Queries and qrels name pages; pages 0-based.
PAGES = {
    ("report.pdf", 0): ["The quarterly revenue grew by twelve percent compared to last year.",
                        "Operating margins widened as costs fell."],
    ("report.pdf", 1): ["Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen."],
    ("report.pdf", 2): ["The bridge was closed for repairs after the storm damaged its steel cables.",
                        "Traffic was diverted over the old bridge."],
    ("notes.pdf", 0): ["Our hiking trail climbs steeply through pine forest up to a glacier lake."],
    ("notes.pdf", 1): ["The vaccine trial enrolled four thousand volunteers across ten hospitals."],
    ("notes.pdf", 2): ["Espresso is brewed by forcing hot water through finely ground coffee beans."],
}
QUERIES = [
    {"query_id": "plants", "text": "How do plants turn light into sugar?"},
    {"query_id": "coffee", "text": "coffee preparation with pressurized hot water"},
    {"query_id": "storm", "text": "storm damage closed the bridge"},
    {"query_id": "unjudged", "text": "a query without judgements"},
]
QRELS = ("query_id\tcorpus_id\tscore\n"
         "plants\treport#p1\t2\ncoffee\tnotes#p2\t1\nstorm\treport#p2\t2\nstorm\treport#p0\t1\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A published snapshot: two 3-page PDFs (1-2 chunks a page), one image file; text and image spaces."""
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        from PIL import Image

        from mmrag_core.models.clip_encoder import ClipEncoder
        from mmrag_core.models.text_encoder import TextEncoder

        base = tmp_path_factory.mktemp("eval")
        clip = ClipEncoder(f"local-dir:{make_tiny_clip(base / 'clip')}", None)
        text_enc = TextEncoder("all-MiniLM-L6-v2")
        store = Store(base / "store")
        records = []
        for name in ("report.pdf", "notes.pdf"):
            sha, uri = hashlib.sha256(name.encode()).hexdigest(), f"/corpus/{name}"
            items = [Item(item_id(sha, "chunk", page, o), "chunk", uri, sha, page, (0.0, 0.0, 10.0, 10.0), text,
                          ordinal=o)
                     for (doc, page), texts in PAGES.items() if doc == name for o, text in enumerate(texts)]
            items += [Item(item_id(sha, "outline", page, 0), "outline", uri, sha, page, (0.0, 0.0, 10.0, 10.0),
                           f"{name} | {' '.join(texts[0].split()[:4])}")  # the document and a heading-like line
                      for (doc, page), texts in PAGES.items() if doc == name]
            ids, texts = text_inputs(items)
            write_record(store, build_record(sha, uri, items, {"text": (ids, text_enc.encode(texts))}, [], "mk", {}))
            records.append(read_record(store, sha))
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "PNG")
        sha, uri = hashlib.sha256(b"album.png").hexdigest(), "/corpus/album.png"
        img = Item(item_id(sha, "image", 0, 0), "image", uri, sha, 0, (0.0, 0.0, 32.0, 32.0), "a red square",
                   text_source="ocr", width=32, height=32, image_png=buf.getvalue())
        vectors = {"image": (np.array([img.id]), clip.encode_images([img.image_png]))}
        write_record(store, build_record(sha, uri, [img], vectors, [], "mk", {}))
        records.append(read_record(store, sha))
        models = {"text": text_enc.describe(), "image": {**clip.describe(), "model_config": None}}
        publish_records(store, records, models)
        (base / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
        (base / "qrels.tsv").write_text(QRELS)
        snapshot = open_snapshot(store)
        yield {"base": base, "store": base / "store", "snapshot": snapshot,
               "engine": QueryEngine(snapshot, QuerySettings(search_depth=50))}  # shallower than eval searches
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def result(built: dict) -> Evaluation:
    base = built["base"]
    return evaluate(built["engine"], load_queries(base / "queries.jsonl"), load_qrels(base / "qrels.tsv"))


def test_evaluate_end_to_end(built: dict, result: Evaluation) -> None:
    assert [r["system"] for r in result.rows] == list(SYSTEMS)
    assert SYSTEMS == ("bm25", "text", "image", "lexical", "outline", "hybrid", "routed", "late", "early", "cascade",
                       "default")
    assert result.level == "page" and result.queries == 3 and result.snapshot == built["snapshot"].id
    assert any("no relevant judgement" in n for n in result.notes)
    rows = {r["system"]: r for r in result.rows}
    # the text space finds each paraphrased page first; 'storm' also has a second, lesser page
    assert result.rankings["text"]["plants"][0] == "report#p1"
    assert result.rankings["text"]["coffee"][0] == "notes#p2"
    assert result.rankings["text"]["storm"][0] == "report#p2"
    assert rows["text"]["recall@10"] == 1.0 and rows["text"]["mrr@10"] == 1.0
    assert rows["text"]["recall@1"] == pytest.approx(round((1 + 1 + 0.5) / 3, 4))
    assert 0 < rows["text"]["ndcg@5"] <= 1.0
    # every ranking is of distinct pages, at most 10, and pages exist in the corpus
    corpus = {f"{Path(f).stem}#p{p}" for f, p in PAGES} | {"album#p0"}
    for system, per_query in result.rankings.items():
        for ranking in per_query.values():
            assert len(ranking) == len(set(ranking)) <= 10 and set(ranking) <= corpus, system
    # 'bm25' finds the bridge page by its words; pages without a query word are not ranked
    assert result.rankings["bm25"]["storm"][0] == "report#p2"
    assert "album#p0" not in result.rankings["bm25"]["storm"]
    # so does the snapshot's published lexical index, and the hybrid fusion of it with the text space
    assert result.rankings["lexical"]["storm"][0] == result.rankings["hybrid"]["storm"][0] == "report#p2"
    # the engine's own search depth is left as it was
    assert built["engine"].search_depth == 50
    assert result.curves["text"][0] == rows["text"]["recall@1"] and len(result.curves["text"]) == 10
    assert all(result.curves[s] == sorted(result.curves[s]) for s in result.curves)  # recall@k never drops


def test_rows_json_schema(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    write_json(result, path)
    data = json.loads(path.read_text())
    assert [r["system"] for r in data["rows"]] == list(SYSTEMS)
    for row in data["rows"]:
        assert set(row) == {"system", "recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@5", "ndcg@10",
                            "latency_p50_ms", "latency_p99_ms"}
        assert row["system"] in SYSTEMS
        for key in METRICS[:6]:
            assert isinstance(row[key], float) and 0.0 <= row[key] <= 1.0
        assert 0.0 <= row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert data["level"] == "page" and data["queries"] == 3


def test_plot_is_a_png(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "recall.png"
    plot_recall(result, path)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_markdown_table(result: Evaluation) -> None:
    lines = markdown_table(result.rows).splitlines()
    assert lines[0] == "| system | R@1 | R@5 | R@10 | MRR@10 | nDCG@5 | nDCG@10 | p50 ms | p99 ms |"
    assert lines[1].startswith("|---|---:")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == list(SYSTEMS)


def test_evaluate_selected_systems_and_errors(built: dict) -> None:
    engine = built["engine"]
    queries = {"storm": "storm damage closed the bridge"}
    qrels = {"storm": {"report#p2": 1.0}}
    res = evaluate(engine, queries, qrels, systems=["text", "bm25"])
    assert [r["system"] for r in res.rows] == ["text", "bm25"]
    assert res.rows[0]["recall@1"] == 1.0
    # document-level qrels rank distinct documents
    doc = evaluate(engine, queries, {"storm": {"report": 1.0}}, systems=["text"])
    assert doc.level == "doc" and doc.rankings["text"]["storm"][0] == "report"
    assert doc.rankings["text"]["storm"] == ["report", "notes"]  # the image file is not in the text space
    with pytest.raises(ValueError, match="unknown system"):
        evaluate(engine, queries, qrels, systems=["colbert"])
    with pytest.raises(ValueError, match="no query"):
        evaluate(engine, {"other": "x"}, qrels, systems=["text"])


def test_image_system_needs_an_image_space(built: dict) -> None:
    import dataclasses

    snap = built["snapshot"]
    text_only = dataclasses.replace(snap, indexes={"text": snap.indexes["text"]})
    engine = QueryEngine(text_only)
    assert available_systems(engine) == ["bm25", "text", "lexical", "outline", "hybrid", "routed", "late",
                                         "default"]
    no_lexical = QueryEngine(dataclasses.replace(text_only, lexical=None))
    assert available_systems(no_lexical) == ["bm25", "text", "outline", "late", "default"]
    with pytest.raises(ValueError, match="need a lexical index"):
        evaluate(no_lexical, {"q": "bridge"}, {"q": {"report#p2": 1.0}}, systems=["hybrid"])
    for system in ("image", "early", "cascade"):
        with pytest.raises(ValueError, match=f"system '{system}' cannot run: the snapshot has no image space"):
            evaluate(engine, {"q": "bridge"}, {"q": {"report#p2": 1.0}}, systems=[system])


def test_cli_eval(built: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    base = built["base"]
    out_json, out_png = tmp_path / "e.json", tmp_path / "e.png"
    rc = main(["eval", "--queries", str(base / "queries.jsonl"), "--qrels", str(base / "qrels.tsv"),
               "--store", str(built["store"]), "--systems", "bm25,text", "--json", str(out_json),
               "--plot", str(out_png)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| system | R@1 | R@5 | R@10 | MRR@10 | nDCG@5 | nDCG@10 | p50 ms | p99 ms |" in captured.out
    assert "| bm25 |" in captured.out and "| text |" in captured.out and "| default |" not in captured.out
    assert "3 queries, page-level" in captured.out
    assert [r["system"] for r in json.loads(out_json.read_text())["rows"]] == ["bm25", "text"]
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_cli_eval_bad_system_is_a_usage_error(built: dict, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    base = built["base"]
    rc = main(["eval", "--queries", str(base / "queries.jsonl"), "--qrels", str(base / "qrels.tsv"),
               "--store", str(built["store"]), "--systems", "text,nope"])
    assert rc == 2 and "unknown system" in capsys.readouterr().err
