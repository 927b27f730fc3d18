"""``mmrag index`` and ``mmrag compact``: the commands that publish snapshots. Prefect, Ray and the models load
only when there is work, so a re-run that finds nothing changed costs the listing only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from flows.cli.common import command_settings, lexical_line, space_line
from mmrag_core.config import Settings


def cmd_index(args: argparse.Namespace) -> int:
    """Index ``args.source`` and print the run's summary (or its report as JSON); 1 with ``--strict`` when
    any file or page failed."""
    settings = command_settings(args, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                ocr_lang=args.ocr_lang, num_cpus=args.num_cpus)
    t0 = time.perf_counter()
    report = _up_to_date_report(args, settings)
    if report is None:
        report = _run_index_flow(args, settings)
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**report, "seconds_wall": round(wall, 3)}, indent=2))
    elif report["published"]:
        _print_index_summary(report["manifest"], wall)
    else:
        print(f"\nnothing changed since snapshot {report['snapshot']} (LATEST unchanged); checked in {wall:.1f} s")
    return 1 if args.strict and report["manifest"]["failures"] else 0


def _run_index_flow(args: argparse.Namespace, settings: Settings) -> dict:
    """The index flow run, with a progress bar on stderr."""
    from flows.index_flow import index_flow
    from flows.params import overrides_of
    from tasks.artifacts import progress_listener

    with progress_listener(progress_bar):
        return index_flow(args.source, settings.store, overrides_of(settings), args.retrain)


def progress_bar(done: int, total: int, elapsed: float) -> None:
    """One line on stderr per finished batch: a bar, documents done, ETA (redrawn in place on a terminal)."""
    from tasks.artifacts import format_eta

    width = 30
    filled = width * done // max(1, total)
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} docs, {elapsed:.0f} s, "
            f"ETA {format_eta(done, total, elapsed)}")
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _up_to_date_report(args: argparse.Namespace, settings: Settings) -> dict | None:
    """Without a Prefect server (``PREFECT_API_URL``) every flow run starts a temporary local API, ~10 s
    here; a re-run that finds nothing changed should cost the listing only, so check first."""
    if args.retrain or os.environ.get("PREFECT_API_URL"):
        return None
    from mmrag_core.snapshot.changes import check

    work = check(args.source, settings)
    if not work.up_to_date:
        return None
    return {"published": False, "snapshot": work.parent["id"], "manifest": work.parent,
            "changes": work.changes.counts(), "flow_run": None}


def _print_index_summary(m: dict, wall: float) -> None:
    c, st = m["counts"], m["stats"]
    print(f"\nsnapshot {m['id']} published in {wall:.1f} s"
          + (f" (full rebuild: {st['full_rebuild']})" if st.get("full_rebuild") else ""))
    print(f"  documents: {c['documents']} indexed ({st['documents_processed']} processed, "
          f"{st['documents_reused']} reused), pages processed: {st['pages_processed']} "
          f"({st['ocr_pages']} OCR'd)")
    print("  since the last snapshot: " + ", ".join(f"{n} {k}" for k, n in st["changes"].items()))
    print(f"  items: {c['items']} {c['items_by_kind']}")
    for space, meta in m["spaces"].items():
        print("  " + space_line(space, meta))
    if m.get("lexical"):
        print("  " + lexical_line(m["lexical"]))
    if m.get("compacted"):
        print(f"  compacted: {m['compacted']}")
    if "skipped" in m["models"].get("image", {}):
        print(f"  space image: SKIPPED - {m['models']['image']['skipped']}")
    if m["failures"]:
        print(f"  failures: {len(m['failures'])}")
        for f in m["failures"]:
            page = f" p{f['page']}" if f.get("page") is not None else ""
            print(f"    - {f['source_uri']}{page} [{f['stage']}]: {f['reason']}")


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact LATEST into a new snapshot and print its spaces."""
    from flows.index_flow import compact_flow
    from flows.params import overrides_of

    settings = command_settings(args)
    m = compact_flow(settings.store, overrides_of(settings))
    print(f"snapshot {m['id']} published (compaction of {m['parent']})")
    for space, meta in m["spaces"].items():
        print("  " + space_line(space, meta))
    return 0
