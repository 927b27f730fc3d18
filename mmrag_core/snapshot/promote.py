"""Moving LATEST to a candidate snapshot that was published without moving it (the fine-tuning gate).

A candidate is compared with the snapshot it was built against; it may replace LATEST only while LATEST is still
that snapshot, or a run that published in between would be silently undone. The check and the move happen
under the store's lock, the one every writer takes.
"""
from __future__ import annotations

from mmrag_core.snapshot.open import SnapshotError, load_manifest, verify
from mmrag_core.storage.lock import store_lock
from mmrag_core.storage.store import Store


class LatestMoved(SnapshotError):
    """LATEST changed since the candidate was built: promoting it would undo another run's snapshot."""


def promote_snapshot(store: Store, candidate: str, expected_latest: str | None, ttl: float = 300.0,
                     wait: float = 0.0) -> None:
    """Point LATEST at ``candidate`` (verified first) if LATEST is still ``expected_latest``; else LatestMoved."""
    with store_lock(store, f"mmrag promote {candidate}", ttl=ttl, wait=wait):
        latest = store.latest_id()
        if latest != expected_latest:
            raise LatestMoved(f"LATEST of store {store.uri} is {latest}, not {expected_latest} as when candidate "
                              f"{candidate} was built: not promoted (evaluate it against the new LATEST)")
        verify(store, load_manifest(store, candidate), cached=True)
        store.set_latest(candidate)
