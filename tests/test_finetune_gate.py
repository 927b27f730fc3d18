"""The promotion gate of a fine-tuned text model (issue 16): a candidate snapshot is published without moving
LATEST, both snapshots are evaluated on the same questions, and LATEST moves only when the candidate wins; the
``finetune`` deployment runs the whole loop through a real Prefect server and shows the comparison as artifacts.

The in-process tests use the tiny two-company corpus (tests/learn_corpus.py) and a model trained for a few steps;
which way the gate goes is set by its margin (a real gain can never exceed 1, nor fall below -1), so both
outcomes are exercised on real evaluations of real snapshots."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmrag_core.config import load_settings
from tests.learn_corpus import publish_corpus, write_labels
from tests.tiny_models import force_hf_offline

REPO = Path(__file__).resolve().parents[1]
MMRAG = [sys.executable, "-m", "flows.cli"]
TRAIN = {"finetune_batch_size": 4, "finetune_lr": 1e-2, "finetune_max_steps": 10, "finetune_eval_every": 5,
         "finetune_patience": 10}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    force_hf_offline(monkeypatch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The corpus published (LATEST, all-MiniLM-L6-v2), a model fine-tuned on it for a few steps (labelled and
    self-supervised pairs), and a candidate snapshot indexed with that model, published without moving LATEST."""
    from tasks.finetune_tasks import finetune

    root = tmp_path_factory.mktemp("gate")
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        store = publish_corpus(root / "store")
        q, r = write_labels(root / "labels")
        current = store.latest_id()
        out = finetune(load_settings(store=str(store.root), **TRAIN), str(q), str(r), synthetic=True, use_ray=False)
        candidate = _publish_candidate(store, out["path"])
    finally:
        mp.undo()
    return {"store": store, "queries": q, "qrels": r, "current": current, "candidate": candidate, "model": out["path"]}


def _publish_candidate(store, model: str) -> str:
    """The corpus embedded with ``model`` and published as a candidate (``move_latest=False``); its id."""
    from mmrag_core.config import Settings
    from mmrag_core.ingest.encoder_inputs import text_inputs
    from mmrag_core.ingest.sources import DocRef
    from mmrag_core.models.text_encoder import TextEncoder
    from mmrag_core.snapshot.open import latest_manifest
    from mmrag_core.snapshot.publish import IndexRequest, index_and_publish
    from mmrag_core.storage.records import build_record, write_record
    from tests.learn_corpus import corpus_items

    tuned = TextEncoder(model, store=store)
    docs = []
    for sha, uri, items in corpus_items():
        ids, texts = text_inputs(items)
        write_record(store, build_record(sha, uri, items, {"text": (ids, tuned.encode(texts))}, [], "candidate", {}))
        docs.append(DocRef(uri, 0, sha))
    request = IndexRequest(docs, [], {"text": tuned.describe()}, "candidate", "candidate", "/corpus", {}, True,
                           move_latest=False)
    return index_and_publish(store, request, latest_manifest(store), Settings(store=store.uri)).id


def _gate_settings(trained: dict, **kw: object):
    return load_settings(store=str(trained["store"].root), **{**TRAIN, **kw})


# ---- the decision ------------------------------------------------------------------------------------------


def test_the_candidate_must_gain_more_than_the_margin() -> None:
    from mmrag_core.eval.promotion import decide

    current = [{"system": "text", "ndcg@5": 0.50}, {"system": "default", "ndcg@5": 0.60}]
    candidate = [{"system": "text", "ndcg@5": 0.70}, {"system": "default", "ndcg@5": 0.65}]
    assert decide(current, candidate, "default", "ndcg@5", 0.0).promote
    assert decide(current, candidate, "default", "ndcg@5", 0.0).gain == pytest.approx(0.05)
    assert not decide(current, candidate, "default", "ndcg@5", 0.05).promote  # a gain equal to the margin: no
    assert not decide(current, current, "default", "ndcg@5", 0.0).promote  # a tie keeps LATEST
    assert decide(candidate, current, "text", "ndcg@5", -0.25).promote  # a negative margin tolerates a loss
    with pytest.raises(ValueError, match="routed"):
        decide(current, candidate, "routed", "ndcg@5", 0.0)


def test_the_finetune_deployment_promotes_and_can_be_scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli.parser import build_parser
    from flows.deployments import build_deployments

    for name in [n for n in os.environ if n.startswith("MMRAG_")]:
        monkeypatch.delenv(name)
    deps = {d.name: d for d in build_deployments(load_settings(store="/data/store", finetune_cron="0 5 * * 1"))}
    finetune = deps["finetune"]
    assert finetune.parameters["promote"] is True and "promote" in finetune.description.lower()
    assert [(s.schedule.cron, s.active) for s in finetune.schedules] == [("0 5 * * 1", True)]
    assert finetune._parameter_openapi_schema.model_dump()["properties"]["promote"]["description"]
    assert load_settings().finetune_promote is False, "the CLI promotes only with --promote"
    args = build_parser().parse_args(["finetune", "--synthetic", "--promote", "--source", "/data/corpus"])
    assert args.promote and args.source == "/data/corpus"
    assert not build_parser().parse_args(["finetune"]).promote


# ---- candidate snapshots and the gate on real evaluations ---------------------------------------------------


def test_a_candidate_is_published_without_moving_latest(trained: dict) -> None:
    from mmrag_core.snapshot.open import load_manifest, open_snapshot

    store = trained["store"]
    assert store.latest_id() == trained["current"] != trained["candidate"]
    manifest = load_manifest(store, trained["candidate"])
    assert manifest.parent == trained["current"] and manifest.models["text"]["name"] == trained["model"]
    assert trained["candidate"] in store.list_snapshots()
    assert open_snapshot(store, trained["candidate"]).items.num_rows == open_snapshot(store).items.num_rows


def test_the_held_out_pairs_are_the_training_runs_validation_queries(trained: dict) -> None:
    """Without configured questions the gate rebuilds the run's examples from the model's metadata, checks their
    fingerprint and asks the held-out ones; changed training files are refused, not silently re-split."""
    from mmrag_core.eval.promotion import gate_questions, stored_model_meta
    from mmrag_core.learn.finetune import build_examples, train_val_split
    from mmrag_core.query.engine import open_engine

    settings = _gate_settings(trained)
    questions = gate_questions(settings, trained["model"])
    meta = stored_model_meta(trained["store"], trained["model"])
    assert "held-out validation pairs" in questions.origin and meta["run"]["key"] in questions.origin
    examples = build_examples(open_engine(settings), str(trained["queries"]), str(trained["qrels"]), True)
    train, val = train_val_split(examples, settings.learn)
    assert set(questions.queries) == {e.query_id for e in val} and questions.qrels
    assert not set(questions.queries) & {e.query_id for e in train}
    assert len(val) < len(examples) and meta["training"]["val_queries"] == len(val)
    pages = {f"{e.doc}#p{e.page}" for e in examples}
    assert all(set(judged) <= pages for judged in questions.qrels.values())

    original = trained["queries"].read_text()
    try:
        trained["queries"].write_text(original.replace("cost of goods sold", "cost of revenue"))
        with pytest.raises(ValueError, match="cannot be rebuilt"):
            gate_questions(settings, trained["model"])
    finally:
        trained["queries"].write_text(original)


def test_a_losing_candidate_leaves_latest_and_stays_readable(trained: dict) -> None:
    from mmrag_core.eval.promotion import run_gate
    from mmrag_core.query.engine import open_engine
    from tasks.promotion_tasks import gate_markdown, gate_rows

    store = trained["store"]
    settings = _gate_settings(trained, finetune_promote_min_gain=1.0)  # no ranking gains more than 1
    result = run_gate(settings, trained["current"], trained["candidate"], trained["model"])
    assert result.decision == "kept" and not result.promoted and not result.comparison.promote
    assert store.latest_id() == trained["current"]
    engine = open_engine(settings, trained["candidate"])  # still published, still searchable by id
    assert engine.search("BOLT consolidated balance sheets", k=3)
    assert engine.text_encoder.describe()["name"] == trained["model"]
    assert {r["system"] for r in result.rows["current"]} == {"text", "hybrid", "default"}
    md = gate_markdown(result.to_json(), str(store.root))
    assert f"LATEST stays `{trained['current']}`" in md and "**kept**" in md
    assert f"| current `{trained['current']}` | candidate `{trained['candidate']}` |" in md
    assert "| **default** | **ndcg@5** |" in md
    rows = gate_rows(result.to_json())
    assert len(rows) == 3 * 6 and sum(r["gate"] for r in rows) == 1
    gate = next(r for r in rows if r["gate"])
    assert (gate["current"], gate["candidate"]) == (result.comparison.current_value, result.comparison.candidate_value)


def test_a_winning_candidate_moves_latest(trained: dict) -> None:
    """On the store's configured questions (finetune_eval_queries/qrels), with a margin any result clears."""
    from mmrag_core.eval.promotion import run_gate
    from mmrag_core.snapshot.promote import LatestMoved, promote_snapshot

    store = trained["store"]
    settings = _gate_settings(trained, finetune_promote_min_gain=-1.0, finetune_promote_system="text",
                              finetune_promote_metric="recall@5", finetune_eval_queries=str(trained["queries"]),
                              finetune_eval_qrels=str(trained["qrels"]))
    try:
        result = run_gate(settings, trained["current"], trained["candidate"], trained["model"])
        assert result.decision == "promoted" and result.questions == 6 and "finetune_eval_queries" in result.origin
        assert store.latest_id() == trained["candidate"]
        assert result.comparison.system == "text" and result.comparison.metric == "recall@5"
        # A candidate built against a LATEST that has moved since is never promoted over it.
        with pytest.raises(LatestMoved, match="not promoted"):
            promote_snapshot(store, trained["current"], expected_latest="20000101T000000000000Z")
        stale = run_gate(settings, trained["current"], trained["candidate"], trained["model"])
        assert stale.decision == "stale" and store.latest_id() == trained["candidate"]
    finally:
        store.set_latest(trained["current"])


# ---- the finetune deployment through a real Prefect server ---------------------------------------------------


@pytest.mark.slow
def test_the_finetune_deployment_gates_its_model(prefect_server, tmp_path: Path) -> None:
    """The deployments registered as ``mmrag deploy`` does (``finetune``: promote on); a run started from the
    deployment, served by ``mmrag worker``, trains on Ray Train, indexes the source again with the model into a
    candidate snapshot, evaluates both on the held-out pairs and publishes the comparison; LATEST follows the
    decision."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import build_deployments, register
    from tasks.artifacts import store_key
    from tasks.promotion_tasks import ROWS_KEY, SUMMARY_KEY
    from tests.prefect_server import Background, wait_for_run
    from tests.test_learn import _pdfs

    src, store = _pdfs(tmp_path / "src"), tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    env.update({**prefect_server.env(), "HF_HUB_OFFLINE": "1", "MMRAG_CLIP_MODEL": "off",
                "OMP_WAIT_POLICY": "PASSIVE", "PREFECT_WORKER_QUERY_SECONDS": "2"})
    proc = subprocess.run(MMRAG + ["index", str(src), "--store", str(store)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mmrag index:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    current = (store / "LATEST").read_text().strip()
    no_crons = {"reindex_cron": "", "full_rebuild_cron": "", "gc_cron": ""}  # only our run on the shared server

    worker = Background(MMRAG + ["worker", "--pool", "mmrag"], env, tmp_path / "worker.log", cwd=REPO)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        ids = register(build_deployments(load_settings(store=str(store), **no_crons)))
    assert "finetune/finetune" in ids
    with worker, temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}), \
            get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("finetune/finetune")
        assert dep.parameters["promote"] is True and dep.parameters["store"] == str(store)
        run = client.create_flow_run_from_deployment(dep.id, parameters={"synthetic": True, "overrides": TRAIN})
        run = wait_for_run(client, run.id, worker, 600)
        assert run.state is not None and run.state.is_completed(), f"flow run {run.state}:\n{worker.log_text()}"
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    by_key = {a.key: a for a in artifacts if a.key}
    summary = by_key[store_key(SUMMARY_KEY, str(store))]
    table = by_key[store_key(ROWS_KEY, str(store))]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    snapshots = sorted(p.name for p in (store / "snapshots").iterdir() if (p / "manifest.json").is_file())
    assert len(snapshots) == 2 and snapshots[0] == current
    candidate = snapshots[1]
    manifest = json.loads((store / "snapshots" / candidate / "manifest.json").read_text())
    assert manifest["parent"] == current and manifest["models"]["text"]["name"].startswith("store:models/text/")
    assert summary.type == "markdown" and f"candidate `{candidate}`" in summary.data and "held-out" in summary.data
    assert {r["system"] for r in rows} >= {"text", "default"} and sum(r["gate"] for r in rows) == 1
    gate = next(r for r in rows if r["gate"])
    promoted = gate["candidate"] - gate["current"] > 0.0
    assert ("**promoted**" in summary.data) == promoted
    assert (store / "LATEST").read_text().strip() == (candidate if promoted else current)
