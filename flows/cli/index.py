"""``mmrag index`` and ``mmrag compact``: the commands that publish snapshots. Prefect, Ray and the models load
only when there is work, so a re-run that finds nothing changed costs the listing only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from flows.cli.common import command_settings, lexical_line, space_line
from flows.cli.stop import Stopped, shut_down, stop_on_signals
from mmrag_core.config import Settings
from mmrag_core.storage.names import printable

if TYPE_CHECKING:
    from mmrag_core.snapshot.changes import PendingWork

# The exit status of a run that ran out of space (the disk or quota holding the store, or a temporary folder).
EXIT_DISK_FULL = 4


def cmd_index(args: argparse.Namespace) -> int:
    """Index ``args.source`` and print the run's summary (or its report as JSON); 1 with ``--strict`` when
    any file or page failed."""
    settings = command_settings(args, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                ocr_lang=args.ocr_lang, num_cpus=args.num_cpus, text_model=args.text_model)
    t0, since = time.perf_counter(), time.time()
    try:
        with stop_on_signals():
            report, work = _up_to_date_report(args, settings)
            if report is None:
                report = _run_index_flow(args, settings, work)
    except Stopped as stopped:
        shut_down(stopped, f"mmrag index: {stopped}; stopped Ray and the child processes; {kept(settings, since)}")
    except OSError as e:
        from tasks.retries import disk_full

        full = disk_full(e)
        if full is None:
            raise
        print(f"mmrag index: out of space: {printable(full.strerror)} writing {printable(full.filename or '?')}: the "
              f"disk (or quota) holding it is full; {kept(settings, since)}; free space and run it again "
              "('mmrag snapshots gc' removes what runs left behind)", file=sys.stderr, flush=True)
        return EXIT_DISK_FULL
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**report, "seconds_wall": round(wall, 3)}, indent=2))
    elif report["published"]:
        _print_index_summary(report["manifest"], wall)
    else:
        print(f"\nnothing changed since snapshot {report['snapshot']} (LATEST unchanged); checked in {wall:.1f} s")
    from mmrag_core.storage.items import is_skipped

    failed = [f for f in report["manifest"]["failures"] if not is_skipped(f)]
    return 1 if args.strict and failed else 0


def _run_index_flow(args: argparse.Namespace, settings: Settings, work: PendingWork | None) -> dict:
    """The index flow run, with a progress bar on stderr. When the new documents are known (``work``), their
    models start (or load, for a small job) while Prefect's temporary API starts, not after it."""
    from flows.warm_start import prefect_api_starting, prestart
    from tasks.worker_logs import install_console_safety

    with prefect_api_starting():
        # Prefect first: it sets up logging, which a library logging through the root logger (open_clip) would
        # otherwise set up its own way. Then the models: both while the API starts.
        from flows.index_flow import index_flow
        from flows.params import IndexOverrides, overrides_of
        from tasks.artifacts import progress_listener

        if work is not None and work.candidates:
            prestart(settings, work.candidates)
    install_console_safety()  # on every log handler, Prefect's too: they exist once Prefect is imported
    with progress_listener(progress_bar):
        return index_flow(args.source, settings.store, overrides_of(settings, IndexOverrides), args.retrain)


# Without a terminal, a progress line at most this often (or when a document completes): a log, not a flood.
PLAIN_EVERY_SECONDS = 10.0
_plain_last: list[float] = [-1.0, float("-inf")]  # (documents done, time) of the last plain line


def progress_bar(done: float, total: int, elapsed: float, pages: int = 0) -> None:
    """Progress on stderr: a bar redrawn in place on a terminal (pages as they finish); otherwise plain lines,
    one per finished document or every PLAIN_EVERY_SECONDS."""
    from tasks.artifacts import format_eta

    width = 30
    filled = min(width, int(width * done / max(1, total)))
    shown = f"{done:.1f}".removesuffix(".0")
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {shown}/{total} docs, {elapsed:.0f} s, "
            f"ETA {format_eta(done, total, elapsed)}" + (f" ({pages} pages)" if pages else ""))
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
        return
    now = time.monotonic()
    if int(done) == int(_plain_last[0]) and now - _plain_last[1] < PLAIN_EVERY_SECONDS and done < total:
        return
    _plain_last[:] = [done, now]
    print(line, file=sys.stderr, flush=True)


def _up_to_date_report(args: argparse.Namespace, settings: Settings) -> tuple[dict | None, PendingWork | None]:
    """Without a Prefect server (``PREFECT_API_URL``) every flow run starts a temporary local API, ~10 s
    here; a re-run that finds nothing changed should cost the listing only, so check first. Returns the
    report of a run with nothing to do, else None and the pending work found (None when not checked)."""
    if args.retrain or os.environ.get("PREFECT_API_URL"):
        return None, None
    from mmrag_core.snapshot.changes import check

    work = check(args.source, settings)
    if not work.up_to_date:
        return None, work
    return {"published": False, "snapshot": work.parent["id"], "manifest": work.parent,
            "changes": work.changes.counts(), "flow_run": None}, work


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
    # The image space skipped is said once, by the run's log (a WARNING line), not again here.
    from mmrag_core.storage.items import is_skipped

    skipped = [f for f in m["failures"] if is_skipped(f)]
    if skipped:
        print(f"  skipped (unsupported file type): {len(skipped)}: "
              + ", ".join(printable(f["source_uri"].rsplit("/", 1)[-1]) for f in skipped[:5])
              + (", ..." if len(skipped) > 5 else ""))
    failed = [f for f in m["failures"] if not is_skipped(f)]
    if failed:
        print(f"  failures: {len(failed)}")
        for f in failed:
            page = f" p{f['page']}" if f.get("page") is not None else ""
            print(f"    - {printable(f['source_uri'])}{page} [{f['stage']}]: {printable(f['reason'])}")


def kept(settings: Settings, since: float) -> str:
    """What an interrupted run leaves for the next one: the document records it wrote (reused, not processed
    again), the snapshot LATEST names, and whether the store lock was released."""
    import json as json_

    from mmrag_core.storage.lock import LOCKS
    from mmrag_core.storage.store import DOCS, is_temp_key, open_store

    try:
        store = open_store(settings)
        records = [k for k in store.find(DOCS) if not is_temp_key(k)]
        written = sum(1 for k in records if store.modified(k) >= since)
        latest = store.latest_id()
        try:
            holder = json_.loads(store.read_bytes(f"{LOCKS}/index.json")).get("pid")
        except FileNotFoundError:
            holder = None
    except Exception as e:  # noqa: BLE001 - the store may be what failed; say so rather than fail again
        return f"could not read what was kept ({printable(e)})"
    lock = "store lock still held by this process" if holder == os.getpid() else "store lock released"
    snapshot = f"LATEST is snapshot {latest}" if latest else "nothing published yet (no LATEST)"
    return (f"kept {written} document record(s) written by this run ({len(records)} in the store; the next run "
            f"reuses them); {snapshot}; {lock}")


def cmd_compact(args: argparse.Namespace) -> int:
    """Compact LATEST into a new snapshot and print its spaces."""
    from flows.index_flow import compact_flow
    from flows.params import CompactOverrides, overrides_of

    settings = command_settings(args)
    m = compact_flow(settings.store, overrides_of(settings, CompactOverrides))
    print(f"snapshot {m['id']} published (compaction of {m['parent']})")
    for space, meta in m["spaces"].items():
        print("  " + space_line(space, meta))
    return 0
