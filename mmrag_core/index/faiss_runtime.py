"""faiss, imported with its OpenMP thread count kept within ``OMP_THREAD_LIMIT``.

Extraction sets ``OMP_THREAD_LIMIT=1`` for tesseract (one process per core). When faiss's OpenMP runtime
starts under that limit it still reports every core as its thread count, and OPQ training or encoding then
spins in the kernel for minutes instead of taking a second (faiss-cpu 1.15.1, measured: 100 s+ against
0.4 s). Asking for no more threads than the limit avoids it. Every module of mmrag that uses faiss imports
it from here.
"""
from __future__ import annotations

import os

import faiss


def respect_thread_limit() -> int:
    """Lower faiss's OpenMP threads to ``OMP_THREAD_LIMIT`` when that is set and smaller; returns the count."""
    limit = os.environ.get("OMP_THREAD_LIMIT", "").strip()
    if limit.isdigit() and 0 < int(limit) < faiss.omp_get_max_threads():
        faiss.omp_set_num_threads(int(limit))
    return faiss.omp_get_max_threads()


respect_thread_limit()

__all__ = ["faiss", "respect_thread_limit"]
