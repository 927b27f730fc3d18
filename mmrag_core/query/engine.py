"""Answer a text and/or image query from an opened snapshot: encode, search, combine by a strategy, hydrate.

The engine holds what lives as long as a snapshot is served: the encoders it was built with (loaded once, and
taken over from the previous engine when the models are the same), the item lookups, the ranked lists
(:mod:`mmrag_core.query.lists`) and the strategies that combine them (:mod:`mmrag_core.query.strategies`).

Metadata filters (:class:`~mmrag_core.query.filters.QueryFilters`) become an id selector passed into every
FAISS search, so each list's top candidates are taken among allowed items. Hits are deduplicated per page
(one per (source_uri, page)) unless asked not to.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmrag_core.config import Settings
from mmrag_core.config.sections import QuerySettings
from mmrag_core.index.search import IdFilter
from mmrag_core.models import ModelUnavailable
from mmrag_core.query.batched import SearchRequest, search_many
from mmrag_core.query.filters import QueryFilters
from mmrag_core.query.fusion import dedupe_by
from mmrag_core.query.hits import Hit, SnapshotItems, snippet_of
from mmrag_core.query.lists import OUTLINE, RANKED_LISTS, Query, Ranked, RankedLists, image_input
from mmrag_core.query.rerank import PageFeatures, load_reranker
from mmrag_core.query.strategies import EARLY_LIST, FUSION_METHODS, STRATEGIES, Strategies
from mmrag_core.snapshot.open import Snapshot, open_snapshot
from mmrag_core.storage.store import open_store

if TYPE_CHECKING:
    import numpy as np

    from mmrag_core.models.clip_encoder import ClipEncoder
    from mmrag_core.models.text_encoder import TextEncoder

__all__ = ["EARLY_LIST", "FUSION_METHODS", "OUTLINE", "RANKED_LISTS", "STRATEGIES", "Hit", "ModelMismatch",
           "QueryEngine", "open_engine", "snippet_of"]

log = logging.getLogger(__name__)

_FILTER_CACHE = 32  # distinct filters whose allowed ids an engine keeps


class ModelMismatch(ValueError):
    """The model loaded for queries is not the one the snapshot's space was built with: its vectors would be
    compared with vectors of other weights, and every result would be noise."""


class QueryEngine:
    """Loads the encoders a snapshot was built with (once) and answers queries against it.

    ``settings`` (default: the defaults) is the query section; ``outline`` says whether late fusion fuses the
    ``outline`` list by default (the ``page_outline`` setting, which also decides whether indexing makes
    outlines). The engine keeps its own copy of ``settings``.
    """

    def __init__(self, snapshot: Snapshot, settings: QuerySettings | None = None, device: str = "cpu", *,
                 outline: bool = True) -> None:
        self.snapshot = snapshot
        self.device = device
        self.settings = (settings or QuerySettings()).model_copy(deep=True)
        _choice(self.settings.fusion_strategy, STRATEGIES, "strategy")
        _choice(self.settings.fusion_method, FUSION_METHODS, "fusion method")
        weight = self.settings.early_fusion_text_weight
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"early_fusion_text_weight must be in [0, 1], got {weight}")
        self._items = SnapshotItems(snapshot.items)
        self._id_filters: OrderedDict[QueryFilters, IdFilter] = OrderedDict()
        self._id_filters_lock = threading.Lock()
        self._encoders = _Encoders(snapshot, device, self.settings.model_mismatch)
        self._lists = RankedLists(snapshot, self._items, self.settings, self._encoders, outline)
        self._strategies = Strategies(self._lists, self.settings)
        self._reranker = load_reranker(self.settings.rerank_model, snapshot.store)  # None: rerank_model off
        self.page_features = PageFeatures(self._lists)  # what the re-ranker (and its training) reads of pages

    @classmethod
    def from_settings(cls, snapshot: Snapshot, settings: Settings) -> QueryEngine:
        """An engine configured by ``settings``: its query section, the models' device and ``page_outline``."""
        return cls(snapshot, settings.query, settings.device, outline=settings.page_outline)

    @property
    def strategy(self) -> str:
        """The strategy of a query that names none."""
        return self.settings.fusion_strategy

    @property
    def search_depth(self) -> int:
        """Candidates taken from each ranked list before fusion (settable: evaluation searches deeper)."""
        return self.settings.search_depth

    @search_depth.setter
    def search_depth(self, depth: int) -> None:
        self.settings.search_depth = depth

    @property
    def lists(self) -> dict[str, Callable[[Query], Ranked | None]]:
        """The ranked lists, in fusion order: name -> a method of one query giving [(id, similarity)] or None."""
        return self._lists.by_name

    @property
    def has_outlines(self) -> bool:
        """Whether the snapshot has page outline items (indexed with ``page_outline`` on)."""
        return self._lists.has_outlines

    def default_lists(self) -> list[str]:
        """The ranked lists late fusion uses when a query names none."""
        return self._lists.default_lists()

    # ---- models ---------------------------------------------------------------------------------------------

    @property
    def text_encoder(self) -> TextEncoder:
        return self._encoders.text_encoder

    @property
    def clip(self) -> ClipEncoder | None:
        """The CLIP encoder of the image space; None when the snapshot has none or it could not be loaded."""
        return self._encoders.clip

    def load_models(self, previous: QueryEngine | None = None) -> QueryEngine:
        """Load the encoders now rather than at the first query, taking ``previous``'s where it runs the same
        models (name and weight checksums), so that a service can swap to this engine fully ready."""
        self._encoders.load(None if previous is None else previous._encoders)
        return self

    # ---- queries --------------------------------------------------------------------------------------------

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
        rerank: bool | None = None,
        vectors: Mapping[str, np.ndarray] | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits for a text, an image, or both.

        ``strategy`` (default: the engine's) is one of :data:`STRATEGIES`. ``spaces`` selects, for ``late``
        fusion only, which ranked lists are fused, among :data:`RANKED_LISTS`: ``"text"`` (the text space),
        ``"image:text"`` (the query text through CLIP's text tower into the image space), ``"image:image"``
        (the query image into the image space); ``None`` fuses every list the query and the snapshot allow,
        and an explicit selection that leaves nothing to search is a ``ValueError``. ``filters`` restrict
        the items searched (:class:`QueryFilters` or its JSON form); ``fusion`` (``rrf`` or ``weighted``)
        and ``dedupe`` (one hit per page) default to the engine's settings. ``rerank`` (default: on when
        ``rerank_model`` names one, for late fusion of the default lists) reorders the first ``rerank_depth`` pages
        of a text query's deduplicated list. ``vectors``: query vectors already computed, by name (``text``,
        ``clip:text``; :func:`~mmrag_core.query.batched.query_vectors` encodes many queries' at once).
        """
        has_text = bool(text and text.strip())
        if not has_text and image is None:
            raise ValueError("a query needs text, an image, or both")
        strategy = _choice(strategy or self.strategy, STRATEGIES, "strategy")
        fusion = _choice(fusion or self.settings.fusion_method, FUSION_METHODS, "fusion method")
        if spaces is not None:
            unknown = set(spaces) - set(self.lists)
            if unknown:
                raise ValueError(f"unknown ranked list(s) {sorted(unknown)}; choose among {list(self.lists)}")
            if strategy != "late":
                raise ValueError(f"spaces selects the ranked lists of late fusion; strategy {strategy!r} "
                                 "chooses its own")
        dedupe = self.settings.dedupe_pages if dedupe is None else dedupe
        query = Query(text if has_text else None, None if image is None else image_input(image),
                      self.id_filter(filters), by_page=dedupe and self.settings.page_votes)
        for name, vec in (vectors or {}).items():
            query.vector(name, lambda vec=vec: vec)
        if query.id_filter is not None and query.id_filter.allow and not len(query.id_filter.ids):
            return []  # nothing in this snapshot matches the filters
        fused = self._strategies.by_name[strategy](query, spaces, fusion, k)
        if dedupe:
            fused = dedupe_by(fused, self._items.page_of)
        if rerank is None:  # by default the re-ranker follows late fusion of the default lists only
            rerank = self._reranker is not None and strategy == "late" and spaces is None
        if rerank and self._reranker is not None and dedupe and query.text is not None \
                and "text" in self.snapshot.indexes:
            fused = self._reranker.rerank(self.page_features, query.text, self._lists.text_vector(query), fused,
                                          max(self.settings.rerank_depth, 2))
        elif rerank and self._reranker is None:
            raise ValueError("rerank asked for, but no re-ranking model is configured (rerank_model is 'off')")
        return [self._items.hydrate(f.id, f.score, f.ranks, f.similarities) for f in fused[:k]]

    def search_many(self, requests: Sequence[SearchRequest]) -> list[list[Hit] | Exception]:
        """Each request's :meth:`search` hits, or the exception it raised, in order; the texts are encoded
        together, a few forward passes for all (:mod:`mmrag_core.query.batched`)."""
        return search_many(self, requests)

    def item(self, item: int) -> dict | None:
        """The metadata row of item ``item`` (an index id of this snapshot), or None when it has none."""
        return self._items.row(item)

    def id_filter(self, filters: QueryFilters | Mapping | None) -> IdFilter | None:
        """The id selector of ``filters`` over this snapshot's items (None: no filter), computed once per
        distinct filter: the allowed ids, or the excluded ones when that is the shorter list."""
        filters = QueryFilters.parse(filters)
        if filters.empty:
            return None
        with self._id_filters_lock:  # the micro-batcher searches alongside other searches of this engine
            cached = self._id_filters.get(filters)
            if cached is not None:
                self._id_filters.move_to_end(filters)
                return cached
        mask = filters.mask(self.snapshot.items)
        n, allowed = len(mask), int(mask.sum())
        fraction = allowed / n if n else 0.0
        ids = self._items.ids
        id_filter = (IdFilter(ids[mask], True, fraction) if allowed <= n - allowed
                     else IdFilter(ids[~mask], False, fraction))
        with self._id_filters_lock:
            self._id_filters[filters] = id_filter
            while len(self._id_filters) > _FILTER_CACHE:
                self._id_filters.popitem(last=False)
        return id_filter


def open_engine(settings: Settings, snapshot_id: str | None = None) -> QueryEngine:
    """Open (and verify) ``snapshot_id`` (default: LATEST) of ``settings.store`` and wrap it in a query engine
    configured by ``settings``: one place for what ``mmrag query``, ``ask`` and ``eval`` and their tasks open."""
    snapshot = open_snapshot(open_store(settings), snapshot_id)
    return QueryEngine.from_settings(snapshot, settings)


class _Encoders:
    """The encoders a snapshot's spaces were built with, each loaded at its first use (or taken over)."""

    def __init__(self, snapshot: Snapshot, device: str, mismatch: str = "refuse") -> None:
        self.snapshot, self.device, self.mismatch = snapshot, device, mismatch
        self._text_encoder = None
        self._clip = None
        self._clip_failed: str | None = None

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            from mmrag_core.models.text_encoder import TextEncoder

            encoder = TextEncoder(self.snapshot.manifest["models"]["text"]["name"], device=self.device,
                                  store=self.snapshot.store)
            self.check_identity("text", encoder.state_sha256, encoder.name)
            self._text_encoder = encoder
        return self._text_encoder

    @property
    def clip(self) -> ClipEncoder | None:
        if self._clip is None and self._clip_failed is None and "image" in self.snapshot.indexes:
            from mmrag_core.models.clip_encoder import ClipEncoder

            m = self.snapshot.manifest["models"]["image"]
            try:
                clip = ClipEncoder(m["name"], m["pretrained"], m.get("model_config"), device=self.device,
                                   store=self.snapshot.store)
                self.check_identity("image", clip.state_sha256, clip.model_name)
                self._clip = clip
            except ModelUnavailable as e:
                self._clip_failed = str(e)
                log.warning("image space not searched: %s", e)
        return self._clip

    @property
    def clip_failed(self) -> str | None:
        """Why the CLIP model could not be loaded (None: it loaded, or was not tried yet)."""
        return self._clip_failed

    def check_identity(self, space: str, loaded: str, name: str) -> None:
        """Compare the loaded weights' fingerprint with the one the manifest recorded for ``space``: raise
        ModelMismatch (or, with ``model_mismatch: warn``, log loudly) when they differ. Older snapshots that
        recorded none are accepted."""
        recorded = (self.snapshot.manifest["models"].get(space) or {}).get("state_sha256")
        if not recorded:
            log.debug("snapshot %s records no state_sha256 for space %s; the loaded %s is not checked",
                      self.snapshot.id, space, name)
            return
        if loaded == recorded:
            return
        message = (f"snapshot {self.snapshot.id} space {space!r} was built with other weights than the model "
                   f"loaded for queries: built with state_sha256 {recorded}, loaded {name!r} with state_sha256 "
                   f"{loaded}")
        if self.mismatch == "warn":
            log.warning("!!! %s; querying anyway (model_mismatch=warn): results in this space are meaningless !!!",
                        message)
            return
        raise ModelMismatch(f"{message}. Query with the weights the snapshot was built with, re-index with these, "
                            "or set model_mismatch=warn (MMRAG_MODEL_MISMATCH) to query anyway")

    def load(self, previous: _Encoders | None) -> None:
        """Load every encoder now, taking ``previous``'s where it runs the same model."""
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


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose among {list(allowed)}")
    return value


def _same_model(a: dict | None, b: dict | None) -> bool:
    keys = ("name", "pretrained", "model_config", "weights_sha256", "state_sha256")
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys)
