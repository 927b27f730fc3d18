"""Benchmark: index a corpus end to end with the real CLI and report throughput from its manifest, and the
embed stage's efficiency against the raw text encoder on the same texts (benchmarks/embed_stage.py).

    .venv/bin/python benchmarks/index_corpus.py ../shared/data/financebench-dev/pdfs --name financebench-dev

Prints tables and writes ``<out>/index_<corpus>.json``. Run it on a quiet machine; compare ratios
measured in one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from cli_runs import run_index  # benchmarks/ is on sys.path when a script here runs
from embed_stage import measure, rows as embed_rows

from mmrag_core.config import load_settings
from mmrag_core.models.text_encoder import TRACE_ENV


def rows(report: dict, wall: float, label: str) -> list[tuple[str, str]]:
    if not report["published"]:
        return [("run", label), ("result", f"nothing changed, nothing published ({report['changes']})"),
                ("wall time, whole command (s)", f"{wall:.1f}")]
    st, c = report["manifest"]["stats"], report["manifest"]["counts"]
    pages = st["pages_processed"]
    return [
        ("run", label),
        ("documents processed / reused", f"{st['documents_processed']} / {st['documents_reused']}"),
        ("pages processed (OCR'd)", f"{pages} ({st['ocr_pages']})"),
        ("items", f"{c['items']} {c['items_by_kind']}"),
        ("wall time, whole command (s)", f"{wall:.1f}"),
        ("processing time: extract+embed+persist (s)", f"{st['seconds_processing']:.1f}"),
        ("pages/s over processing time", f"{pages / max(st['seconds_processing'], 1e-9):.2f}"),
        ("OCR s/page (summed over workers)", f"{st['seconds_ocr'] / st['ocr_pages']:.2f}" if st["ocr_pages"] else "-"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--name", help="name of the results file (default: the corpus folder's name)")
    ap.add_argument("--no-embed-stage", action="store_true", help="skip the embed-stage measurement")
    ap.add_argument("--trace", type=Path, help="keep the encoder trace (the embedded texts) in this file")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        trace = args.trace or Path(tmp) / "encoder_trace.jsonl"
        trace.unlink(missing_ok=True)
        for label in ("cold", "warm (unchanged corpus)"):
            if label == "cold" and not args.no_embed_stage:
                os.environ[TRACE_ENV] = str(trace)  # the run's encoder actors inherit it
            report, wall = run_index(args.corpus, Path(tmp) / "store")
            os.environ.pop(TRACE_ENV, None)
            results[label] = {"wall_s": wall, "published": report["published"], "changes": report["changes"],
                              "stats": report["manifest"]["stats"], "counts": report["manifest"]["counts"]}
            for k, v in rows(report, wall, label):
                print(f"| {k:<45} | {v} |")
            print()
        if not args.no_embed_stage:
            settings = load_settings()
            results["embed stage"] = measure(trace, settings.text_model, settings.embed_batch_size,
                                             results["cold"]["stats"])
            for k, v in embed_rows(results["embed stage"]):
                print(f"| {k:<60} | {v} |")
            print()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"index_{args.name or args.corpus.name}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
