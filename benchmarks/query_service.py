"""Benchmark: latency and throughput of the HTTP query service (``mmrag serve``) against the same search in
process, on the same snapshot and queries.

    .venv/bin/python benchmarks/query_service.py                      # demo_store, scripts/sample_queries.txt
    .venv/bin/python benchmarks/query_service.py --store ./store --queries ../shared/data/financebench-dev/queries.jsonl

Starts ``mmrag serve --snapshot <LATEST>`` as its own process (uvicorn, as deployed) and opens the same
snapshot in this process with ``QueryEngine``. Then, for ``--rounds`` rounds, it runs the queries one at a time
through ``QueryEngine.search`` (encode, FAISS search, fusion, hydration: the work a request does) and sends
``POST /query`` (JSON text queries) from ``N`` concurrent client threads (httpx) for each ``N`` in
``--concurrency``. In-process searches and single-client requests alternate query by query, and the concurrent
runs are interleaved with them, so that other work on the machine affects both sides alike.
Reports p50/p99 latency and QPS per mode, the HTTP/in-process p50 ratio (target <= 1.3 at concurrency 1), the
service's own ``took_ms`` (the search inside the request) and the load average, and the concurrency ratios of
this one run: QPS at the highest concurrency over QPS with one client (target >= 3 at 16 clients) and the same
for p50 (target <= 2; issue 20). The served process inherits the environment, so
``MMRAG_SERVICE_MICROBATCH_MAX=1`` measures the service without micro-batching. Writes
``benchmarks/results/query_service.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for name, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("RAY_USAGE_STATS_ENABLED", "0"),
                    # before torch and faiss load, here and in the served process (it inherits the environment):
                    # with OpenMP's default spin-waiting, torch's and faiss's thread pools spin against each other
                    # on a busy 2-core machine and one query took 1-2 s instead of ~50 ms (measured, load ~15)
                    ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(name, value)

import httpx

from mmrag_core.config import Settings
from mmrag_core.query.engine import QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import open_store


def load_queries(path: Path) -> list[str]:
    """Query texts: one per line of a text file (``#`` lines skipped), or the ``text`` of each JSONL row."""
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(store: str, snapshot: str, port: int, timeout: float = 180.0) -> subprocess.Popen:
    """``mmrag serve`` pinned to ``snapshot`` on 127.0.0.1:``port``, returned once /healthz answers 200."""
    env = {name: value for name, value in os.environ.items() if name != "MMRAG_SERVICE_TOKEN"}  # no auth here
    log = tempfile.NamedTemporaryFile("w+", prefix="mmrag-serve-", suffix=".log", delete=False)  # noqa: SIM115
    # its access log goes to a file: an undrained pipe would fill and stall the server
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--store", store, "--snapshot", snapshot,
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mmrag serve exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"mmrag serve did not become healthy within {timeout:.0f} s")


def paired(engine: QueryEngine, client: httpx.Client, queries: list[str], n: int, k: int) -> dict[str, list[float]]:
    """``n`` queries, each searched in process and then sent as one POST /query: latencies (s) of both and the
    server's ``took_ms``. Alternating request by request keeps the comparison fair on a machine whose load
    changes from second to second."""
    out: dict[str, list[float]] = {"in": [], "http": [], "took": []}
    for i in range(n):
        text = queries[i % len(queries)]
        s = time.perf_counter()
        engine.search(text=text, k=k)
        out["in"].append(time.perf_counter() - s)
        s = time.perf_counter()
        r = client.post("/query", json={"text": text, "k": k})
        out["http"].append(time.perf_counter() - s)
        r.raise_for_status()
        out["took"].append(r.json()["took_ms"])
    return out


def over_http(client: httpx.Client, queries: list[str], n: int, k: int, workers: int) -> tuple[list[float], list[float], float]:
    """Latencies (s) and server ``took_ms`` of ``n`` POST /query requests sent by ``workers`` threads, and the
    wall time of all of them."""
    lat: list[float] = []
    took: list[float] = []
    lock, counter = threading.Lock(), iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            s = time.perf_counter()
            r = client.post("/query", json={"text": queries[i % len(queries)], "k": k})
            elapsed = time.perf_counter() - s
            r.raise_for_status()
            with lock:
                lat.append(elapsed)
                took.append(r.json()["took_ms"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(worker) for _ in range(workers)]:
            f.result()
    return lat, took, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far: what a request costs the server whatever the load of
    the machine (wall times on a busy machine mostly measure the others)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(lat: list[float], wall: float, took: list[float] | None = None) -> dict:
    ms = sorted(x * 1000 for x in lat)
    out = {"requests": len(ms), "p50_ms": round(statistics.median(ms), 2),
           "p99_ms": round(statistics.quantiles(ms, n=100, method="inclusive")[98], 2),
           "mean_ms": round(statistics.fmean(ms), 2), "qps": round(len(ms) / wall, 1)}
    if took:
        out["server_took_p50_ms"] = round(statistics.median(took), 2)
    return out


QPS_TARGET, P50_TARGET = 3.0, 2.0  # issue 20 at 16 clients: QPS >= 3x one client's, p50 <= 2x one client's


def concurrency_ratios(rows: dict[str, dict], clients: int) -> dict | None:
    """QPS and p50 with ``clients`` concurrent clients over those with one, from this run, and the targets."""
    one, many = rows.get("http c=1"), rows.get(f"http c={clients}")
    if one is None or many is None or clients == 1:
        return None
    qps, p50 = round(many["qps"] / one["qps"], 2), round(many["p50_ms"] / one["p50_ms"], 2)
    return {"clients": clients, "qps_ratio": qps, "p50_ratio": p50, "qps_target": QPS_TARGET,
            "p50_target": P50_TARGET, "target_met": qps >= QPS_TARGET and p50 <= P50_TARGET}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(ROOT / "demo_store"), help="a published store (default: demo_store)")
    ap.add_argument("--queries", type=Path, default=ROOT / "scripts" / "sample_queries.txt")
    ap.add_argument("--concurrency", default="1,4,16", help="client threads, comma-separated (1 is always run)")
    ap.add_argument("--requests", type=int, default=120, help="requests per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "query_service.json")
    args = ap.parse_args(argv)
    levels = sorted({1, *(int(c) for c in args.concurrency.split(","))})  # 1: paired with in-process
    queries = load_queries(args.queries)

    settings = Settings(store=args.store)
    store = open_store(settings)
    snapshot_id = store.latest_id()
    if snapshot_id is None:
        raise SystemExit(f"no snapshot published in {args.store} (make demo builds demo_store)")
    engine = QueryEngine.from_settings(open_snapshot(store, snapshot_id), settings).load_models()  # as the service
    port = free_port()
    load_before = os.getloadavg()
    proc = start_service(args.store, snapshot_id, port)
    samples: dict[str, dict] = {"in-process": {"lat": [], "wall": 0.0}}
    samples.update({f"http c={c}": {"lat": [], "took": [], "wall": 0.0, "cpu": 0.0} for c in levels})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          limits=httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))) \
                as client:
            for q in queries:  # warm-up: tokenizer caches, first-call allocations, connections
                engine.search(text=q, k=args.k)
                client.post("/query", json={"text": q, "k": args.k}).raise_for_status()
            for r in range(args.rounds):
                cpu0 = cpu_seconds(proc.pid)
                pairs = paired(engine, client, queries, args.requests, args.k)
                samples["http c=1"]["cpu"] += cpu_seconds(proc.pid) - cpu0
                samples["in-process"]["lat"] += pairs["in"]
                samples["in-process"]["wall"] += sum(pairs["in"])
                samples["http c=1"]["lat"] += pairs["http"]
                samples["http c=1"]["took"] += pairs["took"]
                samples["http c=1"]["wall"] += sum(pairs["http"])
                for c in [c for c in (levels if r % 2 == 0 else reversed(levels)) if c != 1]:
                    cpu0 = cpu_seconds(proc.pid)
                    lat, took, wall = over_http(client, queries, args.requests, args.k, c)
                    samples[f"http c={c}"]["cpu"] += cpu_seconds(proc.pid) - cpu0
                    entry = samples[f"http c={c}"]
                    entry["lat"] += lat
                    entry["took"] += took
                    entry["wall"] += wall
                print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load_after = os.getloadavg()

    rows = {mode: summary(s["lat"], s["wall"], s.get("took")) for mode, s in samples.items()}
    for mode, s in samples.items():
        if "cpu" in s:  # the served process's CPU time per request (all its threads), and the cores it got
            rows[mode]["server_cpu_ms_per_request"] = round(s["cpu"] * 1000 / max(len(s["lat"]), 1), 1)
            rows[mode]["server_cores_used"] = round(s["cpu"] / s["wall"], 2) if s["wall"] else None
    base = rows["in-process"]["p50_ms"]
    for row in rows.values():
        row["p50_vs_in_process"] = round(row["p50_ms"] / base, 2)
    print(f"\nstore {args.store}, snapshot {snapshot_id}, {len(queries)} queries from {args.queries.name}, k={args.k}, "
          f"{args.rounds} rounds x {args.requests} requests per mode")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)\n")
    print("| mode | requests | p50 ms | p99 ms | mean ms | QPS | p50 / in-process | server took_ms p50 | "
          "server CPU ms / request | server cores used |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, row in rows.items():
        print(f"| {mode} | {row['requests']} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_ms']} | {row['qps']} | "
              f"{row['p50_vs_in_process']} | {row.get('server_took_p50_ms', '-')} | "
              f"{row.get('server_cpu_ms_per_request', '-')} | {row.get('server_cores_used', '-')} |")
    ratios = concurrency_ratios(rows, max(levels))
    if ratios:
        print(f"\nclients {max(levels)} vs 1: QPS x{ratios['qps_ratio']} (target >= {QPS_TARGET}), p50 "
              f"x{ratios['p50_ratio']} (target <= {P50_TARGET}); micro-batching "
              f"{'off' if os.environ.get('MMRAG_SERVICE_MICROBATCH_MAX') == '1' else 'on'}")
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "store": args.store, "snapshot": snapshot_id,
        "items": engine.snapshot.manifest["counts"]["items"], "queries": str(args.queries), "k": args.k,
        "rounds": args.rounds, "requests_per_round": args.requests, "concurrency": levels,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "results": rows, "target": "http c=1 p50 <= 1.3 x in-process p50",
        "target_met": rows["http c=1"]["p50_vs_in_process"] <= 1.3 if "http c=1" in rows else None,
        "microbatch_env": {name: os.environ[name] for name in ("MMRAG_SERVICE_MICROBATCH_MAX",
                                                                "MMRAG_SERVICE_MICROBATCH_WAIT_MS")
                           if name in os.environ},
        "concurrency_ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
