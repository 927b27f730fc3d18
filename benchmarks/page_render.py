"""What page-level visual items cost at extraction: milliseconds per page to render a PDF page small and encode
it as PNG (``mmrag_core.ingest.extract.page_render.render_page``), and the PNG bytes stored per page.

    .venv/bin/python benchmarks/page_render.py ../shared/data/pdfs/born_digital/tracemonkey_pldi09.pdf [--px 256]

Each page is rendered ``--repeat`` times; the median per page is kept (the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pymupdf

from mmrag_core.ingest.extract.page_render import render_page


def measure(path: Path, px: int, repeat: int) -> dict:
    """Median render+encode time per page (ms), over the pages of ``path``, and the PNG sizes."""
    per_page_ms, sizes = [], []
    with pymupdf.open(path) as doc:
        for page in doc:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                png, _, _ = render_page(page, px)
                times.append((time.perf_counter() - t0) * 1000)
            per_page_ms.append(statistics.median(times))
            sizes.append(len(png))
    return {
        "pdf": path.name,
        "pages": len(per_page_ms),
        "px": px,
        "ms_per_page_mean": round(statistics.fmean(per_page_ms), 2),
        "ms_per_page_median": round(statistics.median(per_page_ms), 2),
        "ms_per_page_max": round(max(per_page_ms), 2),
        "png_kb_per_page_mean": round(statistics.fmean(sizes) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="+", type=Path)
    parser.add_argument("--px", type=int, default=256, help="longest side of the render (page_render_px)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for path in args.pdfs:
        print(json.dumps(measure(path, args.px, args.repeat)))


if __name__ == "__main__":
    main()
