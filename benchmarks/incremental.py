"""Benchmark: what re-indexing costs when little changed. Full build, re-run with nothing changed, re-run
after adding one document and removing one; all through the real CLI (Prefect, Ray, models, FAISS).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/incremental.py ../shared/data/pdfs

Targets (issue 3): unchanged re-run <= 3 % of the full build's wall time; add + remove <= 10 %, the added
document's own extraction and embedding excluded (reported separately, and so is the whole processing stage,
which includes starting Ray and loading the models). A last run removes one document only. Prints a table and writes
``<out>/incremental_<corpus>.json``. Compare ratios within one run: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cli_runs import run_index  # benchmarks/ is on sys.path when a script here runs

SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def pick_changes(files: list[Path]) -> tuple[Path, Path]:
    """The document held out of the full build (added later) and the one removed later: the two smallest
    PDFs, so that the added document's own processing is small next to the fixed costs being measured."""
    pdfs = sorted((f for f in files if f.suffix.lower() == ".pdf"), key=lambda f: (f.stat().st_size, f.name))
    return pdfs[0], pdfs[1]


def row(label: str, report: dict, wall: float, full_wall: float) -> dict:
    """One run's figures. ``stage_s`` is the processing stage of the run (starting Ray and the model actors,
    then extracting, embedding and persisting the new documents); ``own_s`` the documents' own extraction
    and embedding inside it."""
    st = report["manifest"]["stats"] if report["published"] else {}
    stage = st.get("seconds_processing", 0.0)
    own = st.get("seconds_extract_tasks", 0.0) + st.get("seconds_embed_calls", 0.0)
    return {
        "run": label,
        "published": report["published"],
        "wall_s": round(wall, 1),
        "pct_of_full": round(100 * wall / full_wall, 2),
        "documents_processed": st.get("documents_processed", 0),
        "pages_processed": st.get("pages_processed", 0),
        "processing_stage_s": round(stage, 1),
        "own_extract_embed_s": round(own, 1),
        "pct_excluding_own": round(100 * (wall - own) / full_wall, 2),
        "pct_excluding_stage": round(100 * (wall - stage) / full_wall, 2),
        "index_publish_s": round(st.get("seconds_index", 0.0) + st.get("seconds_compact", 0.0), 2),
        "changes": report["changes"],
        "tombstones": report["manifest"]["tombstones"],
        "items": report["manifest"]["counts"]["items"],
        "stats": st,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    files = sorted(p for p in args.corpus.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    added, removed = pick_changes(files)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus, store = Path(tmp) / "corpus", Path(tmp) / "store"
        for f in files:
            if f != added:
                dest = corpus / f.relative_to(args.corpus)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f.resolve(), dest)
        full, full_wall = run_index(corpus, store)
        rows.append(row("full build", full, full_wall, full_wall))
        same, wall = run_index(corpus, store)
        rows.append(row("re-run, nothing changed", same, wall, full_wall))
        (corpus / removed.relative_to(args.corpus)).unlink()
        shutil.copy(added, corpus / added.relative_to(args.corpus))
        changed, wall = run_index(corpus, store)
        rows.append(row(f"re-run, +1 ({added.name}) -1 ({removed.name})", changed, wall, full_wall))
        (corpus / added.relative_to(args.corpus)).unlink()
        gone, wall = run_index(corpus, store)
        rows.append(row(f"re-run, -1 ({added.name})", gone, wall, full_wall))
    cols = ["run", "wall_s", "pct_of_full", "processing_stage_s", "own_extract_embed_s", "pct_excluding_own",
            "pct_excluding_stage", "index_publish_s", "documents_processed", "pages_processed", "tombstones",
            "items"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"incremental_{args.corpus.name}.json"
    out.write_text(json.dumps({"corpus": str(args.corpus), "files": len(files), "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
