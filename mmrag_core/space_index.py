"""Search one vector space of a snapshot: its shards, the tombstones filtered inside FAISS, refine re-scoring.

Every shard was encoded with the same codec, so the same nprobe probes the same inverted lists in each;
the best candidates over all shards are those a single merged index would return.
"""
from __future__ import annotations

import numpy as np

from mmrag_core.codec import CodecSpec
from mmrag_core.stored_index import OpenShard, refine_store
from mmrag_core.tombstones import Exclusion, search_index


class SpaceIndex:
    """The searchable form of a space: shards (memory-mapped where FAISS can), exclusion, refine store."""

    def __init__(self, shards: list[OpenShard], spec: CodecSpec, tombstones: np.ndarray, live: int) -> None:
        self.shards = shards
        self.spec = spec
        self.exclusion = Exclusion(tombstones)
        self.refine = refine_store(shards, spec.k_factor, spec.metric) if spec.refine else None
        self.live = live
        self.d = shards[0].index.d if shards else 0

    @property
    def ntotal(self) -> int:
        """Live (searchable) vectors."""
        return self.live

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; -1 ids pad rows with fewer live vectors."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        n_candidates = k * (self.spec.k_factor if self.refine is not None else 1)
        parts = [search_index(s.index, q, n_candidates, self.spec.nprobe, self.exclusion) for s in self.shards]
        if not parts:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        if len(parts) > 1:
            key = np.where(ids >= 0, -scores if self.spec.metric == "ip" else scores, np.inf)
            order = np.argsort(key, axis=1, kind="stable")[:, :n_candidates]
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        if self.refine is not None:
            return self.refine.rescore(q, ids, k)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores[:, :k], ids[:, :k]
