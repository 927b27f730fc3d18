"""Prefect deployments, workers, artifacts and retries.

Fast tests build the deployments, render the artifacts and classify errors without a server. The slow ones
start a real Prefect server on 127.0.0.1, register the deployments with ``mmrag deploy``, serve them with
``mmrag worker`` and start a run the way the UI's Run button does (a flow run created from the deployment
with parameters of our own), then read the run's artifacts back through the API.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.params import SettingsOverrides, overrides_of, run_settings
from mmrag_core.config import Settings, load_settings
from tasks.artifacts import failure_rows, gc_markdown, store_key, summary_markdown
from tasks.retries import is_transient, retry_options

REPO = Path(__file__).resolve().parents[1]
MMRAG = [sys.executable, "-m", "flows.cli"]
CORPUS = ["pdfs/born_digital/financial_statement_notes.pdf", "pdfs/born_digital/styled_table.pdf"]
# Crons that cannot come due while the tests run (29 February), so only our own run is ever executed.
TEST_CRONS = {"MMRAG_REINDEX_CRON": "0 2 29 2 *", "MMRAG_FULL_REBUILD_CRON": "0 3 29 2 *",
              "MMRAG_GC_CRON": "0 4 29 2 *"}


@pytest.fixture
def clean_mmrag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MMRAG_"):
            monkeypatch.delenv(name)


# ---- deployments, without a server --------------------------------------------------------------------


def test_default_deployments(clean_mmrag_env: None) -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.deployments import build_deployments

    deps = {d.name: d for d in build_deployments(load_settings(store="/data/store"), source="/data/corpus")}
    assert set(deps) == {"reindex", "full-rebuild", "compact", "gc-snapshots", "evaluate", "finetune"}
    crons = {n: [s.schedule.cron for s in d.schedules] for n, d in deps.items()}
    assert crons == {"reindex": ["0 2 * * *"], "full-rebuild": ["0 3 * * 0"], "compact": [],
                     "gc-snapshots": ["0 4 * * *"], "evaluate": [], "finetune": []}
    assert all(s.active for d in deps.values() for s in d.schedules)
    assert deps["reindex"].parameters == {"source": "/data/corpus", "store": "/data/store", "retrain": False,
                                          "overrides": {"lock_wait_seconds": 14400.0}}
    assert deps["full-rebuild"].parameters["retrain"] is True
    assert deps["reindex"].entrypoint == "flows.index_flow.index_flow"
    assert deps["gc-snapshots"].entrypoint == "flows.gc_flow.gc_flow"
    assert deps["evaluate"].entrypoint == "flows.eval_flow.evaluate_flow"
    assert deps["evaluate"].parameters == {"store": "/data/store", "overrides": {}}
    assert deps["finetune"].entrypoint == "flows.finetune_flow.finetune_flow"
    assert deps["finetune"].parameters == {"store": "/data/store", "overrides": {"lock_wait_seconds": 14400.0},
                                           "promote": True}
    for d in deps.values():
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def test_run_form_is_typed(clean_mmrag_env: None) -> None:
    """The parameter schema the UI renders as a form: types, descriptions, and a typed overrides object."""
    from flows.deployments import build_deployments

    reindex = build_deployments(load_settings(), source="/data/corpus")[0]
    schema = reindex._parameter_openapi_schema.model_dump()
    props = schema["properties"]
    assert props["source"]["type"] == "string" and "index" in props["source"]["description"]
    assert props["retrain"]["type"] == "boolean" and props["retrain"]["default"] is False
    assert schema["required"] == ["source"]
    ref = json.dumps(props["overrides"])
    assert "IndexOverrides" in ref
    fields = schema["definitions"]["IndexOverrides"]["properties"]
    assert "clip_model" in fields and fields["clip_model"]["description"]
    assert fields["clip_model"]["default"] == "ViT-B-32" and fields["extract_batch_docs"]["default"] == 4
    assert "store" not in fields and "reindex_cron" not in fields
    assert _only_index_settings(set(fields))


def _only_index_settings(fields: set[str]) -> bool:
    """The reindex form: ingest, models, compute, index (and storage, retries) settings; no query or generator."""
    from mmrag_core.config import (ComputeSettings, IndexSettings, IngestSettings, ModelSettings,
                                   StorageSettings)

    allowed = {n for c in (StorageSettings, IngestSettings, ModelSettings, ComputeSettings, IndexSettings)
               for n in c.model_fields} | {"task_retries", "task_retry_delay_seconds"}
    assert fields <= allowed, sorted(fields - allowed)
    assert not fields & {"k", "fusion_strategy", "generator_model", "answerer", "keep_last", "finetune_lr"}
    return True


def test_each_flow_form_shows_its_own_settings(clean_mmrag_env: None) -> None:
    from flows.deployments import build_deployments

    deps = {d.name: d for d in build_deployments(load_settings(), source="/data/corpus")}
    gc = deps["gc-snapshots"]._parameter_openapi_schema.model_dump()["definitions"]["GcOverrides"]["properties"]
    assert "keep_last" in gc and "clip_model" not in gc and gc["keep_last"]["default"] == 5
    ev = deps["evaluate"]._parameter_openapi_schema.model_dump()["definitions"]["EvaluateOverrides"]["properties"]
    assert "generator_model" in ev and "k" in ev and "ocr_lang" not in ev
    assert run_settings(None, {"k": Settings().k}).k == Settings().k, "a default keeps the worker's value"


def test_schedules_without_a_source_are_inactive(clean_mmrag_env: None) -> None:
    from flows.deployments import build_deployments

    deps = {d.name: d for d in build_deployments(load_settings())}
    assert [s.active for s in deps["reindex"].schedules] == [False]
    assert "source" not in deps["reindex"].parameters
    assert [s.active for s in deps["gc-snapshots"].schedules] == [True]


def test_prefect_yaml_declares_the_same_deployments(clean_mmrag_env: None) -> None:
    from flows.deployments import deployment_specs

    doc = yaml.safe_load((REPO / "infra" / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in doc["deployments"]}
    specs = {s.name: s for s in deployment_specs(load_settings(), source="/data/corpus")}
    assert set(declared) == set(specs)
    for name, spec in specs.items():
        d = declared[name]
        fn = spec.flow.fn
        assert d["entrypoint"] == f"{fn.__module__}.{fn.__name__}", name
        assert [s["cron"] for s in d.get("schedules") or []] == ([spec.cron] if spec.cron else []), name
        assert set(d["parameters"]) == set(spec.parameters), name
        assert d["parameters"]["overrides"] == spec.parameters["overrides"], name
        assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}, name
    assert declared["full-rebuild"]["parameters"]["retrain"] is True


def test_deploy_needs_a_server(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["deploy"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err


# ---- typed overrides ------------------------------------------------------------------------------------


def test_overrides_model(clean_mmrag_env: None) -> None:
    o = SettingsOverrides.model_validate({"clip_model": "off", "ocr_lang": "eng+deu"})
    s = run_settings("/tmp/store", o)
    assert (s.store, s.clip_model, s.ocr_lang, s.k) == ("/tmp/store", "off", "eng+deu", Settings().k)
    assert run_settings(None, {"k": 3}).k == 3, "a plain dict (the CLI's, older callers') still works"
    with pytest.raises(ValueError):
        SettingsOverrides.model_validate({"no_such_setting": 1})
    with pytest.raises(ValueError):
        SettingsOverrides.model_validate({"store": "/elsewhere"})  # the flows' own parameter
    assert overrides_of(load_settings(store="/x", clip_model="off", gc_cron="")) == {"clip_model": "off"}


# ---- artifacts rendering ----------------------------------------------------------------------------------


def _manifest() -> dict:
    return {
        "id": "20261128T010000000000Z", "parent": None, "source": "/corpus",
        "counts": {"documents": 2, "documents_failed": 1, "items": 7, "items_by_kind": {"figure": 2, "text": 5},
                   "failures": 2},
        "stats": {"changes": {"added": 3, "changed": 0, "removed": 0, "unchanged": 0}, "documents_processed": 3,
                  "documents_reused": 0, "pages_processed": 4, "ocr_pages": 1, "full_rebuild": "no snapshot yet",
                  "seconds_discover": 0.5, "seconds_processing": 12.0, "seconds_index": 1.5},
        "spaces": {"text": {"count": 7, "index_type": "Flat", "shards": ["s1"], "tombstoned": 0,
                            "recall_at_10": 1.0}},
        "models": {"image": {"skipped": "CLIP disabled"}},
        "failures": [{"source_uri": "/corpus/empty.pdf", "page": None, "stage": "discover", "reason": "empty file"},
                     {"source_uri": "/corpus/a|b.pdf", "page": 3, "stage": "ocr", "reason": "line\nbreak"}],
    }


def test_summary_of_a_published_run() -> None:
    report = {"published": True, "snapshot": "20261128T010000000000Z", "manifest": _manifest(),
              "changes": {"added": 3}, "seconds_total": 15.25}
    md = summary_markdown(report, "/stores/main")
    assert "# Snapshot `20261128T010000000000Z` published in 15.2 s" in md
    assert "- store: `/stores/main`" in md and "full rebuild: no snapshot yet" in md
    assert "| figure | 2 |" in md and "| text | 5 |" in md and "| **all** | 7 |" in md
    assert "| discover | 1 |" in md and "| ocr | 1 |" in md
    assert "| text | 7 | Flat | 1 | 0 | 1.0 |" in md
    assert "| processing | 12.0 |" in md and "Image space skipped: CLIP disabled" in md


def test_summary_when_nothing_changed_or_nothing_to_publish() -> None:
    md = summary_markdown({"published": False, "snapshot": "S1", "changes": {"added": 0, "unchanged": 4}},
                          "/stores/main")
    assert md.startswith("# Nothing changed") and "`S1`" in md and "4 unchanged" in md
    md = summary_markdown({"nothing_to_publish": True, "source": "/c", "failures": _manifest()["failures"]}, "/s")
    assert md.startswith("# Nothing to publish") and "| discover | 1 |" in md


def test_failure_rows_and_gc_summary() -> None:
    rows = failure_rows(_manifest()["failures"])
    assert rows[0] == {"file": "/corpus/empty.pdf", "page": None, "stage": "discover", "reason": "empty file"}
    assert rows[1]["page"] == 3 and rows[1]["reason"] == "line\\nbreak"  # control characters escaped
    md = gc_markdown({"kept": ["S2"], "dropped_snapshots": ["S1"], "deleted": 9, "bytes": 1234, "young": 1,
                      "dry_run": True}, "/stores/main")
    assert "would delete 1 snapshot(s) and 9 object(s), 1234 bytes" in md
    assert "| S1 | no |" in md and "| S2 | yes |" in md


def test_cli_progress_bar(capsys: pytest.CaptureFixture) -> None:
    from flows.cli.index import progress_bar

    progress_bar(3, 12, 30.0)
    err = capsys.readouterr().err
    assert err.startswith("[" + "#" * 7 + "." * 23 + "] 3/12 docs, 30 s, ETA 1m30s")


# ---- retries ----------------------------------------------------------------------------------------------


def test_transient_errors() -> None:
    import ray.exceptions
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    transient = [OSError("connection reset"), ConnectionResetError(), TimeoutError(),
                 ray.exceptions.WorkerCrashedError(), ray.exceptions.RayActorError(),
                 EndpointConnectionError(endpoint_url="http://s3"), client_error("SlowDown", 503),
                 client_error("InternalError", 500)]
    permanent = [ValueError("bad page"), KeyError("x"), FileNotFoundError("gone"), PermissionError(),
                 NoCredentialsError(), client_error("AccessDenied", 403), RuntimeError("a bug"),
                 OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EDQUOT, "Disk quota exceeded"),
                 OSError(errno.EROFS, "Read-only file system")]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)
    try:
        try:
            raise ConnectionResetError("peer")
        except ConnectionResetError as cause:
            raise RuntimeError("while writing a record") from cause
    except RuntimeError as wrapped:
        assert is_transient(wrapped), "the cause decides"


@pytest.mark.slow
def test_task_retries_transient_errors_only(clean_mmrag_env: None) -> None:
    """Real Prefect task runs: a connection error is retried (with the configured delays), a ValueError not."""
    from prefect import flow, task
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    opts = retry_options(load_settings(task_retries=2, task_retry_delay_seconds=0.0))
    assert opts["retries"] == 2 and opts["retry_delay_seconds"] == [0.0, 0.0]
    assert retry_options(load_settings(task_retry_delay_seconds=5.0))["retry_delay_seconds"] == [5.0, 10.0, 20.0]
    calls = {"flaky": 0, "bad": 0}

    @task
    def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise ConnectionResetError("S3 went away")
        return "ok"

    @task
    def bad() -> None:
        calls["bad"] += 1
        raise ValueError("a deterministic failure")

    @flow
    def both() -> tuple[str, str]:
        first = flaky.with_options(**opts)()
        state = bad.with_options(**opts)(return_state=True)
        return first, state.type.value

    # Prefect's temporary API needs more than its default 20 s to start on a busy 2-core machine.
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}):
        assert both() == ("ok", "FAILED")
    assert calls == {"flaky": 2, "bad": 1}


# ---- a real Prefect server ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(prefect_server):
    return prefect_server


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``mmrag deploy`` against the server, with a default source and store that the test run does not use."""
    base = tmp_path_factory.mktemp("deploy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    env.update({**server.env(), **TEST_CRONS, "PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    if "MMRAG_TEST_DATA" in os.environ:
        env["MMRAG_TEST_DATA"] = os.environ["MMRAG_TEST_DATA"]
    args = ["--source", str(base / "nightly-corpus"), "--store", str(base / "nightly-store")]
    proc = subprocess.run(MMRAG + ["deploy", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {"base": base, "env": env, "args": args, "stdout": proc.stdout}


def _api(server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: server.api_url})


@pytest.mark.slow
def test_deploy_registers_schedules_and_limits(server, deployed: dict) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    assert "index/reindex" in deployed["stdout"] and "cron '0 2 29 2 *' UTC" in deployed["stdout"]
    with _api(server), get_client(sync_client=True) as client:
        reindex = client.read_deployment_by_name("index/reindex")
        rebuild = client.read_deployment_by_name("index/full-rebuild")
        compact = client.read_deployment_by_name("compact/compact")
        gc = client.read_deployment_by_name("gc/gc-snapshots")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in reindex.schedules] == [
        ("0 2 29 2 *", "UTC", True)]
    assert [s.schedule.cron for s in rebuild.schedules] == ["0 3 29 2 *"]
    assert [s.schedule.cron for s in gc.schedules] == ["0 4 29 2 *"]
    assert compact.schedules == []
    assert reindex.parameters["source"] == str(deployed["base"] / "nightly-corpus")
    assert rebuild.parameters["retrain"] is True
    for d in (reindex, rebuild, compact, gc):
        assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1, d.name
        assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE, d.name
        assert d.enforce_parameter_schema
    assert reindex.parameter_openapi_schema["properties"]["retrain"]["type"] == "boolean"


@pytest.mark.slow
def test_ui_run_of_reindex_publishes_artifacts(server, deployed: dict, test_data: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from tests.prefect_server import Background, wait_for_run

    corpus, store = tmp_path / "corpus", tmp_path / "store"
    corpus.mkdir()
    for rel in CORPUS:
        shutil.copy(test_data / rel, corpus / Path(rel).name)
    (corpus / "empty.pdf").write_bytes(b"")
    params = {"source": str(corpus), "store": str(store), "overrides": {"clip_model": "off"}, "retrain": False}

    worker = Background(MMRAG + ["worker", "--pool", "mmrag"], deployed["env"], tmp_path / "worker.log", cwd=REPO)
    with worker, _api(server), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("index/reindex")
        run = client.create_flow_run_from_deployment(dep.id, parameters=params)  # what the UI's Run button does
        run = wait_for_run(client, run.id, worker, 420)
        assert run.state is not None and run.state.is_completed(), (
            f"flow run {run.state}:\n{worker.log_text()}")
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        for _ in range(30):  # the run's process sends its last logs in a batch as it exits
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            if sum("tasks.extract: extracted" in lg.message for lg in logs) >= len(CORPUS):
                break
            time.sleep(1)
    with _api(server), get_client(sync_client=True) as client:
        after = client.read_deployment_by_name("index/reindex")
    assert not after.paused and all(s.active for s in after.schedules), "stopping a worker keeps the schedules"
    # the worker registered nothing: what deploy set is intact
    assert after.parameters == dep.parameters and after.parameters["source"] == str(deployed["base"] / "nightly-corpus")
    assert after.updated == dep.updated and after.work_pool_name == "mmrag"
    assert _only_index_settings(set(after.parameter_openapi_schema["definitions"]["IndexOverrides"]["properties"]))

    assert run.parameters["source"] == str(corpus) and run.parameters["overrides"] == {"clip_model": "off"}
    snapshot = (store / "LATEST").read_text().strip()
    manifest = json.loads((store / "snapshots" / snapshot / "manifest.json").read_text())
    assert manifest["counts"]["documents"] == len(CORPUS)
    assert "skipped" in manifest["models"]["image"], "the run's overrides reached the flow (CLIP off)"

    by_key = {a.key.rsplit("-", 1)[0]: a for a in artifacts}
    summary = by_key["mmrag-index-summary"]
    assert summary.type == "markdown" and f"`{snapshot}`" in summary.data and str(store) in summary.data
    assert summary.key == store_key("mmrag-index-summary", str(store)), "the key names the store"
    table = by_key["mmrag-index-failures"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert table.type == "table"
    assert [r["file"] for r in rows if r["file"].endswith("empty.pdf")], rows
    assert all(set(r) == {"file", "page", "stage", "reason"} for r in rows)
    progress = by_key["mmrag-index-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    # empty.pdf is refused by the listing: it is a failure row, never a document to extract
    assert f"{len(CORPUS)}/{len(CORPUS)} documents" in progress.description
    # what the Ray extraction workers logged is in the run's log, with the host it came from
    extracted = [lg.message for lg in logs if "tasks.extract: extracted" in lg.message]
    assert len(extracted) == len(CORPUS), [lg.message for lg in logs]
    assert all(m.startswith(f"[{socket.gethostname()}] ") for m in extracted), extracted


@pytest.mark.slow
def test_prefect_yaml_deploys_to_a_work_pool(server, deployed: dict, tmp_path: Path) -> None:
    """``prefect deploy --all`` accepts infra/prefect.yaml (runs last: it takes over the deployments)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with _api(server), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="mmrag", type="process"))
        except ObjectAlreadyExists:  # mmrag deploy created it
            pass
    env = {**deployed["env"], "MMRAG_SOURCE": str(tmp_path / "corpus"), "MMRAG_STORE": str(tmp_path / "store")}
    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    with _api(server), get_client(sync_client=True) as client:
        reindex = client.read_deployment_by_name("index/reindex")
        gc = client.read_deployment_by_name("gc/gc-snapshots")
    assert reindex.work_pool_name == "mmrag" and reindex.entrypoint == "flows.index_flow.index_flow"
    assert [s.schedule.cron for s in reindex.schedules] == ["0 2 * * *"]
    assert reindex.parameters["source"] == str(tmp_path / "corpus")
    assert reindex.parameters["store"] == str(tmp_path / "store")
    assert gc.global_concurrency_limit is not None and gc.global_concurrency_limit.limit == 1
