"""Refine vectors: float16 copies of a shard's vectors, memory-mapped, for exact re-scoring of PQ candidates.

They are stored per shard as two ``.npy`` files beside the index (ids sorted) and read through memory maps,
so exact re-scoring costs page cache, not RAM. FAISS's ``IndexRefineFlat`` would keep float32 copies of
every vector in RAM (2,048 B/vector at 512-d, 25x the codes), and ``IndexRefine`` looks refine vectors up
by label *as a position*, which int64 item ids are not. Imports nothing of the index stage, so the codec
(which tunes against a refine store) and the shards (which write one) can both use it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_K_FACTOR = 8  # candidates re-scored per hit returned


def check_ids(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"need one id per vector: {ids.shape} ids for {n} vectors")
    if n and ids.min() < 0:
        raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
    if len(np.unique(ids)) != n:
        raise ValueError("duplicate ids in one shard")
    return ids



def refine_paths(shard_path: Path | str) -> tuple[Path, Path]:
    """Where a shard's refine vectors and their ids live: ``<shard>.refine.f16.npy``, ``<shard>.refine.ids.npy``."""
    p = Path(shard_path)
    return p.with_name(p.name + ".refine.f16.npy"), p.with_name(p.name + ".refine.ids.npy")


def write_refine(shard_path: Path | str, ids: np.ndarray, vectors: np.ndarray) -> tuple[Path, Path]:
    """Store a shard's vectors as float16, sorted by id (so lookups are binary searches on the map)."""
    ids = check_ids(ids, len(vectors))
    order = np.argsort(ids, kind="stable")
    vec_path, ids_path = refine_paths(shard_path)
    for path, arr in ((vec_path, np.asarray(vectors, dtype=np.float16)[order]), (ids_path, ids[order])):
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return vec_path, ids_path


def _plain(a: np.ndarray) -> np.ndarray:
    """A plain ndarray view of a memmap (same pages): np.memmap indexing costs ~10 us a call in Python."""
    return a.view(np.ndarray) if isinstance(a, np.memmap) else np.asarray(a)


class RefineStore:
    """Float16 vectors keyed by id across shards, for exact re-scoring of PQ candidates.

    Parts are (sorted or not) ``(ids, vectors)`` pairs, normally memory-mapped ``.npy`` files from
    :func:`write_refine`; an id in several parts resolves to the LAST part (the newest shard). Nothing but
    the touched pages is read: RAM use is independent of the corpus size.
    """

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]], k_factor: int = DEFAULT_K_FACTOR,
                 metric: str = "ip"):
        if metric not in ("ip", "l2"):
            raise ValueError(f"unknown metric {metric!r}")
        self.k_factor, self.metric = int(k_factor), metric
        self.parts = [self._sorted(ids, vecs) for ids, vecs in parts]
        dims = {v.shape[1] for _, v in self.parts}
        if len(dims) > 1:
            raise ValueError(f"refine parts disagree on dimension: {dims}")
        self.dim = dims.pop() if dims else 0

    @staticmethod
    def _sorted(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(ids) != len(vectors) or vectors.ndim != 2:
            raise ValueError(f"refine part: {len(ids)} ids for vectors of shape {vectors.shape}")
        ids, vectors = _plain(ids), _plain(vectors)
        if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
            return ids, vectors
        order = np.argsort(ids, kind="stable")
        return np.asarray(ids)[order], np.asarray(vectors)[order]

    @classmethod
    def open(cls, shard_paths: Sequence[Path | str], k_factor: int = DEFAULT_K_FACTOR,
             metric: str = "ip") -> RefineStore:
        """Memory-map the refine files written beside these shards (oldest shard first)."""
        parts = []
        for shard_path in shard_paths:
            vec_path, ids_path = refine_paths(shard_path)
            parts.append((np.load(ids_path, mmap_mode="r"), np.load(vec_path, mmap_mode="r")))
        return cls(parts, k_factor=k_factor, metric=metric)

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self.parts)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 vectors, found mask) for ``ids``; rows of unknown ids are zero.

        Per query at 512-d and 80 candidates this costs ~0.4 ms, mostly numpy's float16 -> float32 cast
        (no F16C path: ~2.5 ns a value) and one binary search per shard part.
        """
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        for part_ids, part_vecs in reversed(self.parts):
            if not len(part_ids):
                continue
            pos = part_ids.searchsorted(ids)
            pos[pos == len(part_ids)] = 0
            idx = np.flatnonzero((part_ids.take(pos) == ids) & ~found)
            if idx.size:
                out[idx] = part_vecs.take(pos.take(idx), axis=0)
                found[idx] = True
        return out, found

    def rescore(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, ids) among each query's candidate ids (-1 = none)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        cand = np.asarray(candidates, dtype=np.int64)
        if cand.shape[1] < k:
            cand = np.pad(cand, ((0, 0), (0, k - cand.shape[1])), constant_values=-1)
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        step = 128
        for s in range(0, len(q), step):
            scores[s:s + step], ids[s:s + step] = self._rescore_block(q[s:s + step], cand[s:s + step], k)
        return scores, ids

    def _rescore_block(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vecs, found = self.vectors(cand)
        vecs = vecs.reshape(cand.shape[0], cand.shape[1], -1)
        dots = np.matmul(vecs, q[:, :, None])[..., 0]
        found = found.reshape(cand.shape) & (cand >= 0)
        if self.metric == "ip":
            key = np.where(found, -dots, np.inf)
            value = dots
        else:
            value = (vecs * vecs).sum(-1) - 2 * dots + (q * q).sum(-1, keepdims=True)
            key = np.where(found, value, np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        top_ids = np.take_along_axis(cand, order, axis=1)
        top_scores = np.take_along_axis(value, order, axis=1)
        missing = ~np.take_along_axis(found, order, axis=1)
        top_ids[missing] = -1
        top_scores[missing] = -np.inf if self.metric == "ip" else np.inf
        return top_scores, top_ids
