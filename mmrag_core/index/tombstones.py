"""Tombstones: ids of removed or changed items, filtered INSIDE the FAISS search (compaction drops them: shards.merge_shards).

Filtering inside the search (an id selector passed as search parameters) means FAISS skips tombstoned
entries while it collects the top k, so k live results come back even when every one of the best hits is
tombstoned; filtering after truncation would return fewer, or none.
"""
from __future__ import annotations

import numpy as np

from mmrag_core.index.codec import ivf_of
from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.index.refine import RefineStore


def as_tombstones(*id_arrays: np.ndarray) -> np.ndarray:
    """The sorted, unique int64 union of tombstone id arrays (the stored form)."""
    arrays = [np.asarray(a, dtype=np.int64).ravel() for a in id_arrays]
    return np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.int64)


class Exclusion:
    """A reusable 'id not in these' selector. Build it once per snapshot: hashing 100k ids takes ms."""

    def __init__(self, ids: np.ndarray):
        self.ids = as_tombstones(ids)
        self._batch = faiss.IDSelectorBatch(self.ids)  # referenced here: FAISS holds raw pointers
        self.selector = faiss.IDSelectorNot(self._batch)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def active(self) -> bool:
        """Whether the selector excludes anything (no selector at all is the faster search)."""
        return len(self.ids) > 0


class Restriction:
    """A query's id filter combined with the tombstones, as ONE FAISS selector: 'id in ``ids``, not tombstoned'
    (``allow``) or 'id in neither ``ids`` nor the tombstones'. Either way top-k is taken among the ids the
    filter lets through, inside the search. One batch selector (hashed once) rather than an And of two."""

    def __init__(self, ids: np.ndarray, allow: bool, tombstones: np.ndarray) -> None:
        ids = as_tombstones(ids)
        self.allow = allow
        self.ids = np.setdiff1d(ids, tombstones, assume_unique=True) if allow else as_tombstones(ids, tombstones)
        self._batch = faiss.IDSelectorBatch(self.ids)  # referenced here: FAISS holds raw pointers
        self.selector = self._batch if allow else faiss.IDSelectorNot(self._batch)

    active = True  # even an empty allow-list restricts (to nothing)


def search_params(index: faiss.Index, nprobe: int | None = None,
                  exclusion: Exclusion | Restriction | None = None) -> faiss.SearchParameters | None:
    """Per-call search parameters for ``index``: nprobe and the exclusion (or restriction) selector.

    SearchParametersIVF defaults to nprobe=1, NOT the index's nprobe, so it is always set explicitly;
    OPQ-wrapped indexes need the IVF parameters inside SearchParametersPreTransform.
    """
    sel = exclusion.selector if exclusion is not None and exclusion.active else None
    ivf = ivf_of(index)
    if ivf is None:
        return faiss.SearchParameters(sel=sel) if sel is not None else None
    params = faiss.SearchParametersIVF(nprobe=int(nprobe or ivf.nprobe))
    if sel is not None:
        params.sel = sel
    if isinstance(index, faiss.IndexPreTransform):
        outer = faiss.SearchParametersPreTransform(index_params=params)
        outer.referenced_objects = [params]  # FAISS keeps a raw pointer; keep the Python object alive
        return outer
    return params


def search_index(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    nprobe: int | None = None,
    exclude_ids: np.ndarray | Exclusion | Restriction | None = None,
    refine: RefineStore | None = None,
    k_factor: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query, tombstones excluded inside the search; -1 ids pad short rows.

    With ``refine``, the index returns ``k * k_factor`` candidates (``refine.k_factor`` by default)
    and they are re-ranked by exact scores on the stored float16 vectors.
    """
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    exclusion = exclude_ids if isinstance(exclude_ids, (Exclusion, Restriction)) or exclude_ids is None \
        else Exclusion(exclude_ids)
    params = search_params(index, nprobe, exclusion)
    n_candidates = k * (k_factor or refine.k_factor) if refine is not None else k
    scores, ids = index.search(q, n_candidates, params=params)
    if refine is not None:
        return refine.rescore(q, ids, k)
    return scores, ids
