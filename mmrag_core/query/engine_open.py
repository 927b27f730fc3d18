"""The query engine over a store's LATEST (or a pinned) snapshot, configured by the settings: one place for
what ``mmrag query``, ``ask`` and ``eval`` and their Prefect tasks all open."""
from __future__ import annotations

from mmrag_core.config import Settings
from mmrag_core.query.engine import QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import open_store


def open_engine(settings: Settings, snapshot_id: str | None = None) -> QueryEngine:
    """Open (and verify) the snapshot of ``settings.store`` and wrap it in a query engine."""
    snapshot = open_snapshot(open_store(settings), snapshot_id)
    return QueryEngine.from_settings(snapshot, settings)
