"""How a query's ranked lists are produced and combined: one method per strategy.

- ``late``: every selected list, fused by reciprocal rank (or weighted, normalised scores); by default the
  dense lists, ``lexical`` (BM25, with ``hybrid``), ``routed`` (two-stage document routing, with ``routing``)
  and ``outline`` (pages ranked by their outline item in the text space, with ``outline``);
- ``early``: one CLIP query vector, the normalised weighted sum of the query's CLIP text and image vectors,
  searched in the ``image`` space (with one modality, that modality's vector);
- ``cascade``: a shortlist from the ``text`` space, re-ranked by the CLIP similarity of each shortlisted
  item's own image-space vector or, for a text chunk, of the figures/images of its page;
- ``unified``: CLIP only: the image space searched with the CLIP text and/or image query vectors, fused.
  (Index-time "unified" mode, text chunks embedded through CLIP, does not exist yet: on today's snapshots
  this searches figures and images only.)

Kept apart from the lists (:mod:`mmrag_core.query.lists`) so that a strategy reads as the combination it is.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import numpy as np

from mmrag_core.config.sections import QuerySettings
from mmrag_core.query.fusion import Fused, by_unit, combine_vectors, reciprocal_rank_fusion, weighted_score_fusion
from mmrag_core.query.lists import Query, Ranked, RankedLists

log = logging.getLogger(__name__)

# How the ranked lists of a query are produced and combined (see the module docstring).
STRATEGIES: tuple[str, ...] = ("late", "early", "cascade", "unified")
# How late fusion combines lists: reciprocal rank, or weighted min-max-normalised similarities.
FUSION_METHODS: tuple[str, ...] = ("rrf", "weighted")
EARLY_LIST = "image:early"  # the list early fusion searches (and names in hits' ranks)

# A strategy: (query, the late-fusion lists asked for or None, fusion method, k) -> fused hits, best first.
Strategy = Callable[[Query, Collection[str] | None, str, int], list[Fused]]


class Strategies:
    """The strategies over one snapshot's ranked lists, configured by ``settings`` (fusion constant and weights,
    cascade depth, early-fusion weight)."""

    def __init__(self, lists: RankedLists, settings: QuerySettings) -> None:
        self.lists, self.settings = lists, settings
        self.by_name: dict[str, Strategy] = {
            "late": self.late, "early": self.early, "cascade": self.cascade, "unified": self.unified}

    def late(self, q: Query, spaces: Collection[str] | None, fusion: str, _k: int) -> list[Fused]:
        wanted = set(self.lists.default_lists() if spaces is None else spaces)
        ranked = self.lists.ranked(q, wanted)
        if q.text is None and "image:image" in wanted and "image:image" not in ranked:
            raise ValueError(f"image queries need the image space, which cannot be searched: {self.lists.no_clip()}")
        if spaces is not None and not ranked:
            clip_failed = self.lists.encoders.clip_failed
            reason = f" ({clip_failed})" if clip_failed else ""
            raise ValueError(f"none of the selected ranked lists {sorted(wanted)} can be searched for this query "
                             f"in snapshot {self.lists.snapshot.id}{reason}")
        return self.fuse(ranked, fusion, q.by_page)

    def early(self, q: Query, _spaces: Collection[str] | None, _fusion: str, _k: int) -> list[Fused]:
        vec = self.clip_query_vector(q)
        if vec is None:
            raise ValueError("early fusion searches the image space, which cannot be searched: "
                             f"{self.lists.no_clip()}")
        hits = self.lists.search_space("image", vec, q.id_filter)
        return reciprocal_rank_fusion({EARLY_LIST: hits}, k=self.settings.rrf_k)

    def cascade(self, q: Query, _spaces: Collection[str] | None, _fusion: str, k: int) -> list[Fused]:
        lists, snapshot = self.lists, self.lists.snapshot
        if q.text is None or "text" not in snapshot.indexes:
            raise ValueError("the cascade strategy shortlists from the text space: it needs query text and a "
                             f"snapshot with a text space (snapshot {snapshot.id} spaces: "
                             f"{sorted(snapshot.indexes)})")
        shortlist = lists.search_space("text", lists.text_vector(q), lists.without_outlines(q.id_filter),
                                       max(self.settings.cascade_depth, k))
        vec = self.clip_query_vector(q)
        visual = lists.visual_similarities(vec, [i for i, _ in shortlist]) if vec is not None and shortlist else {}
        if vec is None:
            log.warning("cascade: no re-ranking, the image space cannot be searched: %s", lists.no_clip())
        text_rank = {item: r for r, (item, _) in enumerate(shortlist, 1)}
        visual_rank = {item: r for r, item in enumerate(sorted(visual, key=lambda i: (-visual[i], text_rank[i])), 1)}
        order = sorted(shortlist, key=lambda hit: (visual_rank.get(hit[0], len(shortlist) + text_rank[hit[0]])))
        fused = []
        for rank, (item, sim) in enumerate(order, 1):
            ranks, sims = {"text": text_rank[item]}, {"text": sim}
            if item in visual:
                ranks["image"], sims["image"] = visual_rank[item], visual[item]
            fused.append(Fused(item, 1.0 / (self.settings.rrf_k + rank), ranks, sims))
        return fused

    def unified(self, q: Query, _spaces: Collection[str] | None, fusion: str, _k: int) -> list[Fused]:
        ranked = self.lists.ranked(q, ("image:text", "image:image"))
        if not ranked:
            raise ValueError(f"the unified strategy searches the image space (CLIP) only, which cannot be searched: "
                             f"{self.lists.no_clip()}")
        return self.fuse(ranked, fusion, q.by_page)

    def fuse(self, ranked: dict[str, Ranked], fusion: str, by_page: bool = False) -> list[Fused]:
        """Combine ``ranked`` by ``fusion`` (``rrf`` or ``weighted``), page by page with ``by_page``."""
        if by_page:
            ranked = by_unit(ranked, self.lists.items.page_of)
        weights = self.settings.fusion_weights or None
        if fusion == "weighted":
            return weighted_score_fusion(ranked, weights)
        return reciprocal_rank_fusion(ranked, k=self.settings.rrf_k, weights=weights)

    def clip_query_vector(self, q: Query) -> np.ndarray | None:
        """The query in the image space: early fusion of its CLIP text and image vectors (weighted
        ``early_fusion_text_weight`` / 1 - that), or the one it has; None without a searchable image space."""
        text_vec, image_vec = self.lists.clip_text_vector(q), self.lists.clip_image_vector(q)
        if text_vec is not None and image_vec is not None:
            w = self.settings.early_fusion_text_weight
            return q.vector("clip:early", lambda: combine_vectors([text_vec, image_vec], [w, 1.0 - w]))
        return text_vec if text_vec is not None else image_vec
