"""Synthetic vectors and FAISS thread settings shared by the codec and shard tests."""
from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

DIM = 64


def clustered(n: int, dim: int = DIM, seed: int = 0, n_clusters: int = 100, noise: float = 0.5) -> np.ndarray:
    """Unit vectors around ``n_clusters`` centres: a stand-in for embeddings with topical structure."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """OpenMP barriers spin; on a busy 2-core machine 1 thread trains ~5x faster than 2."""
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(old)
