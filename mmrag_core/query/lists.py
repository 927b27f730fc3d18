"""The ranked lists a query can produce, one small method each, and the helpers they share.

Each list maps one :class:`Query` to ``[(id, similarity), ...]`` best first, or None when the query or the
snapshot cannot feed it: the text space, the image space queried by text (CLIP text tower) or by image (CLIP
image tower), BM25 over the items' indexed text, two-stage document routing, and the pages' outlines (their
items in the text space, each page given as its first chunk). Strategies
(:mod:`mmrag_core.query.strategies`) decide which lists to produce and how to combine them; keeping the lists
apart lets every strategy and the evaluation ask for any one of them alone.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmrag_core.config.sections import QuerySettings
from mmrag_core.index.search import IdFilter
from mmrag_core.query.fusion import by_unit, reciprocal_rank_fusion
from mmrag_core.query.hits import SnapshotItems
from mmrag_core.query.routing import ROUTED, DocumentRouter, choose_documents, documents_of
from mmrag_core.query.vocabulary import expand_query
from mmrag_core.snapshot.open import Snapshot
from mmrag_core.storage.items import ItemKind

OUTLINE = "outline"
# The ranked lists late fusion can fuse, in fusion order.
RANKED_LISTS: tuple[str, ...] = ("text", "image:text", "image:image", "lexical", ROUTED, OUTLINE)

Ranked = list[tuple[int, float]]  # (id, similarity), best first


class Query:
    """One query: its text and validated image bytes, its id filter, and its vectors, each encoded once."""

    def __init__(self, text: str | None, image: bytes | None, id_filter: IdFilter | None,
                 by_page: bool = False) -> None:
        self.text, self.image, self.id_filter = text, image, id_filter
        self.by_page = by_page  # fuse the ranked lists page by page (QuerySettings.page_votes)
        self._vectors: dict[str, np.ndarray] = {}

    def vector(self, name: str, encode: Callable[[], np.ndarray]) -> np.ndarray:
        if name not in self._vectors:
            self._vectors[name] = encode()
        return self._vectors[name]

    def restricted(self, id_filter: IdFilter) -> Query:
        """The same query, its vectors shared (encoded once), searching only the items ``id_filter`` allows."""
        other = Query(self.text, self.image, id_filter, self.by_page)
        other._vectors = self._vectors
        return other


def image_input(image: str | Path | bytes) -> bytes:
    """Image bytes from a path or bytes, validated by Pillow before it reaches the model."""
    from PIL import Image

    data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as e:  # Pillow raises many types for bad images
        raise ValueError(f"query image could not be decoded: {e}") from e
    return bytes(data)


class Encoders(Protocol):
    """The query encoders the lists embed a query with (the engine's, loaded once and shared across engines)."""

    @property
    def text_encoder(self) -> Any: ...

    @property
    def clip(self) -> Any: ...  # None when the snapshot has no image space or its model could not be loaded

    @property
    def clip_failed(self) -> str | None: ...  # why the CLIP model could not be loaded


class RankedLists:
    """The ranked lists of one snapshot, searched as ``settings`` says (depth, routing, fusion constant)."""

    def __init__(self, snapshot: Snapshot, items: SnapshotItems, settings: QuerySettings, encoders: Encoders,
                 outline: bool = True) -> None:
        self.snapshot, self.items, self.settings, self.encoders = snapshot, items, settings, encoders
        self.outline = outline  # fuse the outline list by default (the page_outline setting)
        self._outlines: tuple[np.ndarray, dict[int, int]] | None = None  # outline ids, outline -> first chunk
        self._no_outlines: IdFilter | None = None  # every item but the outlines (the text list's default filter)
        self._router: DocumentRouter | None = None
        self._page_visuals: dict[tuple[str, int], list[int]] | None = None  # (doc, page) -> image-space items
        # The ranked lists, in fusion order: name -> a method of one query giving [(id, similarity)] or None.
        self.by_name: dict[str, Callable[[Query], Ranked | None]] = {
            "text": self.text_list, "image:text": self.image_text_list, "image:image": self.image_image_list,
            "lexical": self.lexical_list, ROUTED: self.routed_list, OUTLINE: self.outline_list}

    def default_lists(self) -> list[str]:
        """The ranked lists late fusion uses when a query names none: all but ``lexical`` without ``hybrid``,
        ``routed`` without ``routing`` and ``outline`` without ``outline``."""
        s = self.settings
        off = {n for n, on in (("lexical", s.hybrid), (ROUTED, s.routing), (OUTLINE, self.outline)) if not on}
        return [name for name in self.by_name if name not in off]

    def ranked(self, q: Query, names: Collection[str]) -> dict[str, Ranked]:
        """The lists among ``names`` this query can feed, in :attr:`by_name` order."""
        ranked = {}
        for name, produce in self.by_name.items():
            if name in names:
                hits = produce(q)
                if hits is not None:
                    ranked[name] = hits
        return ranked

    # ---- the lists ----------------------------------------------------------------------------------------

    def text_list(self, q: Query) -> Ranked | None:
        """The query text through the text encoder into the ``text`` space (its chunks and captions: not the page
        outlines, which the ``outline`` list ranks)."""
        if q.text is None or "text" not in self.snapshot.indexes:
            return None
        return self.search_space("text", self.text_vector(q), self.without_outlines(q.id_filter))

    def image_text_list(self, q: Query) -> Ranked | None:
        """The query text through CLIP's text tower into the ``image`` space."""
        vec = self.clip_text_vector(q)
        return None if vec is None else self.search_space("image", vec, q.id_filter)

    def image_image_list(self, q: Query) -> Ranked | None:
        """The query image through CLIP's image tower into the ``image`` space."""
        vec = self.clip_image_vector(q)
        return None if vec is None else self.search_space("image", vec, q.id_filter)

    def lexical_list(self, q: Query) -> Ranked | None:
        """The query text (with the vocabulary's printed labels, ``lexical_expansion``) through BM25 (the snapshot's
        lexical index) over the items' indexed text."""
        lexical = self.snapshot.lexical
        if q.text is None or lexical is None:
            return None
        f = q.id_filter
        text = expand_query(q.text) if self.settings.lexical_expansion else q.text
        return lexical.search(text, self.settings.search_depth,
                              allowed_ids=f.ids if f is not None and f.allow else None,
                              denied_ids=f.ids if f is not None and not f.allow else None)

    def routed_list(self, q: Query) -> Ranked | None:
        """Two-stage retrieval (:mod:`mmrag_core.query.routing`): the ``route_docs`` best documents, then the lexical
        and text lists searched again within their items, fused by reciprocal rank."""
        if q.text is None:
            return None
        route_docs, rrf_k = self.settings.route_docs, self.settings.rrf_k
        by_router = self.router.rank(q.text)
        flat = {} if len(by_router) >= route_docs else {  # the flat lists' documents fill up
            name: documents_of(hits or [], self.items.doc_of)
            for name, hits in (("text", self.text_list(q)), ("lexical", self.lexical_list(q)))}
        docs = choose_documents(by_router, flat, route_docs, rrf_k)
        in_docs = np.isin(np.asarray(self.items.doc_column(), dtype=object), docs)
        allowed = passing(self.items.ids[in_docs], q.id_filter)
        if not len(allowed):
            return []
        within = q.restricted(self.only(allowed))
        ranked = {name: hits for name, hits in (("text", self.text_list(within)),
                                                ("lexical", self.lexical_list(within))) if hits}
        if q.by_page:
            ranked = by_unit(ranked, self.items.page_of)
        return [(f.id, f.score) for f in reciprocal_rank_fusion(ranked, k=rrf_k)]

    def outline_list(self, q: Query) -> Ranked | None:
        """Pages ranked by the similarity of the query to their outline (document facts and page headings) in
        the ``text`` space, each page given as its first chunk, so that its votes meet the other lists' on the
        item a hit shows; None when the snapshot has no outlines."""
        outline_ids, first_chunk = self.outline_items()
        if q.text is None or "text" not in self.snapshot.indexes or not len(outline_ids):
            return None
        allowed = passing(outline_ids, q.id_filter)
        if not len(allowed):
            return []
        hits = self.search_space("text", self.text_vector(q), self.only(allowed))
        return [(first_chunk.get(item, item), sim) for item, sim in hits]

    # ---- query vectors (each computed at most once per query) -----------------------------------------------

    def text_vector(self, q: Query) -> np.ndarray:
        return q.vector("text", lambda: self.encoders.text_encoder.encode([q.text]))

    def clip_text_vector(self, q: Query) -> np.ndarray | None:
        if q.text is None or self.encoders.clip is None:
            return None
        return q.vector("clip:text", lambda: self.encoders.clip.encode_texts([q.text]))

    def clip_image_vector(self, q: Query) -> np.ndarray | None:
        if q.image is None or self.encoders.clip is None:
            return None
        return q.vector("clip:image", lambda: self.encoders.clip.encode_images([q.image]))

    def no_clip(self) -> str:
        """Why the image space cannot be searched."""
        return self.encoders.clip_failed or "the snapshot has no image space"

    # ---- the snapshot's items, as the lists need them -------------------------------------------------------

    @property
    def router(self) -> DocumentRouter:
        """BM25 over each document's name and first pages, built at the first routed query."""
        if self._router is None:
            self._router = DocumentRouter.from_items(self.snapshot.items, self.settings.route_pages)
        return self._router

    @property
    def has_outlines(self) -> bool:
        """Whether the snapshot has page outline items (indexed with ``page_outline`` on)."""
        return bool(len(self.outline_items()[0]))

    def outline_items(self) -> tuple[np.ndarray, dict[int, int]]:
        """The ids of the outline items, and each one's page's first chunk (lowest ordinal)."""
        if self._outlines is None:
            cols = self.snapshot.items.select(["id", "kind", "doc_sha256", "page", "ordinal"]).to_pydict()
            chunks: dict[tuple[str, int], tuple[int, int]] = {}
            outlines: dict[int, tuple[str, int]] = {}
            for item, kind, doc, page, ordinal in zip(cols["id"], cols["kind"], cols["doc_sha256"], cols["page"],
                                                      cols["ordinal"]):
                if kind == ItemKind.CHUNK:
                    best = chunks.get((doc, page))
                    if best is None or (ordinal or 0) < best[0]:
                        chunks[(doc, page)] = (ordinal or 0, int(item))
                elif kind == ItemKind.OUTLINE:
                    outlines[int(item)] = (doc, page)
            first = {o: chunks[p][1] for o, p in outlines.items() if p in chunks}
            self._outlines = (np.array(sorted(outlines), dtype=np.int64), first)
        return self._outlines

    def without_outlines(self, f: IdFilter | None) -> IdFilter | None:
        """``f`` with the outline items excluded too (they have a list of their own)."""
        outline_ids, _ = self.outline_items()
        if not len(outline_ids):
            return f
        if f is None:
            if self._no_outlines is None:
                n = max(len(self.items.ids), 1)
                self._no_outlines = IdFilter(outline_ids, False, 1.0 - len(outline_ids) / n)
            return self._no_outlines
        if f.allow:
            return self.only(f.ids[~np.isin(f.ids, outline_ids)])
        return IdFilter(np.union1d(f.ids, outline_ids), False, f.fraction)

    def visual_similarities(self, query_vec: np.ndarray, items: list[int]) -> dict[int, float]:
        """Item -> CLIP similarity of the query to the item's own image-space vector or, when it has none
        (a text chunk), the best of its page's image-space items (figures, images); items with neither
        are left out. Exact: the image space is searched restricted to exactly those ids."""
        if "image" not in self.snapshot.indexes:
            return {}
        visuals = self.visuals_by_page()
        candidates: dict[int, list[int]] = {}
        for item in items:
            row = self.items.row(item)
            on_page = visuals.get((row["doc_sha256"], row["page"]), []) if row is not None else []
            candidates[item] = [item, *on_page]
        ids = np.unique(np.fromiter((c for cs in candidates.values() for c in cs), dtype=np.int64))
        sims = dict(self.search_space("image", query_vec, self.only(ids), len(ids)))
        out = {}
        for item, cs in candidates.items():
            found = [sims[c] for c in cs if c in sims]
            if found:
                out[item] = sims[item] if item in sims else max(found)
        return out

    def visuals_by_page(self) -> dict[tuple[str, int], list[int]]:
        """(doc sha256, page) -> the ids of the page's figures, renders and images (what the image space holds)."""
        if self._page_visuals is None:
            cols = self.snapshot.items.select(["id", "kind", "doc_sha256", "page"]).to_pydict()
            visuals: dict[tuple[str, int], list[int]] = {}
            for item, kind, doc, page in zip(cols["id"], cols["kind"], cols["doc_sha256"], cols["page"]):
                if kind not in (ItemKind.CHUNK, ItemKind.OUTLINE):
                    visuals.setdefault((doc, page), []).append(int(item))
            self._page_visuals = visuals
        return self._page_visuals

    def search_space(self, space: str, query_vec: np.ndarray, id_filter: IdFilter | None = None,
                     depth: int | None = None) -> Ranked:
        """The ``depth`` (default: the search depth) nearest items of ``space`` that ``id_filter`` lets through."""
        scores, ids = self.snapshot.indexes[space].search(query_vec, depth or self.settings.search_depth, id_filter)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def only(self, ids: np.ndarray) -> IdFilter:
        """A filter letting exactly ``ids`` through (their share of the snapshot scales nprobe)."""
        return IdFilter(ids, True, len(ids) / max(len(self.items.ids), 1))


def passing(ids: np.ndarray, id_filter: IdFilter | None) -> np.ndarray:
    """The ids among ``ids`` that ``id_filter`` lets through (all of them without a filter)."""
    if id_filter is None:
        return ids
    keep = np.isin(ids, id_filter.ids)
    return ids[keep if id_filter.allow else ~keep]
