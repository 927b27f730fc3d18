"""Plot how the index's cost grows with N, from benchmarks/results/index_scale.json (benchmarks/index_scale.py).

    .venv/bin/python benchmarks/plot_index_scale.py            # -> docs/img/index_scale.png

Four panels over the sizes present in the results: build times (train, encode, merge), memory (peak RSS of
the benchmark, the index's codes in RAM), search speed (batch QPS of mmrag's path and of the best raw FAISS
setting; single-query p50) and recall@10. Log-log axes: a straight line is a power law, a bend is where
the cost model changes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path: Path) -> list[dict]:
    """Runs that carry this benchmark's timing section, smallest N first."""
    runs = [r for key, r in json.loads(path.read_text()).items() if key.isdigit() and "timing" in r]
    return sorted(runs, key=lambda r: r["n"])


def plot(runs: list[dict], out: Path) -> None:
    n = [r["n"] for r in runs]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))

    a = ax[0, 0]
    a.plot(n, [r["train_s"] for r in runs], "o-", label="train codec")
    a.plot(n, [r["encode_10_shards_s"] for r in runs], "s-", label="encode (10 shards)")
    a.plot(n, [r["merge_10_shards_s"] for r in runs], "^-", label="merge 10 shards")
    a.plot(n, [r["exact_truth_s"] for r in runs], "x--", label="exact ground truth (1,500 q)")
    a.set(title="build time (s)", ylabel="seconds")

    a = ax[0, 1]
    a.plot(n, [r["peak_rss_gib"] for r in runs], "o-", label="peak RSS of the benchmark")
    a.plot(n, [r["index_ram_gib"] for r in runs], "s-", label="index (codes + ids) in RAM")
    a.plot(n, [r["n"] * r["refine_bytes_per_vector_on_disk"] / 2**30 for r in runs], "^--",
           label="fp16 refine vectors (on disk)")
    a.set(title="memory (GiB)", ylabel="GiB")

    a = ax[1, 0]
    a.plot(n, [r["timing"]["mmrag_refined"]["qps"] for r in runs], "o-", label="mmrag batch QPS")
    a.plot(n, [r["timing"]["raw_best"]["qps"] for r in runs], "s--", label="raw FAISS best, batch QPS")
    a.plot(n, [1e3 / r["timing"]["mmrag_refined"]["p50_ms"] for r in runs], "^-", label="mmrag 1 / single p50")
    a.plot(n, [1e3 / r["exact_single_query_ms"] for r in runs], "x:", label="exact, 1 / single query")
    a.set(title="search speed (queries/s)", ylabel="queries per second")

    a = ax[1, 1]
    a.plot(n, [r["recall_refined"] for r in runs], "o-", label="mmrag refined")
    a.plot(n, [r["raw_best"]["recall_eval"] for r in runs], "s--", label="raw FAISS best")
    a.plot(n, [r["recall_codes_only"] for r in runs], "^-", label="codes only")
    a.axhline(0.95, color="grey", lw=0.8, ls=":")
    a.set(title="recall@10", ylabel="recall@10", ylim=(0.6, 1.0))
    for i, r in enumerate(runs):
        a.annotate(f"nprobe {r['nprobe']}, kf {r['k_factor']}", (r["n"], r["recall_refined"]),
                   textcoords="offset points", xytext=(0, 6 + 10 * (i % 2)), fontsize=7, ha="center")

    for i, a in enumerate(ax.flat):
        a.set_xscale("log")
        if i < 3:
            a.set_yscale("log")
        a.set_xlabel("vectors (512-d)")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"IVF-PQ index cost, {n[0]:,} to {n[-1]:,} vectors (benchmarks/index_scale.py, 2 shared cores)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/index_scale.json"))
    ap.add_argument("--out", type=Path, default=Path("docs/img/index_scale.png"))
    args = ap.parse_args(argv)
    runs = load(args.results)
    if not runs:
        raise SystemExit(f"no index_scale runs with timings in {args.results}")
    plot(runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
