"""Plain-FAISS baselines for benchmarks/index_scale.py: the fastest setting FAISS itself offers on the same data.

Each family is a FAISS index over the same base vectors with positions as labels (what FAISS's own refine
step needs), searched with no mmrag code at all: no search parameters object, no id selector, no numpy
re-scoring, no id mapping. A grid over the family's search parameters finds, per nprobe (or efSearch), the
smallest refine k_factor reaching the target recall@10 on the tuning queries; the feasible points are then
timed as a batch and the fastest one is the family's best. Families:

- ``same-codec+SQfp16``: mmrag's trained codec (a copy of the merged index, ids rewritten to positions)
  inside ``IndexRefine`` with a float16 ``IndexScalarQuantizer`` in RAM: FAISS's own version of mmrag's path.
- ``same-codec+Flat``: the same with float32 refine vectors (``IndexRefineFlat``'s layout).
- ``OPQ,IVF,Flat``: the codec's rotation and coarse quantizer over uncompressed lists (no training).
- ``OPQ,IVF,PQ{m/2}x4fsr+SQfp16``: half the code bytes of mmrag's PQ, same rotation and quantizer
  (PQ training only), float16 refine.
- ``HNSW32,Flat``: graph search on float32 vectors (build cost grows fast; small N only).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from mmrag_core.index.codec import deserialize_codec, ivf_of, recall_at_k
from mmrag_core.index.faiss_runtime import faiss

K_FACTORS = (1, 2, 4, 8, 16, 32)
FAMILIES = ("same-codec+SQfp16", "same-codec+Flat", "OPQ,IVF,Flat", "OPQ,IVF,PQ-half+SQfp16", "HNSW32,Flat")


@dataclass
class Setting:
    family: str
    factory: str
    params: dict
    recall: float
    qps: float = 0.0


@dataclass
class Family:
    """One raw FAISS index and how to apply a grid point to it."""

    name: str
    factory: str
    index: faiss.Index
    grid: list[int]  # nprobe or efSearch values, cheapest first
    apply: Callable[[int, int], None]  # (search_param, k_factor)
    refined: bool
    keep: list = field(default_factory=list)  # objects FAISS holds raw pointers to


def _timed_qps(index: faiss.Index, queries: np.ndarray, k: int) -> float:
    t0 = time.perf_counter()
    index.search(queries, k)
    return len(queries) / (time.perf_counter() - t0)


def positions_copy(merged: faiss.Index, base_ids: np.ndarray) -> faiss.Index:
    """A copy of ``merged`` whose inverted lists store each vector's position in ``base_ids`` instead of its id."""
    copy = faiss.deserialize_index(faiss.serialize_index(merged))
    ivf = ivf_of(copy)
    order = np.argsort(base_ids)
    sorted_ids = base_ids[order]
    il = faiss.downcast_InvertedLists(ivf.invlists)
    for lst in range(ivf.nlist):
        n = il.list_size(lst)
        if n:
            stored = faiss.rev_swig_ptr(il.get_ids(lst), n)  # a writable view of the list's ids
            stored[:] = order[np.searchsorted(sorted_ids, stored)]
    return copy


def _ivf_setter(index: faiss.Index, refine: faiss.IndexRefine | None) -> Callable[[int, int], None]:
    ivf = ivf_of(index)

    def apply(nprobe: int, k_factor: int) -> None:
        ivf.nprobe = int(nprobe)
        if refine is not None:
            refine.k_factor = float(k_factor)
    return apply


def _probe_grid(nlist: int) -> list[int]:
    return [p for p in (1 << i for i in range(12)) if p <= nlist]


def build_families(names: tuple[str, ...], merged: faiss.Index, codec_bytes: bytes, base_ids: np.ndarray,
                   base_chunks: Callable[[], Iterator[np.ndarray]], pq_sample: np.ndarray, seed: int,
                   log: Callable[[str], None]) -> tuple[list[Family], dict]:
    """The requested families over the same base (read chunk by chunk), with their build times."""
    d, ivf = merged.d, ivf_of(merged)
    nlist, metric = ivf.nlist, merged.metric_type
    built, build_s = [], {}
    sq = flat = None

    def refine_vectors(kind: str) -> faiss.Index:
        index = (faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, metric) if kind == "fp16"
                 else faiss.IndexFlat(d, metric))
        for chunk in base_chunks():
            index.add(chunk)
        return index

    codec = deserialize_codec(codec_bytes)  # its rotation and quantizer, shared read-only below
    opq = codec.chain.at(0) if isinstance(codec, faiss.IndexPreTransform) else None
    prefix = "OPQ," if opq is not None else ""
    for name in names:
        t0 = time.perf_counter()
        if name in ("same-codec+SQfp16", "same-codec+Flat"):
            if name.endswith("SQfp16"):
                sq = sq or refine_vectors("fp16")
                ref = sq
            else:
                flat = flat or refine_vectors("flat")
                ref = flat
            base = positions_copy(merged, base_ids)
            index = faiss.IndexRefine(base, ref)
            fam = Family(name, f"{prefix}IVF{nlist},PQ..x4fsr,Refine({name.split('+')[1]})", index,
                         _probe_grid(nlist), _ivf_setter(base, index), True, [base, ref])
        elif name == "OPQ,IVF,Flat":
            quantizer = faiss.clone_index(ivf.quantizer)
            lists = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
            index = faiss.IndexPreTransform(opq, lists) if opq is not None else lists
            for chunk in base_chunks():
                index.add(chunk)
            fam = Family(name, f"{prefix}IVF{nlist},Flat", index, _probe_grid(nlist), _ivf_setter(index, None),
                         False, [quantizer, lists, codec])
        elif name == "OPQ,IVF,PQ-half+SQfp16":
            m = ivf.pq.M // 2 if hasattr(ivf, "pq") else 64
            quantizer = faiss.clone_index(ivf.quantizer)
            lists = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, 4, metric)
            lists.by_residual = True
            lists.pq.cp.seed = seed + 1
            rotated = opq.apply(np.ascontiguousarray(pq_sample)) if opq is not None else pq_sample
            lists.train(rotated)  # the quantizer is trained: only the PQ codebooks are
            base = faiss.IndexPreTransform(opq, lists) if opq is not None else lists
            for chunk in base_chunks():
                base.add(chunk)
            sq = sq or refine_vectors("fp16")
            index = faiss.IndexRefine(base, sq)
            fam = Family(name, f"{prefix}IVF{nlist},PQ{m}x4fsr,Refine(SQfp16)", index, _probe_grid(nlist),
                         _ivf_setter(base, index), True, [quantizer, lists, base, sq, codec])
        elif name == "HNSW32,Flat":
            index = faiss.IndexHNSWFlat(d, 32, metric)
            for chunk in base_chunks():
                index.add(chunk)

            def apply(ef: int, _kf: int, hnsw=index.hnsw) -> None:
                hnsw.efSearch = int(ef)
            fam = Family(name, "HNSW32,Flat", index, [16, 32, 64, 128, 256, 512, 1024], apply, False)
        else:
            raise ValueError(f"unknown raw family {name!r}; known: {FAMILIES}")
        build_s[name] = time.perf_counter() - t0
        log(f"raw {name}: built in {build_s[name]:.1f} s")
        built.append(fam)
    return built, build_s


def search_ids(fam: Family, queries: np.ndarray, k: int, base_ids: np.ndarray) -> np.ndarray:
    """Top-k item ids (positions mapped back, outside any timing)."""
    pos = fam.index.search(queries, k)[1]
    return np.where(pos >= 0, base_ids[np.maximum(pos, 0)], -1)


def feasible(fam: Family, queries: np.ndarray, truth: np.ndarray, k: int, base_ids: np.ndarray,
             target: float, max_points: int = 3) -> list[Setting]:
    """Per search parameter, the smallest k_factor reaching ``target``; stops after ``max_points`` such points."""
    points: list[Setting] = []
    best_seen = Setting(fam.name, fam.factory, {}, -1.0)
    for p in fam.grid:
        for kf in (K_FACTORS if fam.refined else (1,)):
            fam.apply(p, kf)
            r = recall_at_k(search_ids(fam, queries, k, base_ids), truth)
            params = {"search": p, "k_factor": kf}
            if r > best_seen.recall:
                best_seen = Setting(fam.name, fam.factory, params, r)
            if r >= target:
                points.append(Setting(fam.name, fam.factory, params, r))
                break
        if len(points) >= max_points:
            break
    return points or [best_seen]


def fastest(fam: Family, points: list[Setting], queries: np.ndarray, k: int, rounds: int = 2) -> Setting:
    """The feasible point with the highest batch QPS (best of ``rounds``)."""
    for s in points:
        fam.apply(s.params["search"], s.params["k_factor"])
        s.qps = max(_timed_qps(fam.index, queries, k) for _ in range(rounds))
    return max(points, key=lambda s: (s.recall >= 0, s.qps))
