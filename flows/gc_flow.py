"""Snapshot garbage collection as a flow, for the scheduled ``gc-snapshots`` deployment: the same retention
rule and store lock as ``mmrag snapshots gc``."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import GcOverrides, run_settings
from mmrag_core.snapshot.retention import collect_garbage
from mmrag_core.storage.store import open_store
from tasks.artifacts import publish_gc_artifact


@flow(name="gc", log_prints=True)
def gc_flow(store: str | None = None, keep_last: int | None = None, keep_days: float | None = None,
            grace_seconds: float | None = None, dry_run: bool = False,
            overrides: GcOverrides | None = None) -> dict:
    """Delete snapshots outside the retention rule and files no kept snapshot references.

    Args:
        store: Store to clean, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        keep_last: Keep the newest N snapshots (default: settings.keep_last); LATEST is always kept.
        keep_days: Keep snapshots younger than this many days (default: settings.keep_days).
        grace_seconds: Leave unreferenced files younger than this (default: settings.gc_grace_seconds).
        dry_run: Say what would be deleted, delete nothing.
        overrides: Settings for this run only; an empty field keeps the worker's setting.
    """
    settings = run_settings(store, overrides)
    st = open_store(settings)
    plan = collect_garbage(st, settings, "mmrag gc flow", keep_last, keep_days, grace_seconds, dry_run)
    deleted = len(plan.delete)
    result = {"kept": plan.kept, "dropped_snapshots": plan.dropped_snapshots, "deleted": deleted,
              "bytes": plan.bytes, "young": len(plan.young), "dry_run": dry_run}
    get_run_logger().info("gc of %s: kept %d snapshot(s), %s %d snapshot(s) and %d object(s), %d bytes", st.uri,
                          len(plan.kept), "would delete" if dry_run else "deleted", len(plan.dropped_snapshots),
                          deleted, plan.bytes)
    publish_gc_artifact(result, st.uri)
    return result
