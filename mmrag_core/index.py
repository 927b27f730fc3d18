"""FAISS indexes per space. Exact inner-product search for now (vectors are unit-norm, so this is
cosine similarity); ids are the items' int64 ids, never positions."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


def build_exact_index(ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """An ``IndexIDMap2(IndexFlatIP)`` holding ``vectors`` under ``ids``."""
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise ValueError(f"ids ({len(ids)}) and vectors {vectors.shape} do not match")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("duplicate item ids in one index")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def read_index(path: Path, mmap: bool = True) -> faiss.Index:
    """Read an index, memory-mapped where FAISS supports it for this index type."""
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:
        return faiss.read_index(str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query row; missing slots have id -1."""
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    return index.search(q, k)
