"""What an indexing run has to do, decided from the listing and LATEST alone (no model, no Ray, no Prefect):
which documents are new, whether everything must be rebuilt, or whether nothing changed at all."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from mmrag_core.ingest.catalog import CatalogDiff, diff_catalog
from mmrag_core.config import Settings
from mmrag_core.ingest.record_keys import config_key
from mmrag_core.index.lexical import compatible
from mmrag_core.snapshot.open import latest_manifest, read_table
from mmrag_core.ingest.sources import Discovery, DocRef, discover
from mmrag_core.storage.manifest import Manifest
from mmrag_core.storage.store import Store, open_store, storage_options_for


@dataclass
class PendingWork:
    """The listing compared with LATEST."""

    found: Discovery
    latest: Manifest | None
    changes: CatalogDiff
    rebuild_reason: str | None  # why every document must be encoded again with new codecs, or None
    candidates: list[DocRef]  # documents whose bytes LATEST does not hold (all of them on a rebuild)

    @cached_property
    def parent(self) -> dict | None:
        """LATEST's manifest as its JSON document, for the flow and its run report (JSON)."""
        return self.latest.to_json() if self.latest is not None else None

    @property
    def up_to_date(self) -> bool:
        """Nothing added, changed or removed, the same files refused, no rebuild due, and LATEST has a lexical
        index this code reads (a store indexed before it had one gets one on the next run)."""
        if self.rebuild_reason or self.candidates or self.latest is None or not compatible(self.latest.lexical):
            return False
        c = self.changes
        if c.added or c.changed or c.removed:
            return False
        before = {(f["source_uri"], f["reason"]) for f in self.latest.failures if f["stage"] == "discover"}
        return before == {(f.source_uri, f.reason) for f in self.found.failures}


def rebuild_reason(parent: Manifest | None, settings: Settings, retrain: bool) -> str | None:
    """Why a run must train new codecs and encode every document again, or None."""
    if retrain:
        return "retrain requested"
    if parent is None:
        return "first snapshot of this store"
    if parent.config_key != config_key(settings):
        return "model or extraction settings changed since the last snapshot"
    return None


def pending_work(found: Discovery, store: Store, settings: Settings, retrain: bool = False) -> PendingWork:
    """Compare a listing with the store's LATEST snapshot."""
    parent = latest_manifest(store)
    catalog = read_table(store, parent, "catalog.parquet") if parent else None
    reason = rebuild_reason(parent, settings, retrain)
    known = set() if reason or catalog is None else set(catalog.column("sha256").to_pylist())
    return PendingWork(found, parent, diff_catalog(catalog, found.docs), reason,
                       [d for d in found.docs if d.sha256 not in known])


def list_source(source: str, settings: Settings) -> Discovery:
    """List and hash ``source`` with the settings' filters and limits."""
    return discover(source, settings.include, settings.max_file_bytes,
                    storage_options_for(source, settings.s3_endpoint_url))


def check(source: str, settings: Settings, retrain: bool = False) -> PendingWork:
    """List ``source`` and compare it with LATEST: cheap enough to run before starting any machinery."""
    return pending_work(list_source(source, settings), open_store(settings), settings, retrain)
