"""Late fusion of ranked lists from several spaces by reciprocal rank (RRF)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Fused:
    """A fused candidate: its RRF score and, per space, its 1-based rank and raw similarity."""

    id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    similarities: dict[str, float] = field(default_factory=dict)


def reciprocal_rank_fusion(
    ranked: dict[str, list[tuple[int, float]]],
    k: int = 60,
    weights: dict[str, float] | None = None,
) -> list[Fused]:
    """Fuse per-space lists of (id, similarity), best first: score = sum_w w / (k + rank).

    Ties are broken by the best single rank, then by the order spaces were given, then by id,
    so results are deterministic.
    """
    fused: dict[int, Fused] = {}
    order = {space: n for n, space in enumerate(ranked)}
    for space, hits in ranked.items():
        w = 1.0 if weights is None else weights.get(space, 1.0)
        for rank, (item, sim) in enumerate(hits, start=1):
            f = fused.setdefault(item, Fused(item, 0.0))
            f.score += w / (k + rank)
            f.ranks[space] = rank
            f.similarities[space] = sim

    def key(f: Fused) -> tuple:
        best_rank = min(f.ranks.values())
        first_space = min(order[s] for s, r in f.ranks.items() if r == best_rank)
        return (-f.score, best_rank, first_space, f.id)

    return sorted(fused.values(), key=key)
