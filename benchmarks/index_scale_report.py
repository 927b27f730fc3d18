"""The report of benchmarks/index_scale.py: the ratios the issue's targets are stated in, and a markdown table."""
from __future__ import annotations


def ratios(r: dict) -> dict[str, float]:
    t = r["timing"]
    out = {
        "batch_mmrag_over_raw_best": t["mmrag_refined"]["qps"] / t["raw_best"]["qps"],
        "single_exact_over_mmrag": r["exact_single_query_ms"] / t["mmrag_refined"]["p50_ms"],
        "single_raw_best_over_mmrag": t["raw_best"]["p50_ms"] / t["mmrag_refined"]["p50_ms"],
        "refine_share_batch": 1 - t["mmrag_refined"]["qps"] / t["mmrag_candidates"]["qps"],
        "refine_share_single": 1 - t["mmrag_candidates"]["p50_ms"] / t["mmrag_refined"]["p50_ms"],
        "selector_cost_batch": (1 / t["mmrag_refined_1pct_tombstones"]["qps"]) / (1 / t["mmrag_refined"]["qps"]) - 1,
        "selector_cost_single": t["mmrag_refined_1pct_tombstones"]["p50_ms"] / t["mmrag_refined"]["p50_ms"] - 1,
        "params_cost_batch": t["faiss_candidates_direct"]["qps"] / t["mmrag_candidates"]["qps"] - 1,
    }
    if "raw_same_setting" in t:
        out["batch_mmrag_over_raw_same_setting"] = t["mmrag_refined"]["qps"] / t["raw_same_setting"]["qps"]
        out["single_raw_same_over_mmrag"] = t["raw_same_setting"]["p50_ms"] / t["mmrag_refined"]["p50_ms"]
    return out


def table(r: dict) -> str:
    t, q = r["timing"], ratios(r)
    rb = r["raw_best"]

    def line(name: str) -> str:
        return f"{t[name]['qps']:,.0f} QPS / {t[name]['p50_ms']:.2f} / {t[name]['p99_ms']:.2f}"
    rows = [
        ("vectors", f"{r['n']:,} x {r['dim']} (clustered synthetic, unit norm), {r['threads']} threads, "
                    f"faiss {r['faiss']}; load avg start/end {r['load_avg_start'][0]:.1f}/{r['load_avg_end'][0]:.1f}"),
        ("codec", f"`{r['codec']}` + fp16 refine on disk"),
        ("train (s) / sample / OPQ sample", f"{r['train_s']:.1f} / {r['train_size']:,} / {r['opq_train_size']:,}"),
        ("encode: one build / 10 shards (s)", f"{r.get('encode_single_s', float('nan')):.1f} / "
                                              f"{r['encode_10_shards_s']:.1f}"),
        ("merge 10 shards in RAM / read files + merge (s)",
         f"{r['merge_10_shards_s']:.2f} / {r['read_and_merge_10_shards_s']:.2f}"),
        ("10 merged shards vs one build", "identical (asserted)" if r.get("merged_equals_single") else "not checked"),
        ("add N/10 as a shard: encode + merge (s)",
         f"{r['increment_encode_s']:.1f} + {r['increment_merge_s']:.2f}"
         + (" (== rebuild, asserted)" if r.get("increment_equals_rebuild") else "")),
        ("bytes/vector: codes+id / index file / + fp16 refine on disk",
         f"{r['list_bytes_per_vector']} / {r['file_bytes_per_vector']:.1f} / {r['file_plus_refine_bytes_per_vector']:.0f}"),
        ("tuned nprobe, k_factor (tuning recall, s)",
         f"{r['nprobe']}, {r['k_factor']} ({r['tune_recall']:.3f}, {r['tune_s']:.1f})"),
        (f"recall@10 ({r['queries']} queries): codes only / refined / raw best",
         f"{r['recall_codes_only']:.3f} / {r['recall_refined']:.3f} / {rb['recall_eval']:.3f}"),
        ("raw FAISS best (fastest batch with tune recall >= 0.95)",
         f"{rb['family']} `{rb['factory']}` {rb['params']}"),
        ("batch QPS / single p50 / p99 ms: mmrag refined", line("mmrag_refined")),
        ("  mmrag refined, 1% tombstoned", line("mmrag_refined_1pct_tombstones")),
        ("  mmrag FAISS stage only (k x k_factor candidates)", line("mmrag_candidates")),
        ("  same, FAISS called directly (no params object)", line("faiss_candidates_direct")),
        ("  mmrag codes only (k candidates)", line("mmrag_codes_only")),
        ("  raw FAISS best", line("raw_best")),
    ]
    if "raw_same_setting" in t:
        rows.append(("  raw FAISS same codec + IndexRefine(SQfp16), same nprobe/k_factor", line("raw_same_setting")))
    rows += [
        ("exact single query ms (IndexFlatIP, 1 thread)", f"{r['exact_single_query_ms']:.1f}"),
        ("**batch QPS mmrag / raw best** (target >= 0.8)", f"**{q['batch_mmrag_over_raw_best']:.2f}**"),
        ("**single query: exact / mmrag** (target >= 100)", f"**{q['single_exact_over_mmrag']:.0f}**"),
        ("refine share of mmrag time: batch / single", f"{q['refine_share_batch']:.0%} / {q['refine_share_single']:.0%}"),
        ("tombstone selector cost: batch / single", f"{q['selector_cost_batch']:+.0%} / {q['selector_cost_single']:+.0%}"),
        ("peak RSS (GiB); index in RAM (GiB)", f"{r['peak_rss_gib']:.1f}; {r['index_ram_gib']:.2f}"),
    ]
    if "batch_mmrag_over_raw_same_setting" in q:
        rows.insert(-3, ("batch QPS mmrag / raw same setting", f"{q['batch_mmrag_over_raw_same_setting']:.2f}"))
    return "\n".join(["| measure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])
