"""Ray at scale. A real 2-node Ray cluster started with `ray start` on this machine, the indexing CLI joined
to it through RAY_ADDRESS, and the embedding actor pool spread over its nodes (marked slow). Each node has
its own temp dir, ports and process group and is stopped by its own process id, so no other Ray on the
machine is touched (`ray stop` would end every Ray process of the user). Also the pieces that need no
cluster: bounded submission, batch summaries, the per-task-kind resource settings."""
from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmrag_core.config import load_settings
from mmrag_core.storage.items import Failure
from mmrag_core.storage.records import read_record
from mmrag_core.storage.store import open_store
from tasks import ray_runtime
from tasks.backpressure import bounded_results
from tasks.index_tasks import BatchSummary
from tests.ray_cluster import RayNode, _leftovers
from tests.s3server import _free_ports

REPO = Path(__file__).resolve().parents[1]
CORPUS = (
    "pdfs/born_digital/financial_statement_notes.pdf",
    "pdfs/born_digital/styled_table.pdf",
    "pdfs/scanned/scan_huckfinn_ch2_p22.pdf",
    "ocr/tesseract_test/phototest.tif",
)


# ---- without a cluster ------------------------------------------------------------------------------


def test_bounded_results_keeps_at_most_limit_in_flight() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01 * (n % 3))
        with lock:
            running -= 1
        return n * n

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(bounded_results(lambda n, x: pool.submit(work, x), range(40), limit=3))
    assert sorted(results) == [n * n for n in range(40)]
    assert peak <= 3


def test_bounded_results_submits_in_order_and_raises_failures() -> None:
    submitted: list[tuple[int, str]] = []

    def submit(n: int, item: str) -> concurrent.futures.Future:
        submitted.append((n, item))
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if item == "bad":
            fut.set_exception(ValueError("bad batch"))
        else:
            fut.set_result(item.upper())
        return fut

    gen = bounded_results(submit, ["a", "b", "bad", "c"], limit=2)
    assert [next(gen), next(gen)] == ["A", "B"]
    with pytest.raises(ValueError, match="bad batch"):
        next(gen)
    assert submitted[:3] == [(0, "a"), (1, "b"), (2, "bad")]
    with pytest.raises(ValueError, match="at least 1"):
        list(bounded_results(submit, ["a"], limit=0))


def test_batch_summary_adds_nodes() -> None:
    total = BatchSummary()
    total.add(BatchSummary(docs=2, pages=3, nodes={"n1": 2}))
    total.add(BatchSummary(docs=1, pages=1, nodes={"n2": 1},
                           failures=[Failure("file:///x.pdf", "open", "empty file (0 bytes)", None, "ab")]))
    total.add(BatchSummary(docs=1, nodes={"n1": 1}))
    assert (total.docs, total.pages, len(total.failures)) == (4, 4, 1)
    assert total.nodes == {"n1": 3, "n2": 1}


def test_resources_per_task_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_runtime, "cluster_cpus", lambda: 8)
    assert ray_runtime.batches_in_flight(load_settings(extract_num_cpus=2)) == 8
    assert ray_runtime.batches_in_flight(load_settings()) == 16
    assert ray_runtime.batches_in_flight(load_settings(max_batches_in_flight=3)) == 3
    assert ray_runtime.encoder_gpus(load_settings(device="cuda")) == 1.0
    assert ray_runtime.encoder_gpus(load_settings(device="cuda", encoder_num_gpus=0.5)) == 0.5
    assert ray_runtime.encoder_gpus(load_settings()) == 0.0
    monkeypatch.setenv("MMRAG_EXTRACT_NUM_CPUS", "0.5")
    monkeypatch.setenv("MMRAG_EMBED_ACTORS", "3")
    monkeypatch.setenv("MMRAG_EXTRACT_SCHEDULING", "DEFAULT")
    s = load_settings()
    assert (s.extract_num_cpus, s.embed_actors, s.extract_scheduling) == (0.5, 3, "DEFAULT")


# ---- a real 2-node cluster ----------------------------------------------------------------------------


def _python(code: str, env: dict[str, str], timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_NODES = """
import json, ray
ray.init(logging_level="ERROR")  # joins RAY_ADDRESS
print(json.dumps({n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}))
"""


@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU) and a second node (1 CPU, resource ``node2``). Yields the driver environment and the
    node ids ``{"head": ..., "node2": ...}``."""
    # Short paths: Ray's unix sockets live under the temp dir and must stay under 108 characters.
    root = Path(tempfile.mkdtemp(prefix="mmray-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Token authentication, as a real cluster should run (Ray 2.60's `ray start --head` turns it on whenever
    # ~/.ray/auth_token exists): a private token that every node and the driver are given.
    (root / "auth_token").write_text(secrets.token_hex(32))
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_THREAD_LIMIT="1", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(root / "auth_token"))
    gcs_port, client_port = _free_ports(2)
    (root / "head").mkdir()
    (root / "node2").mkdir()
    nodes = []
    try:
        head = RayNode(root / "head", ["--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                                       "--num-cpus=1", "--include-dashboard=false"], env)
        nodes.append(head)
        head.wait_started()
        node2 = RayNode(root / "node2", [f"--address=127.0.0.1:{gcs_port}", "--num-cpus=1",
                                         '--resources={"node2": 1}'], env)
        nodes.append(node2)
        node2.wait_started()
        driver_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs_port}"}
        deadline = time.monotonic() + 60
        while True:
            found = _python(_NODES, driver_env)
            if len(found) == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(found) == 2, found
        ids = {"node2" if "node2" in res else "head": nid for nid, res in found.items()}
        yield {"env": driver_env, "nodes": ids, "root": root}
    finally:
        for node in reversed(nodes):
            node.stop()
        stray = _leftovers(str(root))
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)
        assert not stray, f"Ray processes outlived their node's stop: {stray}"


@pytest.mark.slow
def test_index_flow_runs_on_both_nodes(cluster: dict, test_data: Path, tmp_path: Path,
                                       prefect_server) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for rel in CORPUS:
        shutil.copy(test_data / rel, corpus)
    env = {**cluster["env"], "MMRAG_CLIP_MODEL": "off", "MMRAG_EXTRACT_BATCH_DOCS": "1",
           **prefect_server.env(), "HF_HUB_OFFLINE": "1"}
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "index", str(corpus), "--store", str(store), "--json"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    m = report["manifest"]
    assert report["published"] and m["counts"]["documents"] == len(CORPUS)
    assert m["stats"]["documents_processed"] == len(CORPUS)
    # Each document's record names the Ray node that extracted it: both nodes of the cluster did work.
    catalog = pq.read_table(store / "snapshots" / m["id"] / "catalog.parquet").to_pylist()
    st = open_store(load_settings(store=str(store)))
    records = [read_record(st, row["sha256"]) for row in catalog]
    where = {r.stats["ray_node_id"] for r in records}
    assert where == set(cluster["nodes"].values()), (where, cluster["nodes"])
    assert {r.stats["hostname"] for r in records} == {socket.gethostname()}


_POOL = """
import json, time
import numpy as np, ray
from mmrag_core.config import load_settings
from tasks.embed import start_encoders
from tasks.ray_runtime import ensure_ray

settings = load_settings(clip_model="off", embed_actors=2, encoder_num_cpus=1, embed_batch_size=8)
ensure_ray(settings)
free = lambda: ray.available_resources().get("CPU", 0.0)
deadline = time.monotonic() + 120
while free() < 2.0 and time.monotonic() < deadline:  # ensure_ray's worker warm-up tasks hold slots briefly
    time.sleep(0.5)
before = free()
pool = start_encoders(settings)["text"]
desc = ray.get(pool.describe.remote())
nodes = ray.get(pool.node_ids.remote())
held = free()
texts = [f"sentence {i}: a Ray cluster spreads OCR and embedding over its nodes" for i in range(40)]
pooled = ray.get(pool.encode.remote(texts))
single = start_encoders(load_settings(clip_model="off"))["text"]
alone = ray.get(single.encode.remote(texts))
ray.kill(pool)
deadline = time.monotonic() + 60
while free() < before and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps({"name": desc["name"], "nodes": nodes, "before": before, "held": held, "after": free(),
                  "shape": list(pooled.shape), "max_diff": float(np.abs(pooled - alone).max())}))
"""


@pytest.mark.slow
def test_encoder_pool_spreads_over_nodes(cluster: dict) -> None:
    out = _python(_POOL, {**cluster["env"], "HF_HUB_OFFLINE": "1"})
    assert out["name"] == "all-MiniLM-L6-v2"
    assert set(out["nodes"]) == set(cluster["nodes"].values()), "one actor on each node (SPREAD)"
    assert (out["before"], out["held"]) == (2.0, 0.0), "each actor holds its encoder_num_cpus slot"
    assert out["shape"] == [40, 384] and out["max_diff"] < 1e-5, "split over actors, same vectors as one actor"
    assert out["after"] == 2.0, "killing the pool ended the actors it owns"
