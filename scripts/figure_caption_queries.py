"""Make the figure-caption retrieval set of docs/evaluation.md from ../shared/data/figure_captions.

Writes, under OUT: ``src/`` (the PDFs the captions come from, copied), ``queries.jsonl`` (each caption without its
"Figure N:" label) and ``qrels.tsv`` (the caption's 0-based page as ``<pdf stem>#p<page>``), so that

    mmrag index OUT/src --store STORE
    mmrag eval --queries OUT/queries.jsonl --qrels OUT/qrels.tsv --store STORE

measures caption-to-page retrieval on documents that are not financial filings.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

_LABEL = re.compile(r"^(Figure|Fig\.?)\s*\d+[.:]?\s*", re.IGNORECASE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    ap.add_argument("out", type=Path, help="folder to write src/, queries.jsonl and qrels.tsv into")
    args = ap.parse_args()
    captions = json.loads((args.data / "figure_captions" / "figure_captions.json").read_text())
    (args.out / "src").mkdir(parents=True, exist_ok=True)
    for pdf in sorted({c["pdf"] for c in captions}):
        shutil.copy(args.data / "pdfs" / "born_digital" / pdf, args.out / "src" / pdf)
    with (args.out / "queries.jsonl").open("w") as q, (args.out / "qrels.tsv").open("w") as r:
        r.write("query_id\tcorpus_id\tscore\n")
        for c in captions:
            q.write(json.dumps({"query_id": c["id"], "text": _LABEL.sub("", c["caption"])}) + "\n")
            r.write(f"{c['id']}\t{Path(c['pdf']).stem}#p{c['page']}\t1\n")
    print(f"{len(captions)} captions over {len({c['pdf'] for c in captions})} PDFs in {args.out}")


if __name__ == "__main__":
    main()
