"""Search one vector space of a snapshot: its shards, the tombstones filtered inside FAISS, refine re-scoring.

Every shard was encoded with the same codec, so the same nprobe probes the same inverted lists in each;
the best candidates over all shards are those a single merged index would return.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from mmrag_core.index.codec import CodecSpec, ivf_of
from mmrag_core.index.shard_files import OpenShard, refine_store
from mmrag_core.index.tombstones import Exclusion, Restriction, search_index


@dataclass(eq=False)  # identity-hashed: a space caches the FAISS selector it builds for one filter
class IdFilter:
    """The ids a search may return: only ``ids`` (``allow``) or every id but ``ids``; ``fraction`` is the
    share of the snapshot's items it lets through, which scales nprobe so that an IVF search of a small
    allowed set still probes enough lists to find k of them."""

    ids: np.ndarray
    allow: bool
    fraction: float


class SpaceIndex:
    """The searchable form of a space: shards (memory-mapped where FAISS can), exclusion, refine store."""

    def __init__(self, shards: list[OpenShard], spec: CodecSpec, tombstones: np.ndarray, live: int) -> None:
        self.shards = shards
        self.spec = spec
        self.exclusion = Exclusion(tombstones)
        self.refine = refine_store(shards, spec.k_factor, spec.metric) if spec.refine else None
        self.live = live
        self.d = shards[0].index.d if shards else 0
        self._restrictions: weakref.WeakKeyDictionary[IdFilter, Restriction] = weakref.WeakKeyDictionary()

    @property
    def ntotal(self) -> int:
        """Live (searchable) vectors."""
        return self.live

    def search(self, queries: np.ndarray, k: int, id_filter: IdFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; -1 ids pad rows with fewer live vectors.

        With ``id_filter``, top-k is taken among the ids it lets through (inside the FAISS search, with
        the tombstones), not filtered after truncation."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        n_candidates = k * (self.spec.k_factor if self.refine is not None else 1)
        selector = self.exclusion if id_filter is None else self._restriction(id_filter)
        nprobe = self.spec.nprobe if id_filter is None else self._nprobe_for(id_filter.fraction)
        parts = [search_index(s.index, q, n_candidates, nprobe, selector) for s in self.shards]
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

    def _restriction(self, id_filter: IdFilter) -> Restriction:
        restriction = self._restrictions.get(id_filter)
        if restriction is None:
            restriction = Restriction(id_filter.ids, id_filter.allow, self.exclusion.ids)
            self._restrictions[id_filter] = restriction
        return restriction

    def _nprobe_for(self, fraction: float) -> int | None:
        """The tuned nprobe divided by the share of items a filter lets through (all lists at most): the
        allowed ids found per probed list shrink with that share."""
        ivf = ivf_of(self.shards[0].index) if self.shards else None
        if ivf is None:
            return self.spec.nprobe
        base = int(self.spec.nprobe or ivf.nprobe)
        return min(int(ivf.nlist), max(base, math.ceil(base / max(fraction, 1e-9))))
