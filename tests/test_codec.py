"""Codec choice, training, tuning and storage (mmrag_core.index.codec). Small seeded 64-d data: a few seconds."""
from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from mmrag_core.index import codec
from mmrag_core.index.codec import CodecSpec, choose_codec, train_codec
from mmrag_core.index.refine import RefineStore
from mmrag_core.index.shards import encode_shard
from mmrag_core.index.tombstones import search_index
from tests.vectors import DIM, clustered, one_thread  # noqa: F401 - one_thread is an autouse fixture



@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x = clustered(12_600, seed=1)
    ids = np.random.default_rng(2).choice(10**12, size=12_000, replace=False).astype(np.int64)
    return {"base": x[:12_000], "ids": ids, "tune_q": x[12_000:12_300], "eval_q": x[12_300:]}


# ---- choice ------------------------------------------------------------------------------------------------


def test_exact_below_threshold():
    spec = choose_codec(49_999, 512)
    assert spec.factory == "Flat" and spec.exact
    assert spec.nprobe is None and spec.refine is None and spec.train_size == 0


@pytest.mark.parametrize("n,dim,budget", [
    (50_000, 512, 100), (200_000, 512, 100), (1_000_000, 512, 100), (10_000_000, 384, 100),
    (300_000, 768, 100), (100_000, 64, 100), (1_000_000, 512, 40), (2_000_000, 1024, 200),
])
def test_codec_choice_table(n: int, dim: int, budget: int):
    spec = choose_codec(n, dim, memory_budget_bytes_per_vector=budget)
    nlist = codec.parse_nlist(spec.factory)
    assert nlist is not None and nlist & (nlist - 1) == 0, spec.factory
    assert 4 * math.sqrt(n) <= nlist <= 16 * math.sqrt(n)
    assert spec.train_size <= n and spec.train_size / nlist >= codec.MIN_POINTS_PER_CENTROID
    index = codec.new_codec(spec, dim)
    assert codec.list_bytes_per_vector(index) <= budget
    assert index.sa_code_size() <= budget  # sa code = list code + coarse list number
    assert spec.refine == "fp16" and spec.k_factor > 1 and 1 <= spec.nprobe <= nlist
    m = int(spec.factory.split("PQ")[-1].split("x")[0])
    assert dim % m == 0 and m % 2 == 0


def test_reference_codec_for_512d_at_1m():
    """performance.md: OPQ64 + IVF4096 + PQ128x4fsr is the best codec for 512-d at <= 100 B/vector."""
    assert choose_codec(1_000_000, 512).factory == "OPQ64,IVF4096,PQ128x4fsr"


def test_nlist_clamped_by_training_sample():
    spec = choose_codec(1_000_000, 512, train_size=20_000)
    assert codec.parse_nlist(spec.factory) == 512  # 20,000 / 39 = 512.8 points per centroid -> 512, not 4096
    assert spec.train_size == 20_000


def test_budget_too_small_raises():
    with pytest.raises(ValueError):
        choose_codec(1_000_000, 512, memory_budget_bytes_per_vector=8)


def test_explicit_factory_overrides_everything():
    spec = choose_codec(10, 64, factory="IVF1024,PQ32")
    assert spec.factory == "IVF1024,PQ32" and spec.nprobe == 16 and spec.refine == "fp16"
    assert choose_codec(10, 64, factory="IVF1024,PQ32", refine=None).refine is None
    flat = choose_codec(10_000_000, 512, factory="Flat")
    assert flat.exact and flat.refine is None and flat.train_size == 0
    assert choose_codec(10**6, 64, factory="IVF256,Flat").refine is None


def test_spec_dict_round_trip():
    spec = choose_codec(1_000_000, 512)
    spec.recall = 0.96
    assert CodecSpec.from_dict(spec.to_dict()) == spec
    assert CodecSpec.from_dict({**spec.to_dict(), "added_later": 1}) == spec


# ---- training and storage ----------------------------------------------------------------------------------


def test_flat_codec_holds_ids(data):
    index = train_codec(choose_codec(100, DIM), data["base"][:10])
    assert isinstance(index, faiss.IndexIDMap2) and index.is_trained and index.ntotal == 0


@pytest.mark.parametrize("factory", ["IVF32,PQ16x4", "OPQ8,IVF32,PQ16x4fsr"])
def test_training_is_deterministic(data, factory):
    spec = choose_codec(len(data["base"]), DIM, factory=factory)
    sample = data["base"][:2_000]
    a = codec.serialize_codec(train_codec(spec, sample, seed=3, opq_train_points=2_000))
    b = codec.serialize_codec(train_codec(spec, sample, seed=3, opq_train_points=2_000))
    c = codec.serialize_codec(train_codec(spec, sample, seed=4, opq_train_points=2_000))
    assert a == b
    assert a != c


def test_trained_codec_is_empty_ivf_with_ids(data):
    spec = choose_codec(len(data["base"]), DIM, factory="OPQ8,IVF32,PQ16x4fsr")
    index = train_codec(spec, data["base"][:2_000], opq_train_points=2_000)
    assert index.is_trained and index.ntotal == 0 and codec.ivf_of(index).nprobe == spec.nprobe
    filled = encode_shard(codec.serialize_codec(index), data["ids"][:100], data["base"][:100])
    _, found = filled.search(data["base"][:5], 1)
    assert set(found.ravel()) <= set(data["ids"][:100].tolist())  # ids, not positions


def test_serialize_round_trip(data):
    spec = choose_codec(len(data["base"]), DIM, factory="IVF32,PQ32x4fs")
    trained = train_codec(spec, data["base"][:2_000])
    stored = codec.serialize_codec(trained)
    assert isinstance(stored, bytes)
    copy = codec.deserialize_codec(stored)
    assert copy.is_trained and copy.ntotal == 0 and codec.serialize_codec(copy) == stored
    one = encode_shard(stored, data["ids"], data["base"])
    two = encode_shard(stored, data["ids"], data["base"])
    assert all(np.array_equal(a, b) for a, b in zip(one.search(data["eval_q"], 10), two.search(data["eval_q"], 10)))
    with pytest.raises(ValueError):
        codec.serialize_codec(one)  # a codec must be empty


# ---- tuning and refine -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_scan(data):
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    spec = choose_codec(len(data["base"]), DIM, exact_threshold=1_000, train_size=3_000)
    index = train_codec(spec, data["base"][: spec.train_size], opq_train_points=2_000)
    filled = encode_shard(codec.serialize_codec(index), data["ids"], data["base"])
    faiss.omp_set_num_threads(threads)
    return spec, filled


def test_tuned_nprobe_reaches_target_without_refine(data):
    spec = choose_codec(len(data["base"]), DIM, factory="IVF64,Flat")
    index = encode_shard(codec.serialize_codec(train_codec(spec, data["base"][:3_000])), data["ids"], data["base"])
    nprobe, recall = codec.tune_nprobe(index, data["tune_q"], data["base"], data["ids"], target_recall=0.95, spec=spec)
    assert recall >= 0.95 and nprobe < 64 and spec.nprobe == nprobe and spec.k_factor == 1
    truth = codec.exact_neighbors(data["base"], data["ids"], data["eval_q"], 10)
    held_out = codec.recall_at_k(search_index(index, data["eval_q"], 10, nprobe=nprobe)[1], truth)
    assert held_out >= 0.92  # a different 300 queries: sampling noise of about +-0.02


def test_tuned_nprobe_and_k_factor_with_refine(data, fast_scan):
    spec, index = fast_scan
    spec = CodecSpec.from_dict(spec.to_dict())
    nprobe, recall = codec.tune_nprobe(index, data["tune_q"], data["base"], data["ids"], target_recall=0.95, spec=spec)
    assert recall >= 0.95 and spec.nprobe == nprobe and spec.recall == recall and spec.k_factor >= 1
    store = RefineStore([(data["ids"], data["base"].astype(np.float16))], k_factor=spec.k_factor)
    truth = codec.exact_neighbors(data["base"], data["ids"], data["eval_q"], 10)
    found = search_index(index, data["eval_q"], 10, nprobe=nprobe, refine=store)[1]
    assert codec.recall_at_k(found, truth) >= 0.92


def test_refine_improves_recall(data, fast_scan):
    spec, index = fast_scan
    truth = codec.exact_neighbors(data["base"], data["ids"], data["eval_q"], 10)
    store = RefineStore([(data["ids"], data["base"].astype(np.float16))], k_factor=8)
    codes_only = codec.recall_at_k(search_index(index, data["eval_q"], 10, nprobe=16)[1], truth)
    refined = codec.recall_at_k(search_index(index, data["eval_q"], 10, nprobe=16, refine=store)[1], truth)
    assert refined >= codes_only + 0.2 and refined >= 0.9, (codes_only, refined)


def test_tune_flat_reports_exact_recall(data):
    spec = choose_codec(100, DIM)
    index = encode_shard(codec.serialize_codec(train_codec(spec, data["base"][:10])), data["ids"], data["base"])
    nprobe, recall = codec.tune_nprobe(index, data["tune_q"], data["base"], data["ids"], spec=spec)
    assert nprobe is None and recall == 1.0


def test_opq_under_omp_thread_limit_does_not_spin() -> None:
    """With OMP_THREAD_LIMIT=1 (set for tesseract) faiss's OPQ training and encoding spun for minutes;
    mmrag_core.index.faiss_runtime keeps faiss within the limit. Fresh process: the limit is read at start."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("from mmrag_core.index.codec import faiss; import numpy as np; "
            "x = np.random.default_rng(0).random((3000, 16), 'float32'); "
            "ix = faiss.index_factory(16, 'OPQ4,IVF8,PQ4x4'); ix.train(x); ix.add(x); ix.search(x[:100], 10); "
            "print(faiss.omp_get_max_threads())")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    env.pop("OMP_NUM_THREADS", None)
    # ~5 s here; without the fix the same run spins in the kernel for minutes.
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90,
                          check=False, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "1"
