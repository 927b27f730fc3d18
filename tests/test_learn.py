"""Fine-tuning the retriever (``mmrag_core.learn``): training pairs, hard-negative mining with its false-negative
guard, the training loop (plain and on Ray Train), resuming a killed run, and a stored model that indexes and
queries. Tiny data and few steps; the real all-MiniLM-L6-v2, offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from mmrag_core.config import load_settings
from tests.learn_corpus import publish_corpus, write_labels
from tests.tiny_models import force_hf_offline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A store with the tiny two-company corpus published, and labelled questions over it."""
    root = tmp_path_factory.mktemp("learn")
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        publish_corpus(root / "store")
    finally:
        mp.undo()
    q, r = write_labels(root / "labels")
    return root / "store", q, r


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    force_hf_offline(monkeypatch)


def _settings(store: Path, **kw: object):
    base = {"finetune_batch_size": 4, "finetune_lr": 1e-2, "finetune_max_steps": 6, "finetune_eval_every": 3,
            "finetune_patience": 10}
    return load_settings(store=str(store), **{**base, **kw})


def test_self_supervised_pairs_come_from_headings_and_statement_lines(corpus: tuple[Path, Path, Path]) -> None:
    from mmrag_core.learn.pairs import corpus_pages, self_supervised
    from mmrag_core.snapshot.open import open_snapshot
    from mmrag_core.storage.store import Store

    pages = corpus_pages(open_snapshot(Store(corpus[0])).items)
    examples = self_supervised(pages)
    line_items = [e for e in examples if e.source == "line_item"]
    capex = [e for e in line_items if "purchases of property, plant and equipment" in e.guards[0]]
    assert {(e.doc, e.page) for e in capex} == {("ACME_2020_10K", 2), ("BOLT_2021_10K", 2)}
    assert all("Acme" in e.query or "Bolt" in e.query for e in examples)  # issuer without "CORPORATION", "INC."
    assert all("FY2020" in e.query for e in examples if e.doc == "ACME_2020_10K")
    assert {e.source for e in examples} == {"heading", "line_item"}
    assert all(e.outline and e.positive for e in examples)


def test_mining_excludes_positives_and_answer_bearing_pages(corpus: tuple[Path, Path, Path]) -> None:
    """Negatives are high-ranked pages that are not positives; a page holding the answer string is no negative."""
    from mmrag_core.learn.finetune import build_examples
    from mmrag_core.learn.mining import mine_to_store
    from mmrag_core.query.engine import open_engine
    from mmrag_core.storage.store import Store

    store_path, q, r = corpus
    settings = _settings(store_path)
    engine = open_engine(settings)
    examples = build_examples(engine, str(q), str(r))
    assert {e.source for e in examples} == {"labelled"}
    store = Store(store_path)
    key, table = mine_to_store(store, engine, examples, depth=20, per_query=5)
    assert key.startswith("learn/negatives/") and store.exists(key)
    meta = json.loads(store.read_parquet(key).schema.metadata[b"mmrag.mining"])
    assert meta["fingerprint"] in key and meta["snapshot"] == engine.snapshot.id
    rows = table.to_pylist()
    assert rows and all(r["negative"] for r in rows)
    for row in rows:
        assert (row["negative_doc"], row["negative_page"]) != (row["doc"], row["page"])
    # q3 asks for total assets ($7,800): both companies' balance sheets print 7,800, so neither is a negative.
    q3 = [(r["negative_doc"], r["negative_page"]) for r in rows if r["query_id"] == "q3"]
    assert q3 and ("BOLT_2021_10K", 3) not in q3 and ("ACME_2020_10K", 3) not in q3
    # Hard negatives come from the same filing and from the other one.
    assert {r["same_doc"] for r in rows} == {True, False}
    again_key, again = mine_to_store(store, engine, examples, depth=20, per_query=5)
    assert again_key == key and again.num_rows == table.num_rows  # mined once, read back


def test_false_negative_guards() -> None:
    from mmrag_core.learn.pairs import Page, is_false_negative

    statement = Page("X", 3, [(1, "Purchases of property, plant and equipment\n(812)")],
                     "X CORP | FY2020 | Consolidated Statements of Cash Flows")
    mdna = Page("X", 1, [(2, "We expect purchases of property, plant and equipment to grow.")],
                "X CORP | FY2020 | MD&A")
    guard = ("statement:cashflow:purchases of property, plant and equipment",)
    assert is_false_negative(statement, guard) and not is_false_negative(mdna, guard)
    assert is_false_negative(statement, ("text:(812)",))
    quote = "the quick brown fox jumps over the lazy dog near the river bank " * 2
    assert is_false_negative(Page("X", 5, [(3, "Intro. " + quote + " end")]), (f"evidence:{quote}",))
    assert not is_false_negative(mdna, (f"evidence:{quote}",))


def test_training_steps_change_the_adapter_and_lower_the_validation_loss(corpus: tuple[Path, Path, Path]) -> None:
    """A few plain (single-process) steps of the projection adapter on labelled + self-supervised pairs; the model
    is written to the store, versioned with checksums, and loads as a text encoder that differs from the base."""
    import numpy as np

    from mmrag_core.models.stored import check_files, read_meta
    from mmrag_core.models.text_encoder import TextEncoder
    from mmrag_core.storage.store import Store
    from tasks.finetune_tasks import finetune

    store_path, q, r = corpus
    out = finetune(_settings(store_path, finetune_max_steps=30, finetune_eval_every=10), str(q), str(r),
                   synthetic=True, use_ray=False)
    assert out["steps"] == 30 and out["pairs"] > 10
    assert out["val_loss_after"] < out["val_loss_before"]
    store = Store(store_path)
    folder = Path(store.path(out["path"].removeprefix("store:")))
    meta = read_meta(folder)
    check_files(folder, meta)
    assert meta["id"] == out["model_id"] and meta["base"] == "all-MiniLM-L6-v2" and meta["kind"] == "projection"
    assert meta["parent"] == "all-MiniLM-L6-v2" and meta["training"]["labelled"] and meta["settings_fingerprint"]
    assert meta["validation"]["loss_after"] < meta["validation"]["loss_before"]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 1024 * 1024
    tuned, base = TextEncoder(out["path"], store=store), TextEncoder("all-MiniLM-L6-v2")
    texts = ["capital expenditure", "Purchases of property, plant and equipment"]
    assert not np.allclose(tuned.encode(texts), base.encode(texts), atol=1e-4)
    assert tuned.describe()["fine_tuned"]["id"] == out["model_id"]
    assert tuned.state_sha256 != base.state_sha256


def test_a_killed_training_run_resumes_from_its_checkpoint(corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """SIGKILLed right after its first checkpoint (``MMRAG_CRASH_AT``), the same run started again continues from
    that step instead of starting over."""
    store_path, q, r = corpus
    script = (
        "import json, sys\n"
        "from mmrag_core.config import load_settings\n"
        "from tasks.finetune_tasks import finetune\n"
        f"s = load_settings(store={str(store_path)!r}, finetune_batch_size=4, finetune_lr=1e-2, finetune_seed=3,\n"
        "                  finetune_max_steps=6, finetune_eval_every=2, finetune_patience=10)\n"
        f"out = finetune(s, {str(q)!r}, {str(r)!r}, use_ray=False)\n"
        "print('RESULT ' + json.dumps(out))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_CRASH_AT": "finetune-checkpoint"}
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    env.pop("MMRAG_CRASH_AT")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert out["resumed_from"] == 2 and out["steps"] == 6


@pytest.mark.slow
def test_lora_steps_on_ray_train(corpus: tuple[Path, Path, Path]) -> None:
    """LoRA inside the real MiniLM, trained by a Ray Train ``TorchTrainer`` (one CPU worker): the adapter moves and
    the validation loss falls."""
    from mmrag_core.models.stored import read_meta
    from mmrag_core.storage.store import Store
    from tasks.finetune_tasks import finetune

    store_path, q, r = corpus
    settings = _settings(store_path, finetune_method="lora", finetune_lr=2e-3, finetune_max_steps=4,
                         finetune_eval_every=2, finetune_val_fraction=0.3, finetune_max_length=64, num_cpus=2)
    out = finetune(settings, str(q), str(r), synthetic=True, use_ray=True)
    assert out["steps"] == 4 and out["val_loss_after"] < out["val_loss_before"]
    meta = read_meta(Store(store_path).path(out["path"].removeprefix("store:")))
    assert meta["kind"] == "lora" and "adapter_model.safetensors" in meta["files"]
    assert meta["run"]["workers"] == 1


def test_a_snapshot_built_with_a_stored_model_records_it_and_queries_with_it(
        corpus: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Records embedded with a stored model are keyed on its checksum; the published manifest names the model, and
    the query engine loads that model from the snapshot's store."""
    from mmrag_core.config import Settings
    from mmrag_core.ingest.encoder_inputs import text_inputs
    from mmrag_core.ingest.record_keys import record_key
    from mmrag_core.learn.training import TrainConfig, train_loop
    from mmrag_core.learn.registry import list_models, publish_model
    from mmrag_core.models.text_encoder import TextEncoder
    from mmrag_core.query.engine import open_engine
    from mmrag_core.storage.records import build_record
    from mmrag_core.storage.store import Store
    from tests.learn_corpus import corpus_items
    from tests.published import publish_records

    store = Store(tmp_path / "store")
    rows = [{"query_id": "a", "query": "capex", "doc": "D", "page": 1, "positive": "purchases of PP&E",
             "outline": None, "negative_doc": "D", "negative_page": 2, "negative": "net sales"},
            {"query_id": "b", "query": "revenue", "doc": "D", "page": 2, "positive": "net sales",
             "outline": None, "negative_doc": "D", "negative_page": 1, "negative": "purchases of PP&E"}]
    cfg = TrainConfig(base="all-MiniLM-L6-v2", run_key="learn/runs/t", store_root=str(store.root), batch_size=2,
                      max_steps=2, eval_every=2)
    train_loop({"cfg": asdict(cfg), "train": rows, "val": rows})
    model_id, name = publish_model(store, "learn/runs/t", "text", {"base": cfg.base, "method": cfg.method})
    assert [m["id"] for m in list_models(store)] == [model_id]
    assert publish_model(store, "learn/runs/t", "text", {"base": cfg.base, "method": cfg.method})[1] == name

    tuned = TextEncoder(name, store=store)
    settings = Settings(store=str(store.root), text_model=name)
    keys = {record_key({"text": m.describe()}, s) for m, s in
            ((tuned, settings), (TextEncoder("all-MiniLM-L6-v2"), Settings(store=str(store.root))))}
    assert len(keys) == 2  # switching models re-embeds: the records' key changes
    records = []
    for sha, uri, items in corpus_items():
        ids, texts = text_inputs(items)
        records.append(build_record(sha, uri, items, {"text": (ids, tuned.encode(texts))}, [], "k", {}))
    manifest = publish_records(store, records, {"text": tuned.describe()}, settings=settings)
    assert manifest["models"]["text"]["name"] == name
    assert manifest["models"]["text"]["fine_tuned"]["id"] == model_id
    engine = open_engine(settings)
    assert engine.text_encoder.state_sha256 == tuned.state_sha256
    hits = engine.search("BOLT consolidated balance sheets", k=3)
    assert hits and hits[0].source_uri.endswith(".pdf")


def _pdfs(folder: Path) -> Path:
    """The tiny corpus as real PDFs (one page per corpus page, its headings as the first line)."""
    import pymupdf

    from tests.learn_corpus import COMPANIES, _pages

    folder.mkdir(parents=True)
    for name, (issuer, year, capex) in COMPANIES.items():
        doc = pymupdf.open()
        for headings, text in _pages(issuer, year, capex):
            page = doc.new_page()
            page.insert_text((72, 72), issuer, fontsize=12)
            page.insert_text((72, 92), headings.split(" | ")[-1], fontsize=14)
            page.insert_text((72, 120), text, fontsize=9)
        doc.save(folder / f"{name}.pdf")
    return folder


@pytest.mark.slow
def test_finetune_then_index_with_the_model_through_the_cli(tmp_path: Path) -> None:
    """``mmrag finetune --synthetic`` on an indexed store, then ``mmrag index --text-model store:...``: every document
    is embedded again (once), the new snapshot's manifest names the model, and query and eval use it."""
    src = _pdfs(tmp_path / "src")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(tmp_path / "prefect"),
           "MMRAG_CLIP_MODEL": "off", "MMRAG_FINETUNE_BATCH_SIZE": "4", "MMRAG_FINETUNE_EVAL_EVERY": "5"}
    store = str(tmp_path / "store")

    def mmrag(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"mmrag {args[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    mmrag("index", str(src), "--store", store)
    mmrag("finetune", "--store", store, "--synthetic", "--max-steps", "10", "--json", str(tmp_path / "ft.json"))
    ft = json.loads((tmp_path / "ft.json").read_text())
    assert {"model_id", "space", "path", "pairs", "steps", "val_loss_before", "val_loss_after"} <= set(ft)
    assert ft["steps"] == 10 and ft["path"] == f"store:models/text/{ft['model_id']}"
    proc = mmrag("index", str(src), "--store", store, "--text-model", ft["path"], "--json")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    text = report["manifest"]["models"]["text"]
    assert text["name"] == ft["path"] and text["fine_tuned"]["id"] == ft["model_id"]
    q = mmrag("query", "Bolt capital expenditure cash flow statement", "--store", store, "--json")
    assert "BOLT_2021_10K" in q.stdout
    labels = write_labels(tmp_path / "labels")
    ev = mmrag("eval", "--queries", str(labels[0]), "--qrels", str(labels[1]), "--store", store, "--systems", "text")
    assert f"fine-tuned projection {ft['model_id']}" in ev.stdout


def test_the_packaged_adapter_loads_offline_with_its_checksums() -> None:
    """The shipped self-supervised adapter needs no training and no hub: its files match the sha256 its metadata
    lists, it was trained without labels, and it changes the embeddings of its base."""
    import numpy as np

    from mmrag_core.models.stored import check_files, read_meta
    from mmrag_core.models.text_encoder import PACKAGED_ADAPTERS, TextEncoder

    folder = PACKAGED_ADAPTERS["all-minilm-l6-v2-fin"]
    meta = read_meta(folder)
    check_files(folder, meta)
    assert meta["base"] == "all-MiniLM-L6-v2" and meta["training"]["labelled"] is False
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 1024 * 1024
    tuned, base = TextEncoder("all-MiniLM-L6-v2-fin"), TextEncoder("all-MiniLM-L6-v2")
    assert tuned.describe()["fine_tuned"]["id"] == meta["id"]
    texts = ["capex", "Purchases of property, plant and equipment"]
    a, b = tuned.encode(texts), base.encode(texts)
    assert float(a[0] @ a[1]) > float(b[0] @ b[1])  # the analyst's word meets the statement's line


def test_passage_pairs_tie_a_sentence_to_its_page() -> None:
    """Generic pairs (no labels): a sentence of a page -> that page, its chunk the positive; a page quoting the
    same sentence is a false negative; at most ``per_doc`` per document."""
    from mmrag_core.learn.pairs import Page, is_false_negative, passage_examples

    said = "The committee reviewed the draft of the report and asked the authors to add a chapter on open data."
    pages = {("book", 0): Page("book", 0, [(1, "Chapter one. " + said + " Short."), (2, "Nothing at all.")]),
             ("book", 1): Page("book", 1, [(3, "Figure 2 shows the growth of public licences over the last ten "
                                               "years in many countries.")]),
             ("book", 2): Page("book", 2, [(4, "Too short to ask.")])}
    examples = passage_examples(pages)
    assert {(e.doc, e.page) for e in examples} == {("book", 0), ("book", 1)}
    first = next(e for e in examples if e.page == 0)
    assert first.query == said and said in first.positive and first.source == "passage"
    assert is_false_negative(Page("other", 5, [(9, "As quoted: " + said)]), first.guards)
    assert not is_false_negative(pages[("book", 1)], first.guards)
    assert len(passage_examples(pages, per_doc=1)) == 1


def test_identity_penalty_and_blend_keep_the_projection_near_the_base(corpus: tuple[Path, Path, Path]) -> None:
    """The identity penalty shrinks the trained residual (W, b); blend scales the saved residual (the same run
    otherwise: the same best step, half the weights)."""
    import numpy as np
    from safetensors.numpy import load_file

    from mmrag_core.storage.store import Store
    from tasks.finetune_tasks import finetune

    store_path, q, r = corpus

    def trained(**kw: object) -> dict:
        out = finetune(_settings(store_path, finetune_max_steps=12, **kw), str(q), str(r), synthetic=True,
                       use_ray=False)
        folder = Path(Store(store_path).path(out["path"].removeprefix("store:")))
        return load_file(str(folder / "projection.safetensors"))

    def size(w: dict) -> float:
        return float((w["weight"] ** 2).sum() + (w["bias"] ** 2).sum())

    free, held, half = trained(), trained(finetune_identity_weight=1.0), trained(finetune_blend=0.5)
    assert 0 < size(held) < 0.5 * size(free)
    assert np.allclose(half["weight"], 0.5 * free["weight"], atol=1e-6)
    assert np.allclose(half["bias"], 0.5 * free["bias"], atol=1e-6)
