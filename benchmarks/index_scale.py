"""Benchmark: the sharded IVF-PQ index core at scale, on clustered synthetic 512-d unit vectors.

The data: clusters of ~8 points around centres near a 48-d subspace, plus noise (see make_centres).

    .venv/bin/python benchmarks/index_scale.py --n 200000
    .venv/bin/python benchmarks/index_scale.py            # 1M (about 10 min on 2 cores)

Chooses the codec for N (mmrag_core.index.codec.choose_codec), trains it on a sample, measures encode time,
bytes per vector, tuned nprobe/k_factor and recall@10 against exact search on held-out queries, one-thread
single-query latency and batch QPS (with and without the fp16 refine step and 1% tombstones), and 10
shards encoded separately and merged against one build (results asserted identical). Prints a markdown
table and merges its results into ``<out>/index_scale.json`` under the key N. Compare ratios from one
run, not absolute times across runs: the machine is shared.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads: spinning OpenMP barriers on a
# busy 2-core machine made OPQ training 5x slower with 2 threads than with 1

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmrag_core.index import codec
from mmrag_core.index.refine import RefineStore, write_refine
from mmrag_core.index.shards import encode_shard, merge_shards, read_shard, write_shard
from mmrag_core.index.tombstones import Exclusion, search_index

DIM = 512
K = 10
RANK = 48  # centres lie near a 48-d subspace
POINTS_PER_CLUSTER = 8


def make_centres(n: int, seed: int) -> np.ndarray:
    """Cluster centres near a low-rank subspace. Well-separated random centres make IVF trivial (every
    neighbour in one cell, nprobe 1-2); small clusters on a continuum spread neighbours over cells."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((RANK, DIM)).astype(np.float32) / np.sqrt(RANK)
    return rng.standard_normal((max(100, n // POINTS_PER_CLUSTER), RANK)).astype(np.float32) @ basis


def synthetic(n: int, seed: int, centres: np.ndarray, noise: float = 0.4, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors: a random centre plus isotropic noise (``noise`` x the centres' per-dim spread), float32."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, centres.shape[1]), np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - t0


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def latency_ms(index, queries, **kw) -> tuple[float, float]:
    """p50 / p99 of one-at-a-time queries through search_index (Python overhead included)."""
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search_index(index, q[None], K, **kw)
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def batch_qps(index, queries, **kw) -> float:
    _, seconds = timed(search_index, index, queries, K, **kw)
    return len(queries) / seconds


def exact_single_query_ms(base: np.ndarray, queries: np.ndarray) -> float:
    """Median of unbatched exact queries (1 thread): what a query costs without an ANN index."""
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    times = [timed(flat.search, q[None], K)[1] for q in queries]
    del flat
    return float(np.median(times) * 1e3)


def run(n: int, threads: int, n_queries: int, n_tune: int, seed: int, workdir: Path) -> dict:
    faiss.omp_set_num_threads(threads)
    res: dict = {"n": n, "dim": DIM, "threads": threads, "queries": n_queries, "tune_queries": n_tune}
    rng = np.random.default_rng(seed)
    centres = make_centres(n, seed)
    (base, t_gen) = timed(synthetic, n, seed + 1, centres)
    extra = synthetic(n // 10, seed + 2, centres)  # a later increment
    queries = synthetic(n_queries + n_tune, seed + 3, centres)
    q_eval, q_tune = queries[:n_queries], queries[n_queries:]
    ids = rng.choice(10**12, size=n + len(extra), replace=False).astype(np.int64)
    base_ids, extra_ids = ids[:n], ids[n:]
    print(f"data: {n:,} x {DIM} in {t_gen:.1f} s", flush=True)

    spec = codec.choose_codec(n, DIM)
    res["codec"] = spec.factory
    sample = base[rng.choice(n, min(spec.train_size or n, n), replace=False)]
    trained, res["train_s"] = timed(codec.train_codec, spec, sample, seed)
    res["train_size"], res["opq_train_size"] = len(sample), min(len(sample), codec.OPQ_TRAIN_POINTS)
    codec_bytes = codec.serialize_codec(trained)
    print(f"codec {spec.factory} trained on {len(sample):,} in {res['train_s']:.1f} s", flush=True)

    single, res["encode_single_s"] = timed(encode_shard, codec_bytes, base_ids, base)
    bounds = np.linspace(0, n, 11).astype(int)
    t0 = time.perf_counter()
    shards = [encode_shard(codec_bytes, base_ids[a:b], base[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    res["encode_10_shards_s"] = time.perf_counter() - t0
    merged, res["merge_10_shards_s"] = timed(merge_shards, shards, codec_bytes)
    print(f"encode {res['encode_single_s']:.1f} s single, {res['encode_10_shards_s']:.1f} s as 10 shards "
          f"+ {res['merge_10_shards_s']:.2f} s merge", flush=True)

    paths = [write_shard(s, workdir / f"shard-{i:02d}.faiss") for i, s in enumerate(shards)]
    for p, a, b in zip(paths, bounds[:-1], bounds[1:]):
        write_refine(p, base_ids[a:b], base[a:b])
    del shards
    _, res["read_and_merge_10_shards_s"] = timed(lambda: merge_shards([read_shard(p) for p in paths], codec_bytes))

    res["list_bytes_per_vector"] = codec.list_bytes_per_vector(merged)
    index_file = write_shard(merged, workdir / "merged.faiss")
    res["file_bytes_per_vector"] = index_file.stat().st_size / n
    res["refine_bytes_per_vector_on_disk"] = 2 * DIM + 8
    res["file_plus_refine_bytes_per_vector"] = res["file_bytes_per_vector"] + res["refine_bytes_per_vector_on_disk"]

    store = RefineStore.open(paths, k_factor=spec.k_factor)
    (nprobe, tune_recall), res["tune_s"] = timed(codec.tune_nprobe, merged, q_tune, base, base_ids, spec=spec)
    res.update(nprobe=nprobe, k_factor=spec.k_factor, tune_recall=tune_recall)
    store.k_factor = spec.k_factor
    print(f"tuned nprobe={nprobe} k_factor={spec.k_factor} (recall {tune_recall:.3f}) in {res['tune_s']:.1f} s",
          flush=True)

    truth = codec.exact_neighbors(base, base_ids, q_eval, K)
    single_res = search_index(single, q_eval, 100, nprobe=nprobe)
    merged_res = search_index(merged, q_eval, 100, nprobe=nprobe)
    assert np.array_equal(single_res[1], merged_res[1]) and np.array_equal(single_res[0], merged_res[0]), \
        "10 merged shards differ from one build"
    res["merged_equals_single"] = True
    res["recall_codes_only"] = codec.recall_at_k(merged_res[1][:, :K], truth)
    res["recall_refined"] = codec.recall_at_k(search_index(merged, q_eval, K, nprobe=nprobe, refine=store)[1], truth)

    dead = Exclusion(rng.choice(base_ids, n // 100, replace=False))
    found = search_index(merged, q_eval, K, nprobe=nprobe, exclude_ids=dead, refine=store)[1]
    assert (found >= 0).all() and not np.isin(found, dead.ids).any()

    res["batch_qps_refined"] = batch_qps(merged, q_eval, nprobe=nprobe, refine=store)
    res["batch_qps_codes_only"] = batch_qps(merged, q_eval, nprobe=nprobe)
    res["batch_qps_refined_1pct_tombstones"] = batch_qps(merged, q_eval, nprobe=nprobe, refine=store, exclude_ids=dead)
    faiss.omp_set_num_threads(1)
    res["p50_ms_refined"], res["p99_ms_refined"] = latency_ms(merged, q_eval, nprobe=nprobe, refine=store)
    res["p50_ms_codes_only"], res["p99_ms_codes_only"] = latency_ms(merged, q_eval, nprobe=nprobe)
    res["p50_ms_refined_1pct_tombstones"], res["p99_ms_refined_1pct_tombstones"] = latency_ms(
        merged, q_eval, nprobe=nprobe, refine=store, exclude_ids=dead)
    res["exact_single_query_ms"] = exact_single_query_ms(base, q_eval[:20])
    faiss.omp_set_num_threads(threads)

    next_shard, res["increment_encode_s"] = timed(encode_shard, codec_bytes, extra_ids, extra)
    grown, res["increment_merge_s"] = timed(merge_shards, [merged, next_shard], codec_bytes)
    rebuilt = encode_shard(codec_bytes, ids, np.concatenate([base, extra]))
    assert all(np.array_equal(a, b) for a, b in zip(search_index(grown, q_eval, K, nprobe=nprobe),
                                                     search_index(rebuilt, q_eval, K, nprobe=nprobe)))
    res["increment_equals_rebuild"] = True
    res["peak_rss_gib"] = rss_gib()
    return res


def table(r: dict) -> str:
    rows = [
        ("vectors", f"{r['n']:,} x {r['dim']} (clustered synthetic, unit norm), {r['threads']} threads, "
                    f"faiss {r['faiss']}"),
        ("codec", f"`{r['codec']}` + fp16 refine"),
        ("train (s) / sample / OPQ sample", f"{r['train_s']:.1f} / {r['train_size']:,} / {r['opq_train_size']:,}"),
        ("encode: one build / 10 shards (s)", f"{r['encode_single_s']:.1f} / {r['encode_10_shards_s']:.1f} "
                                              f"(ratio {r['encode_10_shards_s'] / r['encode_single_s']:.2f})"),
        ("merge 10 shards in RAM / read files + merge (s)",
         f"{r['merge_10_shards_s']:.2f} / {r['read_and_merge_10_shards_s']:.2f}"),
        ("10 merged shards vs one build", "identical ids and distances (top-100, asserted)"),
        ("add N/10 as a shard: encode + merge (s)",
         f"{r['increment_encode_s']:.1f} + {r['increment_merge_s']:.2f} (== rebuild, asserted)"),
        ("bytes/vector: codes+id in lists / index file / + fp16 refine on disk",
         f"{r['list_bytes_per_vector']} / {r['file_bytes_per_vector']:.1f} / "
         f"{r['file_plus_refine_bytes_per_vector']:.0f}"),
        ("tuned nprobe, k_factor (tuning recall, tuning time s)",
         f"{r['nprobe']}, {r['k_factor']} ({r['tune_recall']:.3f}, {r['tune_s']:.1f})"),
        (f"recall@10 on {r['queries']} held-out queries: codes only / refined",
         f"{r['recall_codes_only']:.3f} / {r['recall_refined']:.3f}"),
        ("single query p50 / p99 ms (1 thread): refined", f"{r['p50_ms_refined']:.2f} / {r['p99_ms_refined']:.2f}"),
        ("  codes only", f"{r['p50_ms_codes_only']:.2f} / {r['p99_ms_codes_only']:.2f}"),
        ("  refined, 1% ids tombstoned", f"{r['p50_ms_refined_1pct_tombstones']:.2f} / "
                                         f"{r['p99_ms_refined_1pct_tombstones']:.2f}"),
        ("  exact (IndexFlatIP, median of 20)", f"{r['exact_single_query_ms']:.1f}"),
        ("batch of 1,000 QPS: refined / codes only / refined + tombstones",
         f"{r['batch_qps_refined']:,.0f} / {r['batch_qps_codes_only']:,.0f} / "
         f"{r['batch_qps_refined_1pct_tombstones']:,.0f}"),
        ("peak RSS (GiB)", f"{r['peak_rss_gib']:.1f}"),
    ]
    return "\n".join(["| measure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--tune-queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmrag-index-scale-") as tmp:
        (res, wall) = timed(run, args.n, args.threads, args.queries, args.tune_queries, args.seed, Path(tmp))
    res.update(wall_s=wall, faiss=faiss.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cpus",
               omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
    print(table(res))
    print(f"\nwall time {wall:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "index_scale.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[str(args.n)] = res
    out.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
