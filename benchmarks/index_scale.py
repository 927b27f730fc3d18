"""Benchmark: the sharded IVF-PQ index core at scale, on clustered synthetic 512-d unit vectors, against raw FAISS.

The data: clusters of ~8 points around centres near a 48-d subspace, plus noise (see make_centres).

    .venv/bin/python benchmarks/index_scale.py --n 100000
    .venv/bin/python benchmarks/index_scale.py            # 1M (about 15 min on 2 cores)
    nice -n 19 .venv/bin/python benchmarks/index_scale.py --n 5000000 --workdir /work/tmp-scale

Chooses the codec for N (mmrag_core.index.codec.choose_codec), trains it on a sample, encodes 10 shards and
merges them (and, up to --single-build-max, checks the merge against one build), tunes nprobe/k_factor with
the library's cost model against exact search on held-out queries, and measures mmrag's search path
(``search_index``: search parameters, tombstone selector, fp16 refine store on disk) against the fastest
setting of plain FAISS on the same data (benchmarks/index_scale_raw.py: its own grid over factory strings
and search parameters, recall@10 >= 0.95). The timed configurations run interleaved, ``--rounds`` times,
and the medians are compared: ratios from one run, not absolute times across runs (the machine is shared).
Base vectors live in a float32 file under --workdir and are read in chunks (exact ground truth too), so
RAM holds the codes, one chunk and the training sample; refine vectors are memory-mapped from disk.
Prints a markdown table and merges its results into ``<out>/index_scale.json`` under the key N.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads: spinning OpenMP barriers on a
# busy 2-core machine made OPQ training 5x slower with 2 threads than with 1

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import index_scale_raw as raw
from index_scale_report import ratios, table
from mmrag_core.index import codec
from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.index.refine import RefineStore, write_refine
from mmrag_core.index.shards import encode_shard, merge_shards, read_shard, write_shard
from mmrag_core.index.tombstones import Exclusion, search_index

DIM = 512
K = 10
RANK = 48  # centres lie near a 48-d subspace
POINTS_PER_CLUSTER = 8
CHUNK = 250_000  # rows read from the base file at a time (512 MB)
TARGET = 0.95


def make_centres(n: int, seed: int) -> np.ndarray:
    """Cluster centres near a low-rank subspace. Well-separated random centres make IVF trivial (every
    neighbour in one cell, nprobe 1-2); small clusters on a continuum spread neighbours over cells."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((RANK, DIM)).astype(np.float32) / np.sqrt(RANK)
    return rng.standard_normal((max(100, n // POINTS_PER_CLUSTER), RANK)).astype(np.float32) @ basis


def synthetic_chunks(n: int, seed: int, centres: np.ndarray, noise: float = 0.4,
                     chunk: int = 100_000) -> Iterator[np.ndarray]:
    """Unit vectors: a random centre plus isotropic noise (``noise`` x the centres' per-dim spread), float32."""
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, centres.shape[1]), np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    return np.concatenate(list(synthetic_chunks(n, seed, centres)))


class DiskVectors:
    """float32 rows in a raw file, read with np.fromfile (not mapped: RSS holds only the chunk in use)."""

    def __init__(self, path: Path, dim: int = DIM):
        self.path, self.dim, self.n = path, dim, 0
        path.unlink(missing_ok=True)

    def append(self, x: np.ndarray) -> None:
        with open(self.path, "ab") as f:
            np.ascontiguousarray(x, dtype=np.float32).tofile(f)
        self.n += len(x)

    def read(self, a: int, b: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(a * self.dim * 4)
            return np.fromfile(f, np.float32, (b - a) * self.dim).reshape(b - a, self.dim)

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, self.n, size):
            yield a, self.read(a, min(self.n, a + size))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` in that order, gathered chunk by chunk."""
        order = np.argsort(idx)
        sorted_idx, out = idx[order], np.empty((len(idx), self.dim), np.float32)
        for a, x in self.chunks():
            lo, hi = np.searchsorted(sorted_idx, [a, a + len(x)])
            out[order[lo:hi]] = x[sorted_idx[lo:hi] - a]
        return out


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - t0


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} peak {rss_gib():.1f} GiB] {msg}", flush=True)


def exact_topk(base: DiskVectors, base_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground-truth ids by brute force, one chunk of the base at a time (top-k merged across chunks)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for a, x in base.chunks():
        flat = faiss.IndexFlatIP(base.dim)
        flat.add(x)
        s, pos = flat.search(queries, k)
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, base_ids[a + pos]])
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def exact_single_query_ms(base: DiskVectors, queries: np.ndarray, chunk: int = 1_000_000) -> float:
    """Unbatched exact query (1 thread) over the whole base: per 1M-row chunk held in RAM, the median time
    of ``queries`` one at a time, summed over chunks (a scan is linear in N)."""
    total = 0.0
    for _, x in base.chunks(chunk):
        flat = faiss.IndexFlatIP(base.dim)
        flat.add(x)
        total += float(np.median([timed(flat.search, q[None], K)[1] for q in queries]))
        del flat
    return total * 1e3


# ---- timing mmrag's path and raw FAISS, interleaved --------------------------------------------------------


def batch_seconds(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    return timed(fn, queries)[1]


def single_times(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> np.ndarray:
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        fn(q[None])
        out[i] = time.perf_counter() - t0
    return out


def interleaved(configs: dict[str, Callable[[np.ndarray], object]], batch: np.ndarray, single: np.ndarray,
                rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Batch QPS (``threads``) and one-thread single-query p50/p99 per config; each round times every config
    once, so load on the machine hits all of them alike. Medians over rounds."""
    qps = {name: [] for name in configs}
    p50 = {name: [] for name in configs}
    p99 = {name: [] for name in configs}
    for _ in range(rounds):
        faiss.omp_set_num_threads(threads)
        for name, fn in configs.items():
            qps[name].append(len(batch) / batch_seconds(fn, batch))
        faiss.omp_set_num_threads(1)
        for name, fn in configs.items():
            t = single_times(fn, single)
            p50[name].append(np.percentile(t, 50) * 1e3)
            p99[name].append(np.percentile(t, 99) * 1e3)
    faiss.omp_set_num_threads(threads)
    return {name: {"qps": float(np.median(qps[name])), "p50_ms": float(np.median(p50[name])),
                   "p99_ms": float(np.median(p99[name])), "qps_rounds": [float(v) for v in qps[name]]}
            for name in configs}


def direct_candidates(index: faiss.Index, nprobe: int, k: int) -> Callable[[np.ndarray], object]:
    """FAISS search of the merged index with nprobe set on the index: no parameters object, no selector."""
    ivf = codec.ivf_of(index)

    def fn(q: np.ndarray) -> object:
        ivf.nprobe = nprobe
        return index.search(q, k)
    return fn


def raw_fn(fam: raw.Family, params: dict) -> Callable[[np.ndarray], object]:
    def fn(q: np.ndarray) -> object:
        fam.apply(params["search"], params["k_factor"])
        return fam.index.search(q, K)
    return fn


# ---- the run -----------------------------------------------------------------------------------------------


def run(n: int, threads: int, n_queries: int, n_tune: int, seed: int, workdir: Path, families: tuple[str, ...],
        rounds: int, single_build_max: int, n_single: int, train_size: int | None = None) -> dict:
    faiss.omp_set_num_threads(threads)
    res: dict = {"n": n, "dim": DIM, "threads": threads, "queries": n_queries, "tune_queries": n_tune,
                 "rounds": rounds, "single_queries": n_single, "load_avg_start": os.getloadavg()}
    rng = np.random.default_rng(seed)
    centres = make_centres(n, seed)
    base, extra = DiskVectors(workdir / "base.f32"), DiskVectors(workdir / "extra.f32")
    t0 = time.perf_counter()
    for x in synthetic_chunks(n, seed + 1, centres):
        base.append(x)
    for x in synthetic_chunks(n // 10, seed + 2, centres):  # a later increment
        extra.append(x)
    t_gen = time.perf_counter() - t0
    queries = synthetic(n_queries + n_tune, seed + 3, centres)
    q_eval, q_tune = queries[:n_queries], queries[n_queries:]
    ids = rng.choice(10**12, size=n + extra.n, replace=False).astype(np.int64)
    base_ids, extra_ids = ids[:n], ids[n:]
    log(f"data: {n:,} x {DIM} written to {workdir} in {t_gen:.1f} s")

    spec = codec.choose_codec(n, DIM, train_size=train_size)
    res["codec"] = spec.factory
    sample = base.rows(rng.choice(n, min(spec.train_size or n, n), replace=False))
    trained, res["train_s"] = timed(codec.train_codec, spec, sample, seed)
    res["train_size"], res["opq_train_size"] = len(sample), min(len(sample), codec.OPQ_TRAIN_POINTS)
    codec_bytes = codec.serialize_codec(trained)
    pq_sample = sample[:codec.OPQ_TRAIN_POINTS].copy()
    del sample, trained
    log(f"codec {spec.factory} trained on {res['train_size']:,} in {res['train_s']:.1f} s")

    single = None
    if n <= single_build_max:
        single, res["encode_single_s"] = timed(encode_shard, codec_bytes, base_ids, base.read(0, n))
    bounds = np.linspace(0, n, 11).astype(int)
    shards, paths, res["encode_10_shards_s"] = [], [], 0.0
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        x = base.read(a, b)
        shard, seconds = timed(encode_shard, codec_bytes, base_ids[a:b], x)
        res["encode_10_shards_s"] += seconds
        shards.append(shard)
        paths.append(write_shard(shard, workdir / f"shard-{i:02d}.faiss"))
        write_refine(paths[-1], base_ids[a:b], x)
        del x
    merged, res["merge_10_shards_s"] = timed(merge_shards, shards, codec_bytes)
    del shards
    _, res["read_and_merge_10_shards_s"] = timed(lambda: merge_shards([read_shard(p) for p in paths], codec_bytes))
    log(f"encode {res.get('encode_single_s', float('nan')):.1f} s single, {res['encode_10_shards_s']:.1f} s "
        f"as 10 shards + {res['merge_10_shards_s']:.2f} s merge")

    res["list_bytes_per_vector"] = codec.list_bytes_per_vector(merged)
    index_file = write_shard(merged, workdir / "merged.faiss")
    res["file_bytes_per_vector"] = index_file.stat().st_size / n
    res["index_ram_gib"] = index_file.stat().st_size / 2**30
    res["refine_bytes_per_vector_on_disk"] = 2 * DIM + 8
    res["file_plus_refine_bytes_per_vector"] = res["file_bytes_per_vector"] + res["refine_bytes_per_vector_on_disk"]

    truth_all, res["exact_truth_s"] = timed(exact_topk, base, base_ids, queries, K)
    truth, truth_tune = truth_all[:n_queries], truth_all[n_queries:]
    store = RefineStore.open(paths)
    # The library's tuner (codec.tune_nprobe) holds the base in RAM twice (flat ground truth + fp16 store);
    # its grid search is called here with chunked ground truth and the on-disk store instead. Same choice.
    ivf = codec.ivf_of(merged)
    choice, res["tune_s"] = timed(codec._grid_search, merged, ivf, q_tune, truth_tune, K, store, 1024,
                                  (1, 2, 4, 8, 16, 32), TARGET)
    nprobe, store.k_factor = choice.nprobe, choice.k_factor
    codec.set_nprobe(merged, nprobe)
    res.update(nprobe=nprobe, k_factor=choice.k_factor, tune_recall=choice.recall)
    log(f"tuned nprobe={nprobe} k_factor={choice.k_factor} (recall {choice.recall:.3f}) in {res['tune_s']:.1f} s")

    merged_res = search_index(merged, q_eval, 100, nprobe=nprobe)
    if single is not None:
        single_res = search_index(single, q_eval, 100, nprobe=nprobe)
        assert np.array_equal(single_res[1], merged_res[1]) and np.array_equal(single_res[0], merged_res[0]), \
            "10 merged shards differ from one build"
        res["merged_equals_single"] = True
        del single
    res["recall_codes_only"] = codec.recall_at_k(merged_res[1][:, :K], truth)
    res["recall_refined"] = codec.recall_at_k(search_index(merged, q_eval, K, nprobe=nprobe, refine=store)[1], truth)
    dead = Exclusion(rng.choice(base_ids, n // 100, replace=False))
    found = search_index(merged, q_eval, K, nprobe=nprobe, exclude_ids=dead, refine=store)[1]
    assert (found >= 0).all() and not np.isin(found, dead.ids).any()

    # raw FAISS: build the families, grid on the tuning queries, keep each family's fastest feasible point
    fams, res["raw_build_s"] = raw.build_families(families, merged, codec_bytes, base_ids,
                                                  lambda: (x for _, x in base.chunks()), pq_sample, seed, log)
    res["raw_grid"] = []
    best: tuple[raw.Family, raw.Setting] | None = None
    for fam in fams:
        s = raw.fastest(fam, raw.feasible(fam, q_tune, truth_tune, K, base_ids, TARGET), q_tune, K)
        res["raw_grid"].append(vars(s))
        log(f"raw {fam.name} ({fam.factory}): best {s.params} tune recall {s.recall:.3f}, {s.qps:,.0f} QPS")
        if s.recall >= TARGET and (best is None or s.qps > best[1].qps):
            best = (fam, s)
    if best is None:
        best = (fams[0], raw.Setting(**res["raw_grid"][0]))
    same_fam = next((f for f in fams if f.name == "same-codec+SQfp16"), None)

    kf = choice.k_factor
    configs: dict[str, Callable[[np.ndarray], object]] = {
        "mmrag_refined": lambda q: search_index(merged, q, K, nprobe=nprobe, refine=store),
        "mmrag_refined_1pct_tombstones": lambda q: search_index(merged, q, K, nprobe=nprobe, refine=store,
                                                                exclude_ids=dead),
        "mmrag_candidates": lambda q: search_index(merged, q, K * kf, nprobe=nprobe),
        "faiss_candidates_direct": direct_candidates(merged, nprobe, K * kf),
        "mmrag_codes_only": lambda q: search_index(merged, q, K, nprobe=nprobe),
        "raw_best": raw_fn(best[0], best[1].params),
    }
    if same_fam is not None:
        configs["raw_same_setting"] = raw_fn(same_fam, {"search": nprobe, "k_factor": kf})
    log(f"timing {len(configs)} configs x {rounds} rounds (batch {n_queries}, single {n_single})")
    res["timing"] = interleaved(configs, q_eval, q_eval[:n_single], rounds, threads)
    res["raw_best"] = {**vars(best[1]), "recall_eval": codec.recall_at_k(
        raw.search_ids(best[0], q_eval, K, base_ids), truth)}
    if same_fam is not None:
        same_fam.apply(nprobe, kf)
        res["raw_same_setting_recall_eval"] = codec.recall_at_k(raw.search_ids(same_fam, q_eval, K, base_ids), truth)
    del fams, best, same_fam, configs
    faiss.omp_set_num_threads(1)
    res["exact_single_query_ms"] = exact_single_query_ms(base, q_eval[:20])
    faiss.omp_set_num_threads(threads)
    log(f"exact single query {res['exact_single_query_ms']:.1f} ms")

    x = extra.read(0, extra.n)
    next_shard, res["increment_encode_s"] = timed(encode_shard, codec_bytes, extra_ids, x)
    grown, res["increment_merge_s"] = timed(merge_shards, [merged, next_shard], codec_bytes)
    if n <= single_build_max:
        rebuilt = encode_shard(codec_bytes, ids, np.concatenate([base.read(0, n), x]))
        assert all(np.array_equal(a, b) for a, b in zip(search_index(grown, q_eval, K, nprobe=nprobe),
                                                         search_index(rebuilt, q_eval, K, nprobe=nprobe)))
        res["increment_equals_rebuild"] = True
    res["peak_rss_gib"] = rss_gib()
    res["load_avg_end"] = os.getloadavg()
    return res


def default_families(n: int) -> tuple[str, ...]:
    if n <= 200_000:
        return raw.FAMILIES
    if n <= 2_000_000:
        return tuple(f for f in raw.FAMILIES if f != "HNSW32,Flat")  # HNSW32 over 1M: ~10 min to build here
    return ("same-codec+SQfp16",)  # float32 lists (Flat) would not fit; each extra family = another encode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--tune-queries", type=int, default=500)
    ap.add_argument("--single-queries", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--raw", default=None, help=f"';'-separated raw FAISS families of {raw.FAMILIES}")
    ap.add_argument("--single-build-max", type=int, default=2_000_000,
                    help="above this N, skip the one-build comparisons (they hold the base in RAM)")
    ap.add_argument("--train-size", type=int, default=None,
                    help="coarse training sample (caps nlist at sample/39); default: choose_codec's 40 x nlist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where the base file and shards go (deleted after)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    families = tuple(args.raw.split(";")) if args.raw else default_families(args.n)
    if unknown := set(families) - set(raw.FAMILIES):
        ap.error(f"unknown raw families {sorted(unknown)}; known: {raw.FAMILIES}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmrag-index-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        (res, wall) = timed(run, args.n, args.threads, args.queries, args.tune_queries, args.seed, workdir,
                            families, args.rounds, args.single_build_max, args.single_queries, args.train_size)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res.update(wall_s=wall, faiss=faiss.__version__, machine=f"{platform.machine()}, {os.cpu_count()} cpus",
               omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), command=" ".join(sys.argv))
    res["ratios"] = ratios(res)
    print(table(res))
    print(f"\nwall time {wall:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "index_scale.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[str(args.n)] = res
    out.write_text(json.dumps(previous, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
