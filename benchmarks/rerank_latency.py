"""Benchmark: query latency with the trained page re-ranker on and off (issue 16, item 5), in one run.

    .venv/bin/python benchmarks/rerank_latency.py --store /work/stores/fb-dev-lab \
        --model /work/stores/fb-train/models/rerank/<id> --queries ../shared/data/financebench-dev/queries.jsonl

Opens the store's LATEST snapshot twice in this process: one engine with ``rerank_model`` off (today's default)
and one with the model, sharing the text encoder (:meth:`QueryEngine.load_models`). After one untimed warm-up
query each (the re-ranker reads the snapshot's page texts once then), for ``--rounds`` rounds it runs every query
through both, alternating query by query so that other work on the machine affects both alike, and times
``QueryEngine.search`` (k 10: encode, search, fuse, dedupe, re-rank, hydrate). Reports p50/p99 per mode, the
p50 ratio (target <= 2), the re-ranking stage's own time (features and scores over the
first ``--depth`` pages, timed apart) and the load average; writes ``benchmarks/results/rerank_latency.json``.
Measure at normal priority (no ``nice``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for name, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"), ("OMP_WAIT_POLICY", "PASSIVE"),
                    ("MMRAG_CLIP_MODEL", "off")):
    os.environ.setdefault(name, value)

from mmrag_core.config import Settings  # noqa: E402
from mmrag_core.query.engine import QueryEngine  # noqa: E402
from mmrag_core.snapshot.open import open_snapshot  # noqa: E402
from mmrag_core.storage.store import open_store  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", required=True, help="the re-ranking model (folder or store:models/rerank/<id>)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--queries", default="../shared/data/financebench-dev/queries.jsonl")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/rerank_latency.json"))
    args = ap.parse_args()

    texts = [json.loads(line)["text"] for line in Path(args.queries).read_text().splitlines() if line.strip()]
    off_settings = Settings(store=args.store, rerank_model="off")
    snapshot = open_snapshot(open_store(off_settings))
    off = QueryEngine.from_settings(snapshot, off_settings).load_models()
    on = QueryEngine.from_settings(snapshot, Settings(store=args.store, rerank_model=args.model,
                                                      rerank_depth=args.depth)).load_models(off)
    engines = {"off": off, "on": on}
    for engine in engines.values():
        engine.search(texts[0], k=10)  # warm-up
    seconds: dict[str, list[float]] = {mode: [] for mode in (*engines, "stage")}
    vectors = {text: off.text_encoder.encode([text]) for text in texts}
    reranker = on._reranker  # the stage alone: features and scores of the off engine's first pages
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for text in texts:
            for mode, engine in engines.items():
                t0 = time.perf_counter()
                engine.search(text, k=10)
                seconds[mode].append(time.perf_counter() - t0)
            hits = off.search(text, k=args.depth, rerank=False)
            t0 = time.perf_counter()
            reranker.rerank(on.page_features, text, vectors[text], hits, args.depth)
            seconds["stage"].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    rows = {mode: {"p50_ms": round(1000 * statistics.median(s), 1), "p99_ms": round(1000 * percentile(s, 99), 1),
                   "n": len(s)} for mode, s in seconds.items()}
    ratio = rows["on"]["p50_ms"] / rows["off"]["p50_ms"]
    print(f"store {args.store} snapshot {snapshot.id}, {len(texts)} queries x {args.rounds} rounds, "
          f"re-ranker {args.model} (depth {args.depth})")
    print("| re-ranker | p50 ms | p99 ms | queries |\n|---|---:|---:|---:|")
    names = {"off": "off (default)", "on": "on", "stage": "the re-ranking stage alone (features + scores)"}
    for mode, r in rows.items():
        print(f"| {names[mode]} | {r['p50_ms']} | {r['p99_ms']} | {r['n']} |")
    print(f"p50 ratio on/off: {ratio:.2f} (target <= 2); load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")
    out = {"when": datetime.now(UTC).isoformat(), "host": platform.node(), "store": args.store,
           "snapshot": snapshot.id, "model": args.model, "depth": args.depth, "queries": len(texts),
           "rounds": args.rounds, "rows": rows, "p50_ratio": round(ratio, 3),
           "loadavg_before": load_before, "loadavg_after": load_after}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
