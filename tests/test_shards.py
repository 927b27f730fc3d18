"""Shards, merges, tombstones, compaction and refine files (mmrag_core.index.shards, mmrag_core.index.tombstones).

The central property: shards encoded with one trained codec and merged give exactly the results (ids and
distances) of one build over the same vectors, for exact, IVF-PQ and IVF-PQ fast-scan codecs.
"""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from mmrag_core.index import codec
from mmrag_core.index.codec import choose_codec, train_codec
from mmrag_core.index.refine import RefineStore, refine_paths, write_refine
from mmrag_core.index.shards import encode_shard, merge_shards, read_shard, write_shard
from mmrag_core.index.tombstones import Exclusion, as_tombstones, search_index
from tests.vectors import DIM, clustered, one_thread  # noqa: F401 - one_thread is an autouse fixture


def save_tombstones(path, ids: np.ndarray):
    """Tombstones as a .npy file (the form a snapshot stores: sorted, unique)."""
    np.save(path, as_tombstones(ids))
    return path


def compact(shards, tombstones: np.ndarray, codec_bytes: bytes | None = None):
    """Compaction as the library does it: a merge that drops the tombstoned ids."""
    return merge_shards(shards, codec_bytes=codec_bytes, drop_ids=as_tombstones(tombstones))


N = 12_000
FACTORIES = ["Flat", "IVF32,PQ8", "IVF32,PQ16x4", "IVF32,PQ32x4fs", "OPQ8,IVF32,PQ16x4fsr"]


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    x = clustered(N + 200, seed=5)
    ids = np.random.default_rng(6).choice(10**12, size=N, replace=False).astype(np.int64)
    return {"base": x[:N], "ids": ids, "queries": x[N:]}


@pytest.fixture(scope="module")
def codecs(data) -> dict[str, bytes]:
    """One trained empty codec per factory, trained on a small sample (OPQ training is slow)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    out = {}
    for factory in FACTORIES:
        spec = choose_codec(N, DIM, factory=factory)
        spec.nprobe = 8
        out[factory] = codec.serialize_codec(train_codec(spec, data["base"][:3_000], opq_train_points=2_000))
    faiss.omp_set_num_threads(threads)
    return out


def build_single(codec_bytes: bytes, ids: np.ndarray, x: np.ndarray) -> faiss.Index:
    return encode_shard(codec_bytes, ids, x)


def build_shards(codec_bytes: bytes, ids: np.ndarray, x: np.ndarray, sizes: list[int]) -> list[faiss.Index]:
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == len(x)
    return [encode_shard(codec_bytes, ids[a:b], x[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def assert_same_results(a: faiss.Index, b: faiss.Index, queries: np.ndarray, k: int = 20, **kw) -> None:
    da, ia = search_index(a, queries, k, **kw)
    db, ib = search_index(b, queries, k, **kw)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(da, db)


def assert_same_up_to_ties(scores_a, ids_a, scores_b, ids_b) -> None:
    """Equal scores, and equal ids above each row's last score: equal PQ codes give exactly equal
    distances, and FAISS orders such ties by heap position, which depends on k."""
    np.testing.assert_array_equal(scores_a, scores_b)
    for sa, ia, ib in zip(scores_a, ids_a, ids_b):
        above = sa > sa[-1]
        assert set(ia[above]) == set(ib[above])


# ---- encode and merge --------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES)
def test_merged_equals_single_build(data, codecs, factory):
    single = build_single(codecs[factory], data["ids"], data["base"])
    merged = merge_shards(build_shards(codecs[factory], data["ids"], data["base"], [3_001, 5_000, 999, 3_000]),
                          codecs[factory])
    assert merged.ntotal == single.ntotal == N
    assert_same_results(single, merged, data["queries"], nprobe=8)


@pytest.mark.parametrize("factory", FACTORIES)
def test_merge_without_codec_bytes_and_inputs_untouched(data, codecs, factory):
    shards = build_shards(codecs[factory], data["ids"], data["base"], [6_000, 6_000])
    merged = merge_shards(shards)
    assert [s.ntotal for s in shards] == [6_000, 6_000]  # FAISS merge_from would have emptied them
    assert_same_results(build_single(codecs[factory], data["ids"], data["base"]), merged, data["queries"])


@pytest.mark.parametrize("factory", ["IVF32,PQ32x4fs", "OPQ8,IVF32,PQ16x4fsr"])
def test_fast_scan_encode_as_shard_then_merge_stays_exact(data, codecs, factory):
    """The FAISS 1.15.1 pitfall: after >= 2 merge_from calls, add_with_ids into a fast-scan index returns
    wrong results. New vectors must go in as a shard + merge; check that path after repeated merges."""
    cb = codecs[factory]
    parts = build_shards(cb, data["ids"], data["base"], [2_000, 2_000, 2_000, 3_000, 3_000])
    merged = merge_shards(parts[:2], cb)
    for part in parts[2:]:  # grow the index three more times, always by merging a new shard
        merged = merge_shards([merged, part], cb)
    assert_same_results(build_single(cb, data["ids"], data["base"]), merged, data["queries"], nprobe=8)


def test_fast_scan_merge_at_block_boundary(data):
    """FAISS 1.15.1's merge_from overflows the heap when a fast-scan list already holds a non-zero multiple
    of block_size codes (512 for PQ32x4): 512 + 100 vectors in one list aborted the process. Our merge
    writes each list once."""
    spec = choose_codec(N, DIM, factory="IVF1,PQ32x4fs")
    cb = codec.serialize_codec(train_codec(spec, data["base"][:2_000]))
    x, ids = data["base"][:1_636], data["ids"][:1_636]
    merged = merge_shards(build_shards(cb, ids, x, [512, 100, 512, 512]), cb)
    merged = merge_shards([merged, build_shards(cb, ids[:0], x[:0], [0])[0]], cb)
    assert_same_results(build_single(cb, ids, x), merged, data["queries"], k=50, nprobe=1)


@pytest.mark.parametrize("factory", ["IVF4,PQ32x4fs", "IVF4,PQ16x4fs", "IVF4,PQ8x4fsr"])
def test_numpy_block_layout_matches_faiss_packer(data, factory):
    """The merge (un)packs fast-scan blocks with a nibble permutation probed from FAISS's packer."""
    from mmrag_core.index.shards import _BlockLayout

    spec = choose_codec(N, DIM, factory=factory)
    index = train_codec(spec, data["base"][:1_000])
    ivf = codec.ivf_of(index)  # a pointer into ``index``: keep ``index`` referenced
    fast, slow = _BlockLayout(ivf.get_CodePacker()), _BlockLayout(ivf.get_CodePacker())
    slow.perm = None  # force the one-SWIG-call-per-block path
    codes = np.random.default_rng(0).integers(0, 256, (3 * fast.nvec, fast.code_size), dtype=np.uint8)
    packed = slow.pack(codes)
    np.testing.assert_array_equal(fast.pack(codes), packed)
    np.testing.assert_array_equal(fast.unpack(packed), codes)
    np.testing.assert_array_equal(slow.unpack(packed), codes)


def test_merge_rejects_other_codec_and_shared_ids(data, codecs):
    factory = "IVF32,PQ16x4"
    spec = choose_codec(N, DIM, factory=factory)
    other = codec.serialize_codec(train_codec(spec, data["base"][:3_000], seed=99))
    mine = encode_shard(codecs[factory], data["ids"][:100], data["base"][:100])
    theirs = encode_shard(other, data["ids"][100:200], data["base"][100:200])
    with pytest.raises(ValueError, match="different codec"):
        merge_shards([mine, theirs], codecs[factory])
    again = encode_shard(codecs[factory], data["ids"][50:150], data["base"][50:150])
    with pytest.raises(ValueError, match="share ids"):
        merge_shards([mine, again], codecs[factory])


def test_encode_shard_validates_ids_and_shape(data, codecs):
    cb = codecs["IVF32,PQ16x4"]
    x = data["base"][:10]
    with pytest.raises(ValueError, match="duplicate"):
        encode_shard(cb, np.zeros(10, dtype=np.int64), x)
    with pytest.raises(ValueError, match=">= 0"):
        encode_shard(cb, np.arange(-1, 9), x)
    with pytest.raises(ValueError, match="one id per vector"):
        encode_shard(cb, np.arange(9), x)
    with pytest.raises(ValueError, match="dimension"):
        encode_shard(cb, np.arange(10), x[:, :32])


# ---- files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES)
def test_write_read_mmap_and_merge_from_mapped_shards(tmp_path, data, codecs, factory):
    """Mapped shards are read-only: FAISS merge_from on them calls std::terminate; merge_shards only reads."""
    shards = build_shards(codecs[factory], data["ids"], data["base"], [4_000, 8_000])
    paths = [write_shard(s, tmp_path / f"shard-{i}.faiss") for i, s in enumerate(shards)]
    assert not list(tmp_path.glob("*.tmp"))
    mapped = [read_shard(p, mmap=True) for p in paths]
    assert_same_results(shards[1], mapped[1], data["queries"], nprobe=8)
    assert_same_results(build_single(codecs[factory], data["ids"], data["base"]), merge_shards(mapped, codecs[factory]),
                        data["queries"], nprobe=8)
    assert read_shard(paths[0], mmap=False).ntotal == 4_000


def test_refine_files_round_trip_and_newest_part_wins(tmp_path, data):
    ids, x = data["ids"][:1_000], data["base"][:1_000]
    write_refine(tmp_path / "a.faiss", ids[::-1], x[::-1])  # unsorted input is sorted on write
    changed = -x[:10]
    write_refine(tmp_path / "b.faiss", ids[:10], changed)
    vec_path, ids_path = refine_paths(tmp_path / "a.faiss")
    assert np.load(vec_path).dtype == np.float16 and np.all(np.diff(np.load(ids_path)) > 0)
    store = RefineStore.open([tmp_path / "a.faiss", tmp_path / "b.faiss"], k_factor=4)
    assert isinstance(store.parts[0][1].base, np.memmap) and len(store) == 1_010  # mapped, not loaded
    got, found = store.vectors(np.concatenate([ids[:20], [12345]]))
    assert found[:20].all() and not found[20]
    np.testing.assert_allclose(got[:10], changed, atol=1e-3)  # newest shard wins
    np.testing.assert_allclose(got[10:20], x[10:20], atol=1e-3)


def test_rescore_is_exact_on_candidates(data):
    ids, x = data["ids"], data["base"]
    store = RefineStore([(ids, x.astype(np.float16))], k_factor=1)
    q = data["queries"][:5]
    cand = np.stack([ids[:50]] * 5)
    cand[:, 7] = -1
    scores, top = store.rescore(q, cand, 10)
    x16 = x[:50].astype(np.float16).astype(np.float32)
    expect = np.argsort(-(q @ x16.T), axis=1, kind="stable")
    expect = np.array([[i for i in row if i != 7][:10] for row in expect])
    np.testing.assert_array_equal(top, ids[:50][expect])
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x16.T, expect, axis=1), rtol=1e-5)


# ---- tombstones and compaction -----------------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES)
def test_tombstones_filtered_inside_search(data, codecs, factory):
    index = merge_shards(build_shards(codecs[factory], data["ids"], data["base"], [6_000, 6_000]), codecs[factory])
    q, k = data["queries"], 10
    _, top = search_index(index, q, k, nprobe=8)
    dead = as_tombstones(top[top >= 0])  # every query's whole top-k is tombstoned
    scores, found = search_index(index, q, k, nprobe=8, exclude_ids=dead)
    assert (found >= 0).all(), "k live results must come back"
    assert not np.isin(found, dead).any()
    wide_scores, wide = search_index(index, q, 4 * k + len(dead), nprobe=8)
    live = ~np.isin(wide, dead)
    expected_scores = np.array([row[m][:k] for row, m in zip(wide_scores, live)])
    expected_ids = np.array([row[m][:k] for row, m in zip(wide, live)])
    assert_same_up_to_ties(scores, found, expected_scores, expected_ids)


def test_exclusion_is_reusable_and_empty_is_a_no_op(data, codecs):
    index = build_single(codecs["OPQ8,IVF32,PQ16x4fsr"], data["ids"], data["base"])
    plain = search_index(index, data["queries"], 10, nprobe=8)
    np.testing.assert_array_equal(plain[1], search_index(index, data["queries"], 10, nprobe=8,
                                                         exclude_ids=np.empty(0, np.int64))[1])
    ex = Exclusion(plain[1][:, 0])
    for _ in range(2):
        assert not np.isin(search_index(index, data["queries"], 10, nprobe=8, exclude_ids=ex)[1], ex.ids).any()


def test_search_params_default_to_the_index_nprobe(data, codecs):
    """SearchParametersIVF defaults to nprobe=1; search_index must use the index's own nprobe."""
    index = build_single(codecs["IVF32,PQ16x4"], data["ids"], data["base"])
    codec.set_nprobe(index, 32)
    ref = index.search(data["queries"], 10)
    got = search_index(index, data["queries"], 10, exclude_ids=np.array([-5]))
    np.testing.assert_array_equal(ref[1], got[1])


@pytest.mark.parametrize("factory", FACTORIES)
def test_compaction_drops_tombstones_and_keeps_the_rest(data, codecs, factory):
    cb = codecs[factory]
    shards = build_shards(cb, data["ids"], data["base"], [5_000, 4_000, 3_000])
    rng = np.random.default_rng(7)
    dead = data["ids"][rng.choice(N, 1_500, replace=False)]
    compacted = compact(shards, dead, cb)
    assert compacted.ntotal == N - 1_500
    live = ~np.isin(data["ids"], dead)
    fresh = build_single(cb, data["ids"][live], data["base"][live])
    assert_same_results(fresh, compacted, data["queries"], nprobe=8)
    assert not np.isin(search_index(compacted, data["queries"], 50, nprobe=8)[1], dead).any()
    merged = merge_shards(shards, cb)  # compacting == filtering at search time
    assert_same_up_to_ties(*search_index(merged, data["queries"], 20, nprobe=8, exclude_ids=dead),
                           *search_index(compacted, data["queries"], 20, nprobe=8))


def test_tombstone_files(tmp_path):
    path = save_tombstones(tmp_path / "tomb.npy", np.array([5, 3, 5, 9]))
    np.testing.assert_array_equal(np.load(path), [3, 5, 9])
    np.testing.assert_array_equal(as_tombstones(np.array([1]), np.array([[2, 1]])), [1, 2])


def test_refined_search_with_tombstones(tmp_path, data, codecs):
    cb = codecs["OPQ8,IVF32,PQ16x4fsr"]
    shards = build_shards(cb, data["ids"], data["base"], [6_000, 6_000])
    paths = []
    for i, (shard, (a, b)) in enumerate(zip(shards, [(0, 6_000), (6_000, N)])):
        paths.append(write_shard(shard, tmp_path / f"s{i}.faiss"))
        write_refine(paths[-1], data["ids"][a:b], data["base"][a:b])
    store = RefineStore.open(paths, k_factor=16)
    index = merge_shards([read_shard(p) for p in paths], cb)
    truth = codec.exact_neighbors(data["base"], data["ids"], data["queries"], 10)
    dead = as_tombstones(truth[:, :3])
    scores, found = search_index(index, data["queries"], 10, nprobe=32, exclude_ids=dead, refine=store)
    assert (found >= 0).all() and not np.isin(found, dead).any()
    assert np.all(np.diff(scores, axis=1) <= 0)
    live = ~np.isin(data["ids"], dead)
    live_truth = codec.exact_neighbors(data["base"][live], data["ids"][live], data["queries"], 10)
    assert codec.recall_at_k(found, live_truth) >= 0.93  # its 8-byte codes alone give ~0.2


def test_fingerprint_after_pymupdf_took_over_float_vectors() -> None:
    """Importing pymupdf after faiss makes faiss hand out pymupdf's std::vector<float> proxy; fingerprints
    and merges must not care (a Ray worker that extracted PDFs later merges shards)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import faiss, numpy as np; import pymupdf; from mmrag_core.index.shards import codec_fingerprint, vector_array; "
            "ix = faiss.index_factory(8, 'OPQ2,IVF4,PQ2x4'); ix.train(np.random.default_rng(0).random((2000, 8), 'float32')); "
            "pq = faiss.downcast_index(faiss.extract_index_ivf(ix)).pq.centroids; assert type(pq).__module__.startswith('pymupdf'), type(pq); "
            "print(codec_fingerprint(ix)); print(vector_array(pq, np.float32).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    fingerprint, shape = proc.stdout.split()[:2]
    assert len(fingerprint) == 64 and shape == "(128,)"  # PQ2x4 of d=8: 2 x 16 centroids of 4 floats
