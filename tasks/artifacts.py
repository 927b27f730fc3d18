"""Prefect artifacts of the flows: what a run shows in the UI beside its logs.

An indexing run publishes a progress artifact (documents done / total, updated after every batch), a
markdown summary at the end (counts per change, kind and failure stage; timings; snapshot id and store) and a
table of failures (file, page, stage, reason). Rendering is plain functions; only ``publish_*`` and
``RunProgress`` talk to the Prefect API, from inside a flow run.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from mmrag_core.storage.items import is_skipped
from mmrag_core.storage.names import printable

log = logging.getLogger(__name__)

SUMMARY_KEY = "mmrag-index-summary"
FAILURES_KEY = "mmrag-index-failures"
PROGRESS_KEY = "mmrag-index-progress"
GC_KEY = "mmrag-gc-summary"

ProgressListener = Callable[[float, int, float, int], None]  # (documents done, total, elapsed seconds, pages)
_listeners: list[ProgressListener] = []


@contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[None]:
    """Call ``listener`` on every progress update of runs in this process (the CLI draws its bar this way)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def store_key(base: str, store_uri: str) -> str:
    """An artifact key of one store (``base`` and a short id of the store's URI): the deployments of two stores
    keep two histories in the UI, not one."""
    uri = store_uri.rstrip("/")
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return f"{base}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def format_eta(done: float, total: int, elapsed: float) -> str:
    """Time left at the rate so far, e.g. ``3m07s``; ``?`` before anything is done."""
    if done == 0:
        return "?"
    left = elapsed / done * max(0, total - done)
    return f"{int(left // 60)}m{int(left % 60):02d}s"


class RunProgress:
    """Documents done out of ``total`` (a document partly extracted counts by its pages done), and pages: a
    Prefect progress artifact (updated at most every ``artifact_every`` seconds), and the listeners of this
    process."""

    def __init__(self, total: int, description: str, store_uri: str, artifact_every: float = 2.0) -> None:
        self.total, self.description, self.t0 = total, description, time.perf_counter()
        self.artifact_every, self.last_artifact, self.last = artifact_every, 0.0, (0.0, 0)
        self.artifact_id = create_progress_artifact(0.0 if total else 100.0, key=store_key(PROGRESS_KEY, store_uri),
                                                    description=self._text(0, 0.0, 0))

    def _text(self, done: float, elapsed: float, pages: int) -> str:
        shown = f"{done:.1f}".removesuffix(".0")
        return (f"{self.description}: {shown}/{self.total} documents, {pages} pages, "
                f"ETA {format_eta(done, self.total, elapsed)}")

    def update(self, done: float, pages: int = 0) -> None:
        """Report ``done`` documents and ``pages``; nothing when neither moved. A failing API call is logged,
        never fatal to the run."""
        done, pages = max(done, self.last[0]), max(pages, self.last[1])  # never backwards
        if (done, pages) == self.last:
            return
        self.last = (done, pages)
        elapsed = time.perf_counter() - self.t0
        for listener in _listeners:
            listener(done, self.total, elapsed, pages)
        now = time.perf_counter()
        if done < self.total and now - self.last_artifact < self.artifact_every:
            return
        self.last_artifact = now
        try:
            update_progress_artifact(self.artifact_id, 100.0 * done / max(1, self.total),
                                     description=self._text(done, elapsed, pages))
        except Exception as e:  # noqa: BLE001 - progress is for watching; the run must not fail on it
            log.warning("could not update the progress artifact: %s", e)


def _cell(value: Any) -> str:
    """A markdown table cell: no pipes, newlines or other control characters from file names or error messages
    (escaped, so the name still reads as it is)."""
    return "" if value is None else printable(value).replace("|", "\\|")


def _code(value: Any) -> str:
    """Inline markdown code of a name: control characters escaped, no backtick to close it early."""
    return "`" + printable(value).replace("`", "'") + "`"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def failure_rows(failures: list[dict]) -> list[dict]:
    """The failures table: one row per file (or page) that could not be indexed."""
    return [{"file": printable(f["source_uri"]), "page": f.get("page"), "stage": f["stage"],
             "reason": printable(f["reason"])} for f in failures]


def summary_markdown(report: dict, store_uri: str) -> str:
    """The end-of-run summary of ``run_index``'s report: published, nothing changed, or nothing to publish."""
    seconds = report.get("seconds_total")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    if report.get("nothing_to_publish"):
        failures = report["failures"]
        return (f"# Nothing to publish\n\nNo document of {_code(report['source'])} produced any item{took}; LATEST "
                f"of store {_code(store_uri)} is unchanged.\n\n## Failures by stage\n\n" + _by_stage(failures))
    if not report["published"]:
        changes = ", ".join(f"{n} {k}" for k, n in report["changes"].items())
        return (f"# Nothing changed\n\nSince snapshot `{report['snapshot']}` (LATEST, unchanged) of store "
                f"{_code(store_uri)}: {changes}. Checked{took}.")
    m = report["manifest"]
    st, c = m["stats"], m["counts"]
    head = [f"# Snapshot `{m['id']}` published{took}", "",
            f"- store: {_code(store_uri)}", f"- source: {_code(m['source'])}", f"- parent: `{m['parent']}`" if m["parent"] else "- parent: none (the store's first snapshot)"]
    if st.get("full_rebuild"):
        head.append(f"- full rebuild: {st['full_rebuild']}")
    if m.get("compacted"):
        head.append(f"- compacted: {m['compacted']}")
    skipped_docs = sum(1 for f in m["failures"] if is_skipped(f))
    docs = _table(["added", "changed", "removed", "unchanged", "processed", "reused", "indexed", "failed",
                   "skipped (unsupported type)"],
                  [[*(st["changes"].get(k, 0) for k in ("added", "changed", "removed", "unchanged")),
                    st.get("documents_processed"), st.get("documents_reused"), c["documents"], c["documents_failed"],
                    skipped_docs]])
    kinds = _table(["kind", "items"], [[k, n] for k, n in c["items_by_kind"].items()] + [["**all**", c["items"]]])
    spaces = _table(["space", "vectors", "index", "shards", "tombstoned", "recall@10"],
                    [[s, v["count"], v["index_type"], len(v["shards"]), v["tombstoned"], v.get("recall_at_10")]
                     for s, v in m["spaces"].items()])
    stages = ("discover", "processing", "extract_tasks", "ocr", "embed_calls", "index", "compact")
    timings = _table(["stage", "seconds"], [[s.replace("_", " "), st.get(f"seconds_{s}")] for s in stages
                                            if st.get(f"seconds_{s}") is not None])
    skipped = m["models"].get("image", {}).get("skipped")
    return "\n".join([
        *head, "", "## Documents", "", docs,
        "", f"Pages processed: {st.get('pages_processed', 0)} ({st.get('ocr_pages', 0)} OCR'd).",
        "", "## Items by kind", "", kinds, "", "## Failures by stage", "", _by_stage(m["failures"]),
        "", "## Spaces", "", spaces, *(["", f"Image space skipped: {skipped}"] if skipped else []),
        "", "## Timings", "", timings,
    ])


def _by_stage(failures: list[dict]) -> str:
    """Failures per stage; files skipped as unsupported types are a row of their own, not a stage's failures."""
    if not failures:
        return "none"
    by_stage = Counter("skipped (unsupported type)" if is_skipped(f) else f["stage"] for f in failures)
    return _table(["stage", "failures"], [[s, n] for s, n in sorted(by_stage.items())])


def publish_index_artifacts(report: dict, store_uri: str) -> None:
    """The summary, and the failures table of a run that got as far as deciding what to publish."""
    source = report["manifest"]["source"] if report.get("manifest") else report.get("source", "")
    create_markdown_artifact(summary_markdown(report, store_uri), key=store_key(SUMMARY_KEY, store_uri),
                             description=f"index of {printable(source)} into {printable(store_uri)}")
    if report.get("nothing_to_publish"):
        failures = report["failures"]
    elif report["published"]:
        failures = report["manifest"]["failures"]
    else:
        return
    create_table_artifact(failure_rows(failures), key=store_key(FAILURES_KEY, store_uri),
                          description=f"files of {printable(source)} that could not be indexed ({len(failures)})")


def gc_markdown(result: dict, store_uri: str) -> str:
    """The summary of a gc run."""
    verb = "would delete" if result["dry_run"] else "deleted"
    return (f"# Snapshot gc of {_code(store_uri)}\n\nKept {len(result['kept'])} snapshot(s); {verb} "
            f"{len(result['dropped_snapshots'])} snapshot(s) and {result['deleted']} object(s), {result['bytes']} bytes; "
            f"{result['young']} unreferenced unit(s) left within the grace period.\n\n"
            + _table(["snapshot", "kept"], [[s, "yes"] for s in result["kept"]]
                     + [[s, "no"] for s in result["dropped_snapshots"]]))


def publish_gc_artifact(result: dict, store_uri: str) -> None:
    create_markdown_artifact(gc_markdown(result, store_uri), key=store_key(GC_KEY, store_uri),
                             description=f"gc of {store_uri}")
