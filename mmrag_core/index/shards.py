"""Shards: batches of vectors encoded with one trained codec, merged list by list into one index.

Every shard starts as a clone of the stored empty codec, so shards share coarse centroids and PQ
codebooks and their inverted lists can simply be concatenated: a merge gives exactly the results of one
build over the same vectors in the same order. New vectors are never ``add``-ed to a merged index (FAISS
1.15.1 returns wrong results when a fast-scan index that had >= 2 ``merge_from`` calls is added to); they
become a new shard that is merged in.

The merge copies inverted lists itself instead of calling ``merge_from``, because in FAISS 1.15.1
``merge_from`` (a) overflows the heap for fast-scan indexes whenever a target list already holds a
non-zero multiple of ``block_size`` codes (``BlockInvertedLists::add_entries``; the process aborts or
memory is silently corrupted), (b) empties its sources, and (c) calls ``std::terminate`` when a source
is memory-mapped read-only. Here every target list is written exactly once, sources are only read, and
tombstoned ids can be dropped on the way (compaction).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmrag_core.index.codec import deserialize_codec, ivf_of
from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.index.refine import check_ids

# ---- encoding ---------------------------------------------------------------------------------------------


def encode_shard(codec_bytes: bytes, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A clone of the stored codec holding ``vectors`` under their item ``ids`` (never positions)."""
    index = deserialize_codec(codec_bytes)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != index.d:
        raise ValueError(f"vectors {x.shape} do not match the codec's dimension {index.d}")
    if index.ntotal:
        raise ValueError("codec bytes hold vectors; store an empty codec")
    index.add_with_ids(x, check_ids(ids, len(x)))
    return index


def vector_array(v: object, dtype: type) -> np.ndarray:
    """A faiss std::vector as a numpy array. pymupdf's SWIG module also wraps std::vector<float>; imported
    after faiss, its proxy class replaces faiss's (``pymupdf.mupdf.vectorf``), which faiss.vector_to_array
    refuses. Such a proxy is still a sequence of the same floats."""
    if type(v).__module__.startswith("faiss"):
        return faiss.vector_to_array(v)
    return np.asarray(v, dtype=dtype)


def codec_fingerprint(index: faiss.Index) -> str:
    """A hash of what was trained (rotation, coarse centroids, PQ codebooks): shards merge only if equal."""
    h = hashlib.sha256(f"{type(index).__name__}:{index.d}:{index.metric_type}".encode())
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            h.update(type(vt).__name__.encode())
            if isinstance(vt, faiss.LinearTransform):
                h.update(vector_array(vt.A, np.float32).tobytes() + vector_array(vt.b, np.float32).tobytes())
    ivf = ivf_of(index)
    if ivf is not None:
        h.update(f"{type(ivf).__name__}:{ivf.nlist}:{ivf.code_size}:{ivf.by_residual}".encode())
        h.update(ivf.quantizer.reconstruct_n(0, ivf.nlist).tobytes())
        if hasattr(ivf, "pq"):
            h.update(vector_array(ivf.pq.centroids, np.float32).tobytes())
    return h.hexdigest()


# ---- merging ----------------------------------------------------------------------------------------------


def merge_shards(
    shards: Sequence[faiss.Index], codec_bytes: bytes | None = None, drop_ids: np.ndarray | None = None
) -> faiss.Index:
    """One index holding every shard's vectors (in shard order), minus ``drop_ids``.

    Equal to a single build over the concatenated vectors: same ids, same distances. The shards are left
    untouched (they may be memory-mapped read-only). ``codec_bytes`` is the stored empty codec; without it
    an empty copy of the first shard is made. Raises if the shards were encoded with different codecs or
    share ids.
    """
    if not shards:
        raise ValueError("nothing to merge")
    target = deserialize_codec(codec_bytes) if codec_bytes is not None else _empty_copy(shards[0])
    fingerprint = codec_fingerprint(target)
    for i, shard in enumerate(shards):
        if codec_fingerprint(shard) != fingerprint:
            raise ValueError(f"shard {i} was encoded with a different codec; re-encode it or retrain all")
    drop = None if drop_ids is None or len(drop_ids) == 0 else np.unique(np.asarray(drop_ids, dtype=np.int64))
    if ivf_of(target) is None:
        _merge_id_map(target, shards, drop)
    else:
        _merge_ivf(target, shards, drop)
    return target


def _empty_copy(index: faiss.Index) -> faiss.Index:
    clone = faiss.deserialize_index(faiss.serialize_index(index))
    clone.reset()
    return clone


def _keep(ids: np.ndarray, drop: np.ndarray | None) -> np.ndarray | slice:
    """Mask of ids not in ``drop`` (sorted, unique): a binary search, not np.isin, which re-sorts
    ``drop`` on every call (once per inverted list)."""
    if drop is None:
        return slice(None)
    pos = np.minimum(np.searchsorted(drop, ids), len(drop) - 1)
    return drop[pos] != ids


def _merge_id_map(target: faiss.Index, shards: Sequence[faiss.Index], drop: np.ndarray | None) -> None:
    """IDMap2(Flat) and other id-mapped indexes: re-add the stored vectors (exact for Flat)."""
    seen: list[np.ndarray] = []
    for shard in shards:
        ids = vector_array(shard.id_map, np.int64)
        vectors = faiss.downcast_index(shard.index).reconstruct_n(0, shard.ntotal)
        keep = _keep(ids, drop)
        if len(ids[keep]):
            target.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(ids[keep]))
            seen.append(ids[keep])
    _check_disjoint(seen)


def _check_disjoint(id_parts: list[np.ndarray]) -> None:
    if not id_parts:
        return
    all_ids = np.sort(np.concatenate(id_parts))
    if len(all_ids) > 1 and bool((all_ids[1:] == all_ids[:-1]).any()):
        raise ValueError("the shards share ids; tombstone the old copy before re-encoding an item")


class _BlockLayout:
    """Fast-scan block (un)packing in numpy. A block of 32 codes is a fixed permutation of their 4-bit
    nibbles; it is read off FAISS's own packer once (4 bits of nibble position per probe), so a whole
    index is converted in a few array operations instead of one SWIG call per block (~22 us each)."""

    def __init__(self, packer: faiss.CodePacker):
        self.packer, self.nvec, self.code_size = packer, packer.nvec, packer.code_size
        self.block_size = packer.block_size
        self.perm = self._probe()
        self.inverse = None if self.perm is None else np.argsort(self.perm)

    def _probe(self) -> np.ndarray | None:
        n_nibbles = 2 * self.nvec * self.code_size
        if n_nibbles != 2 * self.block_size:
            return None  # not a nibble bijection: use the packer itself
        position, perm = np.arange(n_nibbles), np.zeros(n_nibbles, dtype=np.int64)
        for shift in range(0, int(n_nibbles - 1).bit_length(), 4):
            flat = _to_bytes((position >> shift) & 15)  # bound: swig_ptr does not keep arrays alive
            block = np.zeros(self.block_size, dtype=np.uint8)
            self.packer.pack_all(faiss.swig_ptr(flat), faiss.swig_ptr(block))
            perm |= _to_nibbles(block).astype(np.int64) << shift
        return perm if np.array_equal(np.sort(perm), position) else None

    def unpack(self, blocks: np.ndarray) -> np.ndarray:
        """(n_blocks * nvec, code_size) flat codes from concatenated packed blocks."""
        n_blocks = len(blocks) // self.block_size
        flat = np.zeros(n_blocks * self.nvec * self.code_size, dtype=np.uint8)
        if self.perm is None:
            step = self.nvec * self.code_size
            for b in range(n_blocks):
                self.packer.unpack_all(faiss.swig_ptr(blocks[b * self.block_size:]), faiss.swig_ptr(flat[b * step:]))
        elif n_blocks:  # np.take along an axis is ~14x faster than fancy indexing here
            flat = _to_bytes(np.take(_to_nibbles(blocks).reshape(n_blocks, -1), self.inverse, axis=1).ravel())
        return flat.reshape(-1, self.code_size)

    def pack(self, flat: np.ndarray) -> np.ndarray:
        """Packed blocks for (n_blocks * nvec, code_size) codes (pad rows with zeros, as FAISS does)."""
        n_blocks = len(flat) // self.nvec
        if self.perm is None:
            packed = np.zeros(n_blocks * self.block_size, dtype=np.uint8)
            step = self.nvec * self.code_size
            raw = np.ascontiguousarray(flat).ravel()
            for b in range(n_blocks):
                self.packer.pack_all(faiss.swig_ptr(raw[b * step:]), faiss.swig_ptr(packed[b * self.block_size:]))
            return packed
        return _to_bytes(np.take(_to_nibbles(flat.ravel()).reshape(n_blocks, -1), self.perm, axis=1).ravel())


def _to_nibbles(b: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(b), dtype=np.uint8)
    out[0::2], out[1::2] = b & 15, b >> 4
    return out


def _to_bytes(nibbles: np.ndarray) -> np.ndarray:
    nibbles = nibbles.astype(np.uint8)
    return nibbles[0::2] | (nibbles[1::2] << 4)


class _Lists:
    """All inverted lists of one IVF index as (ids, flat codes) per list; fast-scan blocks are unpacked
    for the whole index at once. Plain lists are returned as views into the index's memory."""

    def __init__(self, ivf: faiss.IndexIVF):
        self.ivf, self.nlist, self.code_size = ivf, ivf.nlist, ivf.code_size
        self.il = faiss.downcast_InvertedLists(ivf.invlists)
        is_block = isinstance(self.il, faiss.BlockInvertedLists)
        self.layout = _BlockLayout(ivf.get_CodePacker()) if is_block else None

    def sizes(self) -> np.ndarray:
        return np.array([self.il.list_size(i) for i in range(self.nlist)], dtype=np.int64)

    def read_all(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        sizes = self.sizes()
        ids = [faiss.rev_swig_ptr(self.il.get_ids(i), n) if n else _NO_IDS for i, n in enumerate(sizes.tolist())]
        if self.layout is None:
            codes = [faiss.rev_swig_ptr(self.il.get_codes(i), n * self.code_size).reshape(n, self.code_size)
                     if n else self._no_codes() for i, n in enumerate(sizes.tolist())]
            return ids, codes
        nvec, bs = self.layout.nvec, self.layout.block_size
        blocks = -(-sizes // nvec)
        raw = [faiss.rev_swig_ptr(self.il.get_codes(i), b * bs) for i, b in enumerate(blocks.tolist()) if b]
        flat = self.layout.unpack(np.concatenate(raw) if raw else np.empty(0, np.uint8))
        starts = np.concatenate([[0], np.cumsum(blocks)[:-1]]) * nvec
        return ids, [flat[s:s + n] for s, n in zip(starts, sizes)]

    def _no_codes(self) -> np.ndarray:
        return np.empty((0, self.code_size), dtype=np.uint8)

    def write_all(self, ids: list[np.ndarray], codes: list[np.ndarray]) -> int:
        """Fill the EMPTY lists of a fresh index, each exactly once: FAISS 1.15.1
        BlockInvertedLists::add_entries overflows the heap when appending to a non-empty list."""
        if self.sizes().any():
            raise RuntimeError("merge target is not empty")
        sizes = np.array([len(i) for i in ids], dtype=np.int64)
        if self.layout is None:
            packed, offsets, unit = None, None, 0
        else:
            packed, offsets, unit = self._pack_lists(codes, sizes), None, self.layout.block_size
            offsets = np.concatenate([[0], np.cumsum(-(-sizes // self.layout.nvec))]) * unit
        for i, n in enumerate(sizes.tolist()):
            if not n:
                continue
            data = np.ascontiguousarray(codes[i]) if packed is None else packed[offsets[i]:offsets[i + 1]]
            list_ids = np.ascontiguousarray(ids[i], dtype=np.int64)
            self.il.add_entries(i, n, faiss.swig_ptr(list_ids), faiss.swig_ptr(data))
        return int(sizes.sum())

    def _pack_lists(self, codes: list[np.ndarray], sizes: np.ndarray) -> np.ndarray:
        nvec = self.layout.nvec
        starts = np.concatenate([[0], np.cumsum(-(-sizes // nvec))]) * nvec
        flat = np.zeros((starts[-1], self.code_size), dtype=np.uint8)
        for s, c in zip(starts[:-1], codes):
            flat[s:s + len(c)] = c
        return self.layout.pack(flat)


_NO_IDS = np.empty(0, dtype=np.int64)


def _merge_ivf(target: faiss.Index, shards: Sequence[faiss.Index], drop: np.ndarray | None) -> None:
    """Concatenate each inverted list across shards (shard order) and write it once into ``target``.
    Holds one unpacked copy of the merged codes in RAM while it runs (64 MB per 1M 64-byte codes)."""
    tivf = ivf_of(target)
    if tivf.direct_map.type != faiss.DirectMap.NoMap:
        raise NotImplementedError("merging indexes with a direct map")
    sources = [_Lists(ivf_of(s)).read_all() for s in shards]
    ids, codes = [], []
    for list_no in range(tivf.nlist):
        list_ids = np.concatenate([src[0][list_no] for src in sources])
        list_codes = np.concatenate([src[1][list_no] for src in sources])
        keep = _keep(list_ids, drop)
        ids.append(list_ids[keep])
        codes.append(list_codes[keep])
    total = _Lists(tivf).write_all(ids, codes)
    tivf.ntotal = total
    target.ntotal = total
    _check_disjoint(ids)


# ---- files ------------------------------------------------------------------------------------------------


def write_shard(index: faiss.Index, path: Path | str) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written shard."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    return path


def read_shard(path: Path | str, mmap: bool = True) -> faiss.Index:
    """Read a shard, memory-mapped where FAISS can (plain IVF lists, flat codes).

    FAISS 1.15.1 still loads fast-scan lists (BlockInvertedLists) into RAM. A mapped shard is read-only;
    it can be searched and merged (merge_shards only reads it), not added to.
    """
    if not mmap:
        return faiss.read_index(str(path))
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        return faiss.read_index(str(path))
