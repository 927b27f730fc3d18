"""Late fusion of ranked lists from several spaces: by reciprocal rank (RRF) or by weighted, normalised
scores; per-page deduplication of fused candidates; the weighted combination of query vectors (early fusion)."""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Fused:
    """A fused candidate: its RRF score and, per space, its 1-based rank and raw similarity."""

    id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    similarities: dict[str, float] = field(default_factory=dict)
    carried: set[str] = field(default_factory=set, repr=False)  # lists whose rank came from a deduped item


def reciprocal_rank_fusion(
    ranked: dict[str, list[tuple[int, float]]],
    k: int = 60,
    weights: dict[str, float] | None = None,
) -> list[Fused]:
    """Fuse per-space lists of (id, similarity), best first: score = sum_w w / (k + rank).

    Ties are broken by the best single rank, then by the order spaces were given, then by id,
    so results are deterministic.
    """
    return _fuse(ranked, weights, lambda _space, rank, _sim, _hits: 1.0 / (k + rank))


def weighted_score_fusion(
    ranked: dict[str, list[tuple[int, float]]],
    weights: dict[str, float] | None = None,
) -> list[Fused]:
    """Fuse per-space lists of (id, similarity), best first: score = sum_w w * s', where s' is the similarity
    min-max normalised within its list (1 for the best, 0 for the worst; 1 for every item of a list whose
    similarities are all equal). Similarities of different spaces are not comparable as they are; once
    normalised, the score keeps how far apart the candidates of one list are, which ranks alone lose.

    Ties are broken as in :func:`reciprocal_rank_fusion`.
    """
    bounds = {s: (min(v for _, v in hits), max(v for _, v in hits)) for s, hits in ranked.items() if hits}

    def normalised(space: str, _rank: int, sim: float, _hits: list) -> float:
        lo, hi = bounds[space]
        return 1.0 if hi <= lo else (sim - lo) / (hi - lo)

    return _fuse(ranked, weights, normalised)


def _fuse(ranked: dict[str, list[tuple[int, float]]], weights: dict[str, float] | None,
          contribution: Callable[[str, int, float, list], float]) -> list[Fused]:
    """Sum ``weight * contribution(space, rank, similarity, list)`` per item and sort deterministically."""
    fused: dict[int, Fused] = {}
    order = {space: n for n, space in enumerate(ranked)}
    for space, hits in ranked.items():
        w = 1.0 if weights is None else weights.get(space, 1.0)
        for rank, (item, sim) in enumerate(hits, start=1):
            f = fused.setdefault(item, Fused(item, 0.0))
            f.score += w * contribution(space, rank, sim, hits)
            f.ranks[space] = rank
            f.similarities[space] = sim

    def key(f: Fused) -> tuple:
        best_rank = min(f.ranks.values())
        first_space = min(order[s] for s, r in f.ranks.items() if r == best_rank)
        return (-round(f.score, 12), best_rank, first_space, f.id)  # rounded: float noise is not a win

    return sorted(fused.values(), key=key)


def by_unit(ranked: dict[str, list[tuple[int, float]]],
            unit: Callable[[int], Hashable]) -> dict[str, list[tuple[int, float]]]:
    """Each list as a ranking of units (e.g. pages) before fusing: a unit at the rank and similarity of its best
    item in that list, named by one item id shared by every list (its first item in list order). Fusing items
    and deduplicating afterwards lets a page count only the lists that found the same item; found through
    different chunks by the dense and the lexical list, it would not add up their votes."""
    named: dict[Hashable, int] = {}
    out: dict[str, list[tuple[int, float]]] = {}
    for space, hits in ranked.items():
        seen: set[Hashable] = set()
        units = []
        for item, sim in hits:
            u = unit(item)
            if u not in seen:
                seen.add(u)
                units.append((named.setdefault(u, item), sim))
        out[space] = units
    return out


def dedupe_by(fused: list[Fused], unit: Callable[[int], Hashable]) -> list[Fused]:
    """One candidate per unit (e.g. a page), best first: the first (best) candidate of each unit is kept, and
    for a list it was not found in it carries the best rank (and that item's similarity) of the unit's
    other candidates, so a page found by several lists through different items shows it. Order and scores
    are those of the kept candidates."""
    kept: dict[Hashable, Fused] = {}
    for f in fused:
        u = unit(f.id)
        best = kept.get(u)
        if best is None:
            kept[u] = Fused(f.id, f.score, dict(f.ranks), dict(f.similarities))
            continue
        for space, rank in f.ranks.items():
            if space not in best.ranks or (space in best.carried and rank < best.ranks[space]):
                best.ranks[space] = rank
                best.similarities[space] = f.similarities[space]
                best.carried.add(space)
    return list(kept.values())


def combine_vectors(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The L2-normalised weighted sum of L2-normalised query vectors (rows): early fusion of a text and
    an image query in one space. Each vector is normalised first so that the weights alone set the mix."""
    if len(vectors) != len(weights) or not vectors:
        raise ValueError("combine_vectors needs one weight per vector")
    total = np.zeros_like(np.atleast_2d(vectors[0]), dtype=np.float32)
    for v, w in zip(vectors, weights):
        v = np.atleast_2d(np.asarray(v, dtype=np.float32))
        total += float(w) * v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError("the weighted query vectors cancel out; use weights that are not all zero")
    return total / norm
