"""Snapshot retention and garbage collection: delete only what no retained snapshot references.

Kept: LATEST, the newest ``keep_last`` snapshots, and every snapshot younger than ``keep_days``. A file is
deleted only when no kept manifest lists it (codec and shard files are shared between snapshots) and,
for files outside a published snapshot, only when it is older than ``grace_seconds``: an indexing run
that is about to publish may have just written it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from mmrag_core.config import Settings
from mmrag_core.storage.lock import store_lock
from mmrag_core.snapshot.open import load_manifest, read_table
from mmrag_core.storage.store import (
    CODECS, DOCS, LEXICAL_SHARDS, MANIFEST, SHARDS, SNAPSHOTS, Store, doc_key, is_temp_key,
)


@dataclass
class GcPlan:
    """What gc keeps and deletes (keys are relative to the store root)."""

    kept: list[str] = field(default_factory=list)
    dropped_snapshots: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    young: list[str] = field(default_factory=list)  # unreferenced but within the grace period
    bytes: int = 0
    temporary: list[str] = field(default_factory=list)  # orphaned temporary files among ``delete``


def retained(store: Store, keep_last: int, keep_days: float, now: float | None = None) -> list[str]:
    """Snapshot ids kept by the rule, oldest first."""
    now = now or time.time()
    ids = store.list_snapshots()
    keep = set(ids[-keep_last:]) if keep_last > 0 else set()
    latest = store.latest_id()
    if latest:
        keep.add(latest)
    for sid in ids:
        created = datetime.fromisoformat(load_manifest(store, sid).created_at).timestamp()
        if now - created < keep_days * 86400:
            keep.add(sid)
    return [s for s in ids if s in keep]


def plan_gc(store: Store, keep_last: int, keep_days: float, grace_seconds: float,
            now: float | None = None) -> GcPlan:
    """Decide what to delete; nothing is touched."""
    now = now or time.time()
    plan = GcPlan(kept=retained(store, keep_last, keep_days, now))
    plan.dropped_snapshots = [s for s in store.list_snapshots() if s not in plan.kept]
    referenced: set[str] = set()
    for sid in plan.kept:
        manifest = load_manifest(store, sid)
        referenced.update(manifest.files)
        referenced.add(f"{SNAPSHOTS}/{sid}/{MANIFEST}")
        referenced.update(doc_key(s) for s in read_table(store, manifest, "catalog.parquet").column("sha256").to_pylist())
    dropped = set(plan.dropped_snapshots)
    _plan_temporary(store, plan, grace_seconds, now)
    for unit, keys in _units(store).items():
        if any(k in referenced for k in keys):
            continue
        published_elsewhere = unit.startswith(SNAPSHOTS + "/") and unit.split("/")[1] in dropped
        if not published_elsewhere and now - max(store.modified(k) for k in keys) < grace_seconds:
            plan.young.append(unit)
            continue
        plan.delete.extend(keys)
        plan.bytes += sum(store.size(k) for k in keys)
    return plan


def _plan_temporary(store: Store, plan: GcPlan, grace_seconds: float, now: float) -> None:
    """Temporary files a writer left when it died or ran out of space (anywhere in the store, also inside kept
    units, which no manifest lists): deleted once older than the grace period, as a live writer's would not be."""
    for key in store.find(""):
        if not is_temp_key(key):
            continue
        try:
            if now - store.modified(key) < grace_seconds:
                continue
            size = store.size(key)
        except FileNotFoundError:
            continue  # renamed into place (or removed) by a live writer meanwhile
        plan.temporary.append(key)
        plan.delete.append(key)
        plan.bytes += size


def _units(store: Store) -> dict[str, list[str]]:
    """Objects grouped by what is written and deleted together: a document record, a codec or shard
    folder, a lexical shard folder, a snapshot folder (temporary files apart: see ``_plan_temporary``)."""
    units: dict[str, list[str]] = {}
    for key in store.find(DOCS):
        if not is_temp_key(key):
            units.setdefault(key, []).append(key)
    for top, depth in ((CODECS, 3), (SHARDS, 3), (LEXICAL_SHARDS, 2), (SNAPSHOTS, 2)):
        for key in store.find(top):
            if is_temp_key(key):
                continue
            parts = key.split("/")
            unit = "/".join(parts[:depth]) if len(parts) > depth else key
            units.setdefault(unit, []).append(key)
    return units


def run_gc(store: Store, plan: GcPlan) -> int:
    """Delete what ``plan`` lists (snapshot manifests first, so a half-finished gc never leaves a
    listed snapshot with missing files); returns the number of objects deleted."""
    ordered = sorted(plan.delete, key=lambda k: (not k.endswith("/" + MANIFEST), k))
    for key in ordered:
        store.delete(key)
    return len(ordered)


def collect_garbage(store: Store, settings: Settings, who: str, keep_last: int | None = None,
                    keep_days: float | None = None, grace_seconds: float | None = None,
                    dry_run: bool = False) -> GcPlan:
    """Plan and (unless ``dry_run``) run gc under the store lock; unset arguments come from ``settings``."""
    keep_last = settings.keep_last if keep_last is None else keep_last
    keep_days = settings.keep_days if keep_days is None else keep_days
    grace = settings.gc_grace_seconds if grace_seconds is None else grace_seconds
    with store_lock(store, who, ttl=settings.lock_ttl_seconds, wait=settings.lock_wait_seconds):
        plan = plan_gc(store, keep_last, keep_days, grace)
        if not dry_run:
            run_gc(store, plan)
    return plan
