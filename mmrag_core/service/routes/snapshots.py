"""The published snapshots of the store and which one the service answers from."""
from __future__ import annotations

from fastapi import APIRouter

from mmrag_core.service.routes.deps import AUTH, HolderDep, SettingsDep, StoreDep
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


@router.get("/info", dependencies=AUTH, summary="What is served: store, snapshot, when it was published, its counts "
            "and spaces, and what the search page may offer (image search, source links)")
def info(settings: SettingsDep, store: StoreDep, holder: HolderDep) -> dict:
    """What the search page shows before a query, and whether it offers an image upload (an image query
    needs an image space)."""
    snap = holder.engine.snapshot  # 503 while nothing is served
    m, spaces = snap.manifest, sorted(snap.manifest.spaces)
    return {"store": store.uri, "snapshot": snap.id, "published": m.created_at, "documents": m.counts.documents,
            "pages": m.counts.pages_with_items, "items": m.counts.items, "spaces": spaces,
            "image_search": "image" in spaces, "serve_sources": settings.service_serve_sources,
            "max_k": settings.service_max_k, "max_batch": settings.service_max_batch}
