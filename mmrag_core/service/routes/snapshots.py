"""The published snapshots of the store and which one the service answers from."""
from __future__ import annotations

from fastapi import APIRouter

from mmrag_core.service.routes.deps import AUTH, HolderDep, StoreDep
from mmrag_core.snapshot.open import load_manifest

router = APIRouter()


@router.get("/snapshots", dependencies=AUTH, summary="Published snapshots, oldest first, and which one is served")
def snapshots(store: StoreDep, holder: HolderDep) -> dict:
    latest, served = store.latest_id(), holder.snapshot_id
    rows = []
    for sid in store.list_snapshots():
        m = load_manifest(store, sid)
        rows.append({"id": sid, "parent": m.parent, "created_at": m.created_at, "counts": m.counts.to_json(),
                     "spaces": sorted(m.spaces), "latest": sid == latest, "served": sid == served})
    return {"served": served, "latest": latest, "snapshots": rows}
