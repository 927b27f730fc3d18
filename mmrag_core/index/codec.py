"""Choosing, training, tuning and storing the FAISS codec of one vector space.

A codec is a trained, *empty* FAISS index: coarse quantizer, OPQ rotation and PQ codebooks. It is trained
once on a sample and reused to encode every later shard, so shards can be merged by inverted lists.
Below a size threshold the codec is exact (``IDMap2,Flat``); above it, ``OPQ{m/2},IVF{nlist},PQ{m}x4fsr``
(4-bit fast-scan PQ, 3-6x faster than 8-bit PQ at equal recall on this machine, see
``shared/reference/performance.md``) plus a float16 *refine* step: PQ codes alone cap recall@10 at
0.5-0.8 on 512-d vectors; re-scoring the top ``k * k_factor`` candidates exactly lifts it to ~0.96.
The refine vectors (2 bytes x dim per vector) live beside the index as memory-mapped ``.npy`` files and
are NOT part of the per-vector code budget, which covers only what sits in RAM (codes + 8-byte ids).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.index.refine import DEFAULT_K_FACTOR, RefineStore

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
ID_BYTES = 8  # every IVF entry stores its int64 id beside the code
MIN_POINTS_PER_CENTROID = 39  # below this FAISS warns that k-means is under-trained
TRAIN_POINTS_PER_CENTROID = 40  # default coarse training sample: 40 x nlist vectors
MIN_PQ_TRAIN = 10_000  # 8-bit PQ wants >= 39 x 256 points per sub-quantizer
OPQ_TRAIN_POINTS = 25_000  # OPQ cost grows linearly with its sample: 100k x 512-d took 484 s
REFINE_FP16 = "fp16"
_KMEANS_BLAS_THRESHOLD = 20  # FAISS's default (128000) keeps k-means on its slow non-BLAS path


@dataclass
class CodecSpec:
    """What a space's codec is and how to search it; stored in snapshot manifests."""

    factory: str
    metric: str = "ip"
    nprobe: int | None = None
    refine: str | None = None
    k_factor: int = 1
    train_size: int = 0  # recommended training sample; 0 = no training needed
    recall: float | None = None  # recall@k measured by tune_nprobe at (nprobe, k_factor)

    @property
    def exact(self) -> bool:
        return self.factory.replace("IDMap2,", "").strip() == "Flat"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecSpec:
        """Ignores unknown keys so that manifests written by newer code still load."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_nlist(factory: str) -> int | None:
    """The number of inverted lists in a factory string, or None when it has no IVF stage."""
    m = re.search(r"IVF(\d+)", factory)
    return int(m.group(1)) if m else None


def _next_pow2(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(x, 1.0))))


def _prev_pow2(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1.0))))


def choose_nlist(n_vectors: int, train_size: int) -> int:
    """A power of two in [4, 8) x sqrt(N), lowered until k-means gets >= 39 training points per centroid."""
    target = _next_pow2(4 * math.sqrt(n_vectors))
    cap = _prev_pow2(train_size / MIN_POINTS_PER_CENTROID)
    return max(1, min(target, cap, _prev_pow2(n_vectors)))


def choose_pq_m(dim: int, memory_budget_bytes_per_vector: int) -> int:
    """The most 4-bit sub-quantizers (m even, m | dim, >= 2 dims each) whose codes + id fit the budget.

    More sub-quantizers mean less compression loss; 512-d at 100 B/vector gives m=128 (64 B of codes).
    """
    code_budget = memory_budget_bytes_per_vector - ID_BYTES
    for dsub in range(2, dim + 1):
        m = dim // dsub
        if dim % dsub == 0 and m % 2 == 0 and m // 2 <= code_budget:
            return m
    raise ValueError(f"no 4-bit PQ of {dim}-d vectors fits {memory_budget_bytes_per_vector} bytes/vector")


def default_nprobe(nlist: int | None) -> int | None:
    """A starting point (1/64 of the lists) until tune_nprobe measures a better one."""
    return None if nlist is None else max(1, nlist // 64)


def choose_codec(
    n_vectors: int,
    dim: int,
    memory_budget_bytes_per_vector: int = 100,
    exact_threshold: int = 50_000,
    factory: str | None = None,
    *,
    metric: str = "ip",
    train_size: int | None = None,
    refine: str | None = "auto",
) -> CodecSpec:
    """Pick a codec from the corpus size and a RAM budget per vector; an explicit factory wins.

    ``refine="auto"`` turns the fp16 refine step on for every PQ codec (its vectors are on disk, outside
    the budget); pass None to keep codes only. ``train_size`` is the sample the caller can afford to
    train on; the default is 40 x nlist (capped at N), which bounds coarse k-means time.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, not {metric!r}")
    if factory is not None:
        return _spec_for_factory(factory, n_vectors, metric, train_size, refine)
    if n_vectors < exact_threshold:
        return CodecSpec(factory="Flat", metric=metric)
    target_nlist = _next_pow2(4 * math.sqrt(n_vectors))
    sample = min(n_vectors, train_size or max(TRAIN_POINTS_PER_CENTROID * target_nlist, MIN_PQ_TRAIN))
    nlist = choose_nlist(n_vectors, sample)
    m = choose_pq_m(dim, memory_budget_bytes_per_vector)
    use_refine = REFINE_FP16 if refine == "auto" else refine
    return CodecSpec(
        factory=f"OPQ{m // 2},IVF{nlist},PQ{m}x4fsr",
        metric=metric,
        nprobe=default_nprobe(nlist),
        refine=use_refine,
        k_factor=DEFAULT_K_FACTOR if use_refine else 1,
        train_size=sample,
    )


def _spec_for_factory(factory: str, n: int, metric: str, train_size: int | None, refine: str | None) -> CodecSpec:
    nlist = parse_nlist(factory)
    has_pq = "PQ" in factory
    use_refine = (REFINE_FP16 if has_pq else None) if refine == "auto" else refine
    needs_training = nlist is not None or has_pq or "SQ" in factory
    default_sample = max(TRAIN_POINTS_PER_CENTROID * (nlist or 1), MIN_PQ_TRAIN)
    return CodecSpec(
        factory=factory,
        metric=metric,
        nprobe=default_nprobe(nlist),
        refine=use_refine,
        k_factor=DEFAULT_K_FACTOR if use_refine else 1,
        train_size=min(n, train_size or default_sample) if needs_training else 0,
    )


# ---- training ---------------------------------------------------------------------------------------------


@contextmanager
def _kmeans_on_blas() -> Iterator[None]:
    """Let k-means use BLAS: 5-10x faster training here. Restored afterwards because single queries
    are 2.4x slower with a low threshold (reference). Process-global: avoid training while serving."""
    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = _KMEANS_BLAS_THRESHOLD
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF stage inside an index (through OPQ/IDMap wrappers), or None. Valid while ``index`` lives."""
    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else faiss.downcast_index(ivf)


def _seed_and_configure(index: faiss.Index, seed: int, opq_train_points: int) -> None:
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed
        if hasattr(ivf, "pq"):
            ivf.pq.cp.seed = seed + 1
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False  # on by default for 8-bit IVFPQ; 10x the training time, unused
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.max_train_points = opq_train_points  # OPQ subsamples with its own fixed seed


def new_codec(spec: CodecSpec, dim: int) -> faiss.Index:
    """An untrained index for ``spec`` that can hold int64 ids (non-IVF indexes get an IDMap2)."""
    metric = METRICS[spec.metric]
    index = faiss.index_factory(dim, spec.factory, metric)
    if ivf_of(index) is None and not isinstance(index, faiss.IndexIDMap):
        index = faiss.index_factory(dim, f"IDMap2,{spec.factory}", metric)
    return index


def train_codec(
    spec: CodecSpec, sample: np.ndarray, seed: int = 0, opq_train_points: int = OPQ_TRAIN_POINTS
) -> faiss.Index:
    """A trained, empty index for ``spec``: the same seed and sample give byte-identical codecs."""
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"training sample must be a non-empty 2-d array, got {x.shape}")
    index = new_codec(spec, x.shape[1])
    nlist = parse_nlist(spec.factory)
    if nlist is not None and len(x) < nlist:
        raise ValueError(f"{len(x)} training vectors cannot train {nlist} lists")
    _seed_and_configure(index, seed, opq_train_points)
    if not index.is_trained:
        with _kmeans_on_blas():
            index.train(x)
    if spec.nprobe is not None:
        set_nprobe(index, spec.nprobe)
    return index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)


def list_bytes_per_vector(index: faiss.Index) -> int:
    """RAM per stored vector: the code in its inverted list plus its 8-byte id (IVF), or the flat code
    plus its id-map entry. Excludes per-list padding of fast-scan blocks (<= 31 codes per list)."""
    ivf = ivf_of(index)
    if ivf is not None:
        return int(ivf.code_size) + ID_BYTES
    return int(index.sa_code_size()) + ID_BYTES


# ---- storage ----------------------------------------------------------------------------------------------


def serialize_codec(index: faiss.Index) -> bytes:
    """Bytes of a trained, empty codec, to be stored once and cloned for every shard."""
    if index.ntotal != 0:
        raise ValueError(f"a codec must be empty; this index holds {index.ntotal} vectors")
    if not index.is_trained:
        raise ValueError("the codec is not trained")
    return faiss.serialize_index(index).tobytes()


def deserialize_codec(data: bytes) -> faiss.Index:
    """A fresh, independent copy of a stored codec (each call is a clone)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


# ---- tuning -----------------------------------------------------------------------------------------------


def exact_neighbors(base_vectors: np.ndarray, base_ids: np.ndarray, queries: np.ndarray, k: int,
                    metric: str = "ip") -> np.ndarray:
    """Ground-truth ids (brute force) of the ``k`` nearest base vectors per query."""
    xb = np.ascontiguousarray(base_vectors, dtype=np.float32)
    flat = faiss.IndexFlat(xb.shape[1], METRICS[metric])
    flat.add(xb)
    _, pos = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.where(pos >= 0, np.asarray(base_ids, dtype=np.int64)[pos], -1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found in its returned top-k (R@k, not R1@k)."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[:k][f[:k] >= 0], t)) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def _probe_grid(nlist: int, max_nprobe: int) -> list[int]:
    return [p for p in (1 << i for i in range(20)) if p <= min(nlist, max_nprobe)]


class _Choice(NamedTuple):
    nprobe: int
    k_factor: int
    recall: float


def tune_nprobe(
    index: faiss.Index,
    held_out_queries: np.ndarray,
    base_vectors: np.ndarray,
    base_ids: np.ndarray,
    target_recall: float = 0.95,
    k: int = 10,
    *,
    spec: CodecSpec | None = None,
    max_nprobe: int = 1024,
    k_factors: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
) -> tuple[int | None, float]:
    """The cheapest nprobe (and refine k_factor when ``spec.refine``) reaching ``target_recall``@k.

    ``index`` must hold exactly ``base_vectors`` under ``base_ids``; the queries must not be in the base.
    Cost is the bytes a query reads: nprobe/nlist of the codes plus k*k_factor refine vectors. Without a
    combination reaching the target, the one with the best recall is returned. The choice is set on
    ``index`` and written (with the recall) into ``spec`` when given. Exact indexes return (None, recall).
    """
    q = np.ascontiguousarray(held_out_queries, dtype=np.float32)
    truth = exact_neighbors(base_vectors, base_ids, q, k, spec.metric if spec else "ip")
    ivf = ivf_of(index)
    if ivf is None:
        choice = _Choice(0, 1, recall_at_k(index.search(q, k)[1], truth))
    else:
        refine = _tuning_refine_store(base_ids, base_vectors, spec)
        choice = _grid_search(index, ivf, q, truth, k, refine, max_nprobe, k_factors if refine else (1,),
                              target_recall)
        set_nprobe(index, choice.nprobe)
    if spec is not None:
        spec.recall = choice.recall
        if ivf is not None:
            spec.nprobe = choice.nprobe
            spec.k_factor = choice.k_factor if spec.refine else spec.k_factor
    return (choice.nprobe if ivf is not None else None), choice.recall


def _tuning_refine_store(base_ids: np.ndarray, base_vectors: np.ndarray, spec: CodecSpec | None) -> RefineStore | None:
    """An in-RAM fp16 RefineStore over the base."""
    if spec is None or not spec.refine:
        return None
    return RefineStore([(np.asarray(base_ids, dtype=np.int64), np.asarray(base_vectors, dtype=np.float16))],
                       k_factor=1, metric=spec.metric)


def _grid_search(index: faiss.Index, ivf: faiss.IndexIVF, queries: np.ndarray, truth: np.ndarray, k: int,
                 refine: Any, max_nprobe: int, k_factors: tuple[int, ...], target: float) -> _Choice:
    """Scan nprobe upwards; per nprobe one search of k*max(k_factor) candidates serves every k_factor
    (the top k*f candidates are a prefix of the top k*F). Stops once more probes cannot be cheaper."""
    per_probe = index.ntotal / ivf.nlist * (list_bytes_per_vector(index) - ID_BYTES)
    refine_bytes = k * 2 * index.d if refine is not None else 0
    best, best_cost, best_any = None, math.inf, _Choice(1, 1, -1.0)
    for nprobe in _probe_grid(ivf.nlist, max_nprobe):
        if nprobe * per_probe >= best_cost:
            break
        ivf.nprobe = nprobe
        _, cand = index.search(queries, k * max(k_factors))
        for kf in k_factors:
            top = refine.rescore(queries, cand[:, : k * kf], k)[1] if refine is not None else cand[:, :k]
            choice = _Choice(nprobe, kf, recall_at_k(top, truth))
            best_any = max(best_any, choice, key=lambda c: c.recall)
            cost = nprobe * per_probe + kf * refine_bytes
            if choice.recall >= target and cost < best_cost:
                best, best_cost = choice, cost
                break  # larger k_factors at this nprobe only cost more
    return best or best_any
