"""Benchmark: extraction throughput of one worker (one core), text-layer PDFs vs OCR'd scans.

    .venv/bin/python benchmarks/extract_throughput.py --data ../shared/data --out benchmarks/results

Runs ``extract_document`` in-process with the real tokenizer (what a Ray extraction task runs), prints a
table and writes ``<out>/extract_throughput.json``. Ratios from one run are what to compare.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # as on the Ray workers
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmrag_core.config import Settings
from mmrag_core.ingest.extract import extract_document
from mmrag_core.models.text_encoder import load_token_counter

SETS = {
    "born-digital 10-Ks (text layer)": ["financebench-dev/pdfs/AMAZON_2017_10K.pdf",
                                        "financebench-dev/pdfs/ADOBE_2022_10K.pdf"],
    "born-digital book (text layer)": ["pdfs/born_digital/lessig_free_culture.pdf"],
    "scanned PDFs (OCR, 300 dpi)": ["pdfs/scanned/scan_huckfinn_ch2_p22.pdf",
                                    "pdfs/scanned/scan_linnsequencer_brochure.pdf",
                                    "pdfs/scanned/scan_linn_rotated_4ways.pdf"],
}


def measure(paths: list[Path], settings: Settings) -> dict:
    """Extract each file once; totals of pages, OCR pages, items and seconds."""
    count = load_token_counter(settings.text_model)
    tot = {"files": len(paths), "pages": 0, "ocr_pages": 0, "items": 0, "seconds": 0.0, "seconds_ocr": 0.0}
    for p in paths:
        t0 = time.perf_counter()
        r = extract_document(p, str(p), "bench", settings, count)
        tot["seconds"] += time.perf_counter() - t0
        tot["pages"] += int(r.stats["pages"])
        tot["ocr_pages"] += int(r.stats["ocr_pages"])
        tot["seconds_ocr"] += float(r.stats["seconds_ocr"])
        tot["items"] += len(r.items)
    return tot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MMRAG_TEST_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    settings = Settings()
    results = {name: measure([args.data / f for f in files], settings) for name, files in SETS.items()}
    print("| set | pages | OCR pages | items | s | pages/s | OCR s/page |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ocr = f"{r['seconds_ocr'] / r['ocr_pages']:.2f}" if r["ocr_pages"] else "-"
        print(f"| {name} | {r['pages']} | {r['ocr_pages']} | {r['items']} | {r['seconds']:.1f} | "
              f"{r['pages'] / r['seconds']:.1f} | {ocr} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "extract_throughput.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
