"""``python -m tests.crash_job STORE STEP``: publish step STEP of a small synthetic corpus with an IVF-PQ
codec, in a process of its own that the crash tests may SIGKILL (``MMRAG_CRASH_AT``) and then run again.

Step 1 indexes documents a, b, c; step 2 removes b, changes c and adds d (tombstones and a second shard).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.store import Store
from tests.synthetic_docs import make_doc, publish_docs, settings_for

STEPS = {
    1: [("a", 0), ("b", 0), ("c", 0)],
    2: [("a", 0), ("c", 1), ("d", 0)],
}
# Few enough vectors to run in seconds, enough for a trained IVF-PQ codec with a tuned nprobe.
IVF_PQ = {"exact_threshold": 200, "tune_queries": 40, "compact_tombstone_fraction": 1.0}


def run(store_path: str, step: int) -> dict:
    store = Store(store_path)
    docs = [make_doc(name, n_chunks=120, n_images=2, version=version) for name, version in STEPS[step]]
    return publish_docs(store, docs, settings_for(store, **IVF_PQ))


def visible_content(store: Store) -> dict:
    """What a reader of LATEST sees, minus what may differ between two runs (snapshot ids, times): items,
    search results for fixed random queries, counts, tombstones, failures, shard sizes."""
    snap = open_snapshot(store)
    rng = np.random.default_rng(7)
    results = {}
    for space, index in snap.indexes.items():
        queries = rng.standard_normal((5, index.d)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        scores, ids = index.search(queries, 20)
        results[space] = (ids.tolist(), np.round(np.clip(scores, -1e6, 1e6), 5).tolist())  # -FLT_MAX pads
    m = snap.manifest.to_json()
    return {"items": snap.items.sort_by("id").to_pylist(), "results": results, "counts": m["counts"],
            "next_id": m["next_id"], "tombstones": m["tombstones"],
            "failures": sorted(json.dumps(f, sort_keys=True) for f in m["failures"]),
            "shards": {s: [sh["count"] for sh in meta["shards"]] for s, meta in m["spaces"].items()}}


if __name__ == "__main__":
    manifest = run(sys.argv[1], int(sys.argv[2]))
    print(json.dumps({"id": manifest["id"], "store": str(Path(sys.argv[1]))}))
