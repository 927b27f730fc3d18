"""Answer a text and/or image query from an opened snapshot: encode, search, combine by a strategy, hydrate.

Ranked lists are produced by small per-list methods (:attr:`QueryEngine.lists`: name -> method of one query
returning ``[(id, similarity), ...]`` best first, or None when the query or snapshot cannot feed it), and a
*strategy* decides which lists to produce and how to combine them:

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

Metadata filters (:class:`~mmrag_core.query.filters.QueryFilters`) become an id selector passed into every
FAISS search, so each list's top candidates are taken among allowed items. Hits are deduplicated per page
(one per (source_uri, page)) unless asked not to.
"""
from __future__ import annotations

import io
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmrag_core.config import Settings
from mmrag_core.query.fusion import (
    Fused,
    by_unit,
    combine_vectors,
    dedupe_by,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from mmrag_core.models import ModelUnavailable
from mmrag_core.query.filters import QueryFilters
from mmrag_core.query.routing import ROUTED, DocumentRouter, choose_documents, documents_of
from mmrag_core.snapshot.open import Snapshot
from mmrag_core.index.search import IdFilter

log = logging.getLogger(__name__)

# The ranked lists late fusion can fuse: the text space, the image space queried by text (CLIP text
# tower) or by image (CLIP image tower), BM25 over the items' indexed text, two-stage document routing, and
# the pages' outlines (their items in the text space, each page given as its first chunk).
OUTLINE = "outline"
RANKED_LISTS: tuple[str, ...] = ("text", "image:text", "image:image", "lexical", ROUTED, OUTLINE)
# How the ranked lists of a query are produced and combined (see the module docstring).
STRATEGIES: tuple[str, ...] = ("late", "early", "cascade", "unified")
# How late fusion combines lists: reciprocal rank, or weighted min-max-normalised similarities.
FUSION_METHODS: tuple[str, ...] = ("rrf", "weighted")
EARLY_LIST = "image:early"  # the list early fusion searches (and names in hits' ranks)
_FILTER_CACHE = 32  # distinct filters whose allowed ids an engine keeps


@dataclass
class Hit:
    """One result with its provenance. ``page`` is 0-based; ``bbox`` is (x0, y0, x1, y1) in PDF points
    (pixels for image files)."""

    id: int  # index id within this snapshot's lineage
    score: float
    kind: str
    source_uri: str
    page: int
    bbox: list[float] | None
    snippet: str
    ocr_confidence: float | None
    text_source: str
    ranks: dict[str, int] = field(default_factory=dict)
    similarities: dict[str, float] = field(default_factory=dict)
    key: int | None = None  # the item's content-derived id: the same item has the same key in every snapshot
    caption: str | None = None  # a generated caption of a figure or image, when the snapshot has one

    def to_dict(self) -> dict:
        return asdict(self)


def snippet_of(text: str | None, limit: int = 240) -> str:
    """A one-line excerpt for display."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class QueryEngine:
    """Loads the encoders a snapshot was built with (once) and answers queries against it."""

    def __init__(self, snapshot: Snapshot, device: str = "cpu", rrf_k: int = 10, search_depth: int = 100, *,
                 strategy: str = "late", fusion: str = "rrf", fusion_weights: Mapping[str, float] | None = None,
                 early_text_weight: float = 0.5, cascade_depth: int = 50, dedupe_pages: bool = True,
                 page_votes: bool = False, hybrid: bool = True, routing: bool = True, route_docs: int = 3,
                 route_pages: int = 3, outline: bool = True) -> None:
        self.snapshot = snapshot
        self.rrf_k = rrf_k
        self.search_depth = search_depth
        self.device = device
        self.strategy = _choice(strategy, STRATEGIES, "strategy")
        self.fusion = _choice(fusion, FUSION_METHODS, "fusion method")
        self.fusion_weights = dict(fusion_weights or {})
        if not 0.0 <= early_text_weight <= 1.0:
            raise ValueError(f"early_text_weight must be in [0, 1], got {early_text_weight}")
        self.early_text_weight = early_text_weight
        self.cascade_depth = cascade_depth
        self.dedupe_pages, self.page_votes = dedupe_pages, page_votes
        self.hybrid, self.routing, self.route_docs, self.route_pages = hybrid, routing, route_docs, route_pages
        self.outline = outline
        self._outlines: tuple[np.ndarray, dict[int, int]] | None = None  # outline ids, outline -> first chunk
        self._no_outlines: IdFilter | None = None  # every item but the outlines (the text list's default filter)
        self._router: DocumentRouter | None = None
        self._docs: list[str] | None = None  # doc sha256 per row, for routing
        self._ids = np.asarray(snapshot.items.column("id").to_numpy(zero_copy_only=False), dtype=np.int64)
        self._row = {int(i): n for n, i in enumerate(self._ids.tolist())}
        self._pages: tuple[list[str], list[int]] | None = None  # (source_uri, page) per row, for dedup
        self._page_visuals: dict[tuple[str, int], list[int]] | None = None  # (doc, page) -> image-space items
        self._id_filters: OrderedDict[QueryFilters, IdFilter] = OrderedDict()
        self._text_encoder = None
        self._clip = None
        self._clip_failed: str | None = None
        # The ranked lists, in fusion order: name -> a method of one query giving [(id, similarity)] or None.
        self.lists: dict[str, Callable[[_Query], list[tuple[int, float]] | None]] = {
            "text": self._text_list, "image:text": self._image_text_list, "image:image": self._image_image_list,
            "lexical": self._lexical_list, ROUTED: self._routed_list, OUTLINE: self._outline_list}
        self._strategies: dict[str, Callable[[_Query, Collection[str] | None, str, int], list[Fused]]] = {
            "late": self._late, "early": self._early, "cascade": self._cascade, "unified": self._unified}

    @classmethod
    def from_settings(cls, snapshot: Snapshot, settings: Settings) -> QueryEngine:
        """An engine configured by ``settings`` (device, fusion, strategy and their knobs)."""
        return cls(snapshot, settings.device, settings.rrf_k, settings.search_depth,
                   strategy=settings.fusion_strategy, fusion=settings.fusion_method,
                   fusion_weights=settings.fusion_weights, early_text_weight=settings.early_fusion_text_weight,
                   cascade_depth=settings.cascade_depth, dedupe_pages=settings.dedupe_pages,
                   page_votes=settings.page_votes, hybrid=settings.hybrid, routing=settings.routing,
                   route_docs=settings.route_docs, route_pages=settings.route_pages, outline=settings.page_outline)

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from mmrag_core.models.text_encoder import TextEncoder

            self._text_encoder = TextEncoder(self.snapshot.manifest["models"]["text"]["name"], device=self.device)
        return self._text_encoder

    @property
    def clip(self):
        if self._clip is None and self._clip_failed is None and "image" in self.snapshot.indexes:
            from mmrag_core.models.clip_encoder import ClipEncoder

            m = self.snapshot.manifest["models"]["image"]
            try:
                self._clip = ClipEncoder(m["name"], m["pretrained"], m.get("model_config"), device=self.device)
            except ModelUnavailable as e:
                self._clip_failed = str(e)
                log.warning("image space not searched: %s", e)
        return self._clip

    def load_models(self, previous: QueryEngine | None = None) -> QueryEngine:
        """Load the encoders now rather than at the first query, taking ``previous``'s where it runs the same
        models (name and weight checksums), so that a service can swap to this engine fully ready."""
        models = self.snapshot.manifest["models"]
        if previous is not None:
            before = previous.snapshot.manifest["models"]
            if _same_model(before.get("text"), models.get("text")):
                self._text_encoder = previous._text_encoder
            if _same_model(before.get("image"), models.get("image")):
                self._clip, self._clip_failed = previous._clip, previous._clip_failed
        if "text" in self.snapshot.indexes:
            _ = self.text_encoder
        _ = self.clip
        return self

    def search(
        self,
        text: str | None = None,
        image: str | Path | bytes | None = None,
        k: int = 10,
        spaces: Collection[str] | None = None,
        strategy: str | None = None,
        filters: QueryFilters | Mapping | None = None,
        fusion: str | None = None,
        dedupe: bool | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits for a text, an image, or both.

        ``strategy`` (default: the engine's) is one of :data:`STRATEGIES`. ``spaces`` selects, for ``late``
        fusion only, which ranked lists are fused, among :data:`RANKED_LISTS`: ``"text"`` (the text space),
        ``"image:text"`` (the query text through CLIP's text tower into the image space), ``"image:image"``
        (the query image into the image space); ``None`` fuses every list the query and the snapshot allow,
        and an explicit selection that leaves nothing to search is a ``ValueError``. ``filters`` restrict
        the items searched (:class:`QueryFilters` or its JSON form); ``fusion`` (``rrf`` or ``weighted``)
        and ``dedupe`` (one hit per page) default to the engine's settings.
        """
        has_text = bool(text and text.strip())
        if not has_text and image is None:
            raise ValueError("a query needs text, an image, or both")
        strategy = _choice(strategy or self.strategy, STRATEGIES, "strategy")
        fusion = _choice(fusion or self.fusion, FUSION_METHODS, "fusion method")
        if spaces is not None:
            unknown = set(spaces) - set(self.lists)
            if unknown:
                raise ValueError(f"unknown ranked list(s) {sorted(unknown)}; choose among {list(self.lists)}")
            if strategy != "late":
                raise ValueError(f"spaces selects the ranked lists of late fusion; strategy {strategy!r} "
                                 "chooses its own")
        dedupe = self.dedupe_pages if dedupe is None else dedupe
        query = _Query(text if has_text else None, None if image is None else _image_input(image),
                       self.id_filter(filters), by_page=dedupe and self.page_votes)
        if query.id_filter is not None and query.id_filter.allow and not len(query.id_filter.ids):
            return []  # nothing in this snapshot matches the filters
        fused = self._strategies[strategy](query, spaces, fusion, k)
        if dedupe:
            fused = dedupe_by(fused, self._page_of)
        return [self._hydrate(f.id, f.score, f.ranks, f.similarities) for f in fused[:k]]

    def item(self, item: int) -> dict | None:
        """The metadata row of item ``item`` (an index id of this snapshot), or None when it has none."""
        row = self._row.get(int(item))
        return None if row is None else self.snapshot.items.slice(row, 1).to_pylist()[0]

    def id_filter(self, filters: QueryFilters | Mapping | None) -> IdFilter | None:
        """The id selector of ``filters`` over this snapshot's items (None: no filter), computed once per
        distinct filter: the allowed ids, or the excluded ones when that is the shorter list."""
        filters = QueryFilters.parse(filters)
        if filters.empty:
            return None
        cached = self._id_filters.get(filters)
        if cached is not None:
            self._id_filters.move_to_end(filters)
            return cached
        mask = filters.mask(self.snapshot.items)
        n, allowed = len(mask), int(mask.sum())
        fraction = allowed / n if n else 0.0
        id_filter = (IdFilter(self._ids[mask], True, fraction) if allowed <= n - allowed
                     else IdFilter(self._ids[~mask], False, fraction))
        self._id_filters[filters] = id_filter
        while len(self._id_filters) > _FILTER_CACHE:
            self._id_filters.popitem(last=False)
        return id_filter

    # ---- ranked lists: one small method each ------------------------------------------------------------

    def _text_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """The query text through the text encoder into the ``text`` space (its chunks and captions: not the page
        outlines, which the ``outline`` list ranks)."""
        if q.text is None or "text" not in self.snapshot.indexes:
            return None
        return self._search_space("text", self._text_vector(q), self._without_outlines(q.id_filter))

    def _image_text_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """The query text through CLIP's text tower into the ``image`` space."""
        vec = self._clip_text_vector(q)
        return None if vec is None else self._search_space("image", vec, q.id_filter)

    def _image_image_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """The query image through CLIP's image tower into the ``image`` space."""
        vec = self._clip_image_vector(q)
        return None if vec is None else self._search_space("image", vec, q.id_filter)

    def _lexical_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """The query text through BM25 (the snapshot's lexical index) over the items' indexed text."""
        lexical = self.snapshot.lexical
        if q.text is None or lexical is None:
            return None
        f = q.id_filter
        return lexical.search(q.text, self.search_depth, allowed_ids=f.ids if f is not None and f.allow else None,
                              denied_ids=f.ids if f is not None and not f.allow else None)

    def _routed_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """Two-stage retrieval (:mod:`mmrag_core.query.routing`): the ``route_docs`` best documents, then the lexical
        and text lists searched again within their items, fused by reciprocal rank."""
        if q.text is None:
            return None
        by_router = self.router.rank(q.text)
        flat = {} if len(by_router) >= self.route_docs else {  # the flat lists' documents fill up
            name: documents_of(hits or [], self._doc_of)
            for name, hits in (("text", self._text_list(q)), ("lexical", self._lexical_list(q)))}
        docs = choose_documents(by_router, flat, self.route_docs, self.rrf_k)
        allowed = _passing(self._ids[np.isin(np.asarray(self._doc_column(), dtype=object), docs)], q.id_filter)
        if not len(allowed):
            return []
        within = q.restricted(self._only(allowed))
        ranked = {name: hits for name, hits in (("text", self._text_list(within)),
                                                ("lexical", self._lexical_list(within))) if hits}
        if q.by_page:
            ranked = by_unit(ranked, self._page_of)
        return [(f.id, f.score) for f in reciprocal_rank_fusion(ranked, k=self.rrf_k)]

    def _outline_list(self, q: _Query) -> list[tuple[int, float]] | None:
        """Pages ranked by the similarity of the query to their outline (document facts and page headings) in
        the ``text`` space, each page given as its first chunk, so that its votes meet the other lists' on the
        item a hit shows; None when the snapshot has no outlines."""
        outline_ids, first_chunk = self._outline_items()
        if q.text is None or "text" not in self.snapshot.indexes or not len(outline_ids):
            return None
        allowed = _passing(outline_ids, q.id_filter)
        if not len(allowed):
            return []
        hits = self._search_space("text", self._text_vector(q), self._only(allowed))
        return [(first_chunk.get(item, item), sim) for item, sim in hits]

    @property
    def has_outlines(self) -> bool:
        """Whether the snapshot has page outline items (indexed with ``page_outline`` on)."""
        return bool(len(self._outline_items()[0]))

    def _outline_items(self) -> tuple[np.ndarray, dict[int, int]]:
        """The ids of the outline items, and each one's page's first chunk (lowest ordinal)."""
        if self._outlines is None:
            cols = self.snapshot.items.select(["id", "kind", "doc_sha256", "page", "ordinal"]).to_pydict()
            chunks: dict[tuple[str, int], tuple[int, int]] = {}
            outlines: dict[int, tuple[str, int]] = {}
            for item, kind, doc, page, ordinal in zip(cols["id"], cols["kind"], cols["doc_sha256"], cols["page"],
                                                      cols["ordinal"]):
                if kind == "chunk":
                    best = chunks.get((doc, page))
                    if best is None or (ordinal or 0) < best[0]:
                        chunks[(doc, page)] = (ordinal or 0, int(item))
                elif kind == OUTLINE:
                    outlines[int(item)] = (doc, page)
            first = {o: chunks[p][1] for o, p in outlines.items() if p in chunks}
            self._outlines = (np.array(sorted(outlines), dtype=np.int64), first)
        return self._outlines

    def _without_outlines(self, f: IdFilter | None) -> IdFilter | None:
        """``f`` with the outline items excluded too (they have a list of their own)."""
        outline_ids, _ = self._outline_items()
        if not len(outline_ids):
            return f
        if f is None:
            if self._no_outlines is None:
                self._no_outlines = IdFilter(outline_ids, False, 1.0 - len(outline_ids) / max(len(self._ids), 1))
            return self._no_outlines
        if f.allow:
            return self._only(f.ids[~np.isin(f.ids, outline_ids)])
        return IdFilter(np.union1d(f.ids, outline_ids), False, f.fraction)

    @property
    def router(self) -> DocumentRouter:
        """BM25 over each document's name and first pages, built at the first routed query."""
        if self._router is None:
            self._router = DocumentRouter.from_items(self.snapshot.items, self.route_pages)
        return self._router

    def default_lists(self) -> list[str]:
        """The ranked lists late fusion uses when a query names none: all but ``lexical`` without ``hybrid``,
        ``routed`` without ``routing`` and ``outline`` without ``outline``."""
        off = {n for n, on in (("lexical", self.hybrid), (ROUTED, self.routing), (OUTLINE, self.outline)) if not on}
        return [name for name in self.lists if name not in off]

    def _ranked(self, q: _Query, names: Collection[str]) -> dict[str, list[tuple[int, float]]]:
        """The lists among ``names`` this query can feed, in :attr:`lists` order."""
        ranked = {}
        for name, produce in self.lists.items():
            if name in names:
                hits = produce(q)
                if hits is not None:
                    ranked[name] = hits
        return ranked

    def _fuse(self, ranked: dict[str, list[tuple[int, float]]], fusion: str, by_page: bool = False) -> list[Fused]:
        if by_page:
            ranked = by_unit(ranked, self._page_of)
        weights = self.fusion_weights or None
        if fusion == "weighted":
            return weighted_score_fusion(ranked, weights)
        return reciprocal_rank_fusion(ranked, k=self.rrf_k, weights=weights)

    # ---- strategies -------------------------------------------------------------------------------------

    def _late(self, q: _Query, spaces: Collection[str] | None, fusion: str, _k: int) -> list[Fused]:
        wanted = set(self.default_lists() if spaces is None else spaces)
        ranked = self._ranked(q, wanted)
        if q.text is None and "image:image" in wanted and "image:image" not in ranked:
            raise ValueError(f"image queries need the image space, which cannot be searched: {self._no_clip()}")
        if spaces is not None and not ranked:
            reason = f" ({self._clip_failed})" if self._clip_failed else ""
            raise ValueError(f"none of the selected ranked lists {sorted(wanted)} can be searched for this query "
                             f"in snapshot {self.snapshot.id}{reason}")
        return self._fuse(ranked, fusion, q.by_page)

    def _early(self, q: _Query, _spaces: Collection[str] | None, _fusion: str, _k: int) -> list[Fused]:
        vec = self._clip_query_vector(q)
        if vec is None:
            raise ValueError(f"early fusion searches the image space, which cannot be searched: {self._no_clip()}")
        return reciprocal_rank_fusion({EARLY_LIST: self._search_space("image", vec, q.id_filter)}, k=self.rrf_k)

    def _cascade(self, q: _Query, _spaces: Collection[str] | None, _fusion: str, k: int) -> list[Fused]:
        if q.text is None or "text" not in self.snapshot.indexes:
            raise ValueError("the cascade strategy shortlists from the text space: it needs query text and a "
                             f"snapshot with a text space (snapshot {self.snapshot.id} spaces: "
                             f"{sorted(self.snapshot.indexes)})")
        shortlist = self._search_space("text", self._text_vector(q), self._without_outlines(q.id_filter),
                                       max(self.cascade_depth, k))
        vec = self._clip_query_vector(q)
        visual = self._visual_similarities(vec, [i for i, _ in shortlist]) if vec is not None and shortlist else {}
        if vec is None:
            log.warning("cascade: no re-ranking, the image space cannot be searched: %s", self._no_clip())
        text_rank = {item: r for r, (item, _) in enumerate(shortlist, 1)}
        visual_rank = {item: r for r, item in enumerate(sorted(visual, key=lambda i: (-visual[i], text_rank[i])), 1)}
        order = sorted(shortlist, key=lambda hit: (visual_rank.get(hit[0], len(shortlist) + text_rank[hit[0]])))
        fused = []
        for rank, (item, sim) in enumerate(order, 1):
            ranks, sims = {"text": text_rank[item]}, {"text": sim}
            if item in visual:
                ranks["image"], sims["image"] = visual_rank[item], visual[item]
            fused.append(Fused(item, 1.0 / (self.rrf_k + rank), ranks, sims))
        return fused

    def _unified(self, q: _Query, _spaces: Collection[str] | None, fusion: str, _k: int) -> list[Fused]:
        ranked = self._ranked(q, ("image:text", "image:image"))
        if not ranked:
            raise ValueError(f"the unified strategy searches the image space (CLIP) only, which cannot be searched: "
                             f"{self._no_clip()}")
        return self._fuse(ranked, fusion, q.by_page)

    # ---- query vectors (each computed at most once per query) ---------------------------------------------

    def _text_vector(self, q: _Query) -> np.ndarray:
        return q.vector("text", lambda: self.text_encoder.encode([q.text]))

    def _clip_text_vector(self, q: _Query) -> np.ndarray | None:
        if q.text is None or self.clip is None:
            return None
        return q.vector("clip:text", lambda: self.clip.encode_texts([q.text]))

    def _clip_image_vector(self, q: _Query) -> np.ndarray | None:
        if q.image is None or self.clip is None:
            return None
        return q.vector("clip:image", lambda: self.clip.encode_images([q.image]))

    def _clip_query_vector(self, q: _Query) -> np.ndarray | None:
        """The query in the image space: early fusion of its CLIP text and image vectors (weighted
        ``early_text_weight`` / 1 - that), or the one it has; None without a searchable image space."""
        text_vec, image_vec = self._clip_text_vector(q), self._clip_image_vector(q)
        if text_vec is not None and image_vec is not None:
            w = self.early_text_weight
            return q.vector("clip:early", lambda: combine_vectors([text_vec, image_vec], [w, 1.0 - w]))
        return text_vec if text_vec is not None else image_vec

    # ---- helpers ----------------------------------------------------------------------------------------

    def _no_clip(self) -> str:
        return self._clip_failed or "the snapshot has no image space"

    def _search_space(self, space: str, query_vec: np.ndarray, id_filter: IdFilter | None = None,
                      depth: int | None = None) -> list[tuple[int, float]]:
        scores, ids = self.snapshot.indexes[space].search(query_vec, depth or self.search_depth, id_filter)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _only(self, ids: np.ndarray) -> IdFilter:
        """A filter letting exactly ``ids`` through (their share of the snapshot scales nprobe)."""
        return IdFilter(ids, True, len(ids) / max(len(self._ids), 1))

    def _visual_similarities(self, query_vec: np.ndarray, items: list[int]) -> dict[int, float]:
        """Item -> CLIP similarity of the query to the item's own image-space vector or, when it has none
        (a text chunk), the best of its page's image-space items (figures, images); items with neither
        are left out. Exact: the image space is searched restricted to exactly those ids."""
        if "image" not in self.snapshot.indexes:
            return {}
        visuals = self._visuals_by_page()
        candidates: dict[int, list[int]] = {}
        for item in items:
            row = self.item(item)
            on_page = visuals.get((row["doc_sha256"], row["page"]), []) if row is not None else []
            candidates[item] = [item, *on_page]
        ids = np.unique(np.fromiter((c for cs in candidates.values() for c in cs), dtype=np.int64))
        sims = dict(self._search_space("image", query_vec, self._only(ids), len(ids)))
        out = {}
        for item, cs in candidates.items():
            found = [sims[c] for c in cs if c in sims]
            if found:
                out[item] = sims[item] if item in sims else max(found)
        return out

    def _visuals_by_page(self) -> dict[tuple[str, int], list[int]]:
        """(doc sha256, page) -> the ids of the page's figures, renders and images (what the image space holds)."""
        if self._page_visuals is None:
            cols = self.snapshot.items.select(["id", "kind", "doc_sha256", "page"]).to_pydict()
            visuals: dict[tuple[str, int], list[int]] = {}
            for item, kind, doc, page in zip(cols["id"], cols["kind"], cols["doc_sha256"], cols["page"]):
                if kind not in ("chunk", OUTLINE):
                    visuals.setdefault((doc, page), []).append(int(item))
            self._page_visuals = visuals
        return self._page_visuals

    def _doc_column(self) -> list[str]:
        if self._docs is None:
            self._docs = self.snapshot.items.column("doc_sha256").to_pylist()
        return self._docs

    def _doc_of(self, item: int) -> str | None:
        """The document (sha256) an item belongs to."""
        row = self._row.get(int(item))
        return None if row is None else self._doc_column()[row]

    def _page_of(self, item: int) -> tuple[str, int] | int:
        """The page an item is on, (source_uri, page): the unit hits are deduplicated by."""
        if self._pages is None:
            cols = self.snapshot.items.select(["source_uri", "page"]).to_pydict()
            self._pages = (cols["source_uri"], cols["page"])
        row = self._row.get(int(item))
        return item if row is None else (self._pages[0][row], self._pages[1][row])

    def _hydrate(self, item: int, score: float, ranks: dict, sims: dict) -> Hit:
        row = self.item(item)
        return Hit(
            id=item,
            score=round(score, 6),
            kind=row["kind"],
            source_uri=row["source_uri"],
            page=row["page"],
            bbox=[round(float(v), 2) for v in row["bbox"]] if row["bbox"] is not None else None,
            snippet=snippet_of(row["text"]),
            ocr_confidence=row["ocr_confidence"],
            text_source=row["text_source"],
            ranks=dict(ranks),
            similarities={s: round(v, 6) for s, v in sims.items()},
            key=row.get("item_key"),
            caption=row.get("caption"),
        )


class _Query:
    """One query: its text and validated image bytes, its id filter, and its vectors, each encoded once."""

    def __init__(self, text: str | None, image: bytes | None, id_filter: IdFilter | None,
                 by_page: bool = False) -> None:
        self.text, self.image, self.id_filter = text, image, id_filter
        self.by_page = by_page  # fuse the ranked lists page by page (QueryEngine.page_votes)
        self._vectors: dict[str, np.ndarray] = {}

    def vector(self, name: str, encode: Callable[[], np.ndarray]) -> np.ndarray:
        if name not in self._vectors:
            self._vectors[name] = encode()
        return self._vectors[name]

    def restricted(self, id_filter: IdFilter) -> _Query:
        """The same query, its vectors shared (encoded once), searching only the items ``id_filter`` allows."""
        other = _Query(self.text, self.image, id_filter, self.by_page)
        other._vectors = self._vectors
        return other


def _passing(ids: np.ndarray, id_filter: IdFilter | None) -> np.ndarray:
    """The ids among ``ids`` that ``id_filter`` lets through (all of them without a filter)."""
    if id_filter is None:
        return ids
    keep = np.isin(ids, id_filter.ids)
    return ids[keep if id_filter.allow else ~keep]


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose among {list(allowed)}")
    return value


def _same_model(a: dict | None, b: dict | None) -> bool:
    keys = ("name", "pretrained", "model_config", "weights_sha256")
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys)


def _image_input(image: str | Path | bytes) -> bytes:
    """Image bytes from a path or bytes, validated by Pillow before it reaches the model."""
    from PIL import Image

    data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as e:  # Pillow raises many types for bad images
        raise ValueError(f"query image could not be decoded: {e}") from e
    return bytes(data)
