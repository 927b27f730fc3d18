"""A trained re-ranking stage over the top pages of the fused list (``rerank_model``, ``rerank_depth``).

The fused list already knows, for each page, where each ranked list put it and with what similarity; what it
cannot see is the whole page: how close the query is to the page's *best* chunk and to its outline (the lists
score one item each), how many of the query's words the page's headings and text hold, whether it is a table of
figures. :class:`PageFeatures` measures those from the snapshot alone (the query vector is the one the lists
already encoded, the page vectors are read exactly from the text space: no encoder runs), and :class:`Reranker`
scores them with a small linear model trained on labelled questions (:mod:`mmrag_core.learn.rerank_training`).
Only the first ``depth`` pages are reordered; the pages below keep their order and every hit keeps its fields.

A model is a folder (or ``store:models/rerank/<id>``) with ``rerank.safetensors`` (weights, bias, feature mean
and scale) and ``mmrag_model.json`` naming its features and every file's sha256, checked before use.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmrag_core.models import ModelUnavailable
from mmrag_core.models.stored import MODEL_META, check_files, fetch_stored_model, is_store_ref
from mmrag_core.query.lists import OUTLINE, RankedLists
from mmrag_core.storage.items import ItemKind

RERANK_FILE = "rerank.safetensors"
SCORED_LISTS: tuple[str, ...] = ("text", "lexical", "routed", OUTLINE)
# The features of a candidate page, in model order (a model names the ones it was trained on).
FEATURES: tuple[str, ...] = (
    "fused_score", "fused_position", *(f"rank_{name}" for name in SCORED_LISTS), "lists_found",
    "page_best_sim", "page_best_sim_gap", "outline_sim", "outline_sim_gap",
    "heading_overlap", "text_overlap", "digit_share", "same_doc_as_first")
RERANK_LISTS = "rerank"  # the name the re-ranker's score is recorded under in a hit's similarities

_WORD = re.compile(r"[a-z][a-z0-9&]+")
_NUMBER = re.compile(r"^\(?\$?-?[\d,.]+%?\)?$")
_STOP = frozenset("""the and for what was were are is of in on to from by with as at or an a be been this that these
those which who whom whose how much many its it their our your you use using used answer question give shown
based details information provided primarily following response relying only resource resources round units
please utilize year fiscal company""".split())


class Candidate(Protocol):
    """What the re-ranker reads of a fused candidate (a :class:`~mmrag_core.query.fusion.Fused` or a hit)."""

    id: int
    score: float
    ranks: dict[str, int]
    similarities: dict[str, float]


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry meaning, lower case, a plural ``s`` dropped (sheets -> sheet)."""
    words = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOP or len(w) < 3:
            continue
        words.add(w[:-1] if w.endswith("s") and not w.endswith("ss") and len(w) > 3 else w)
    return words


@dataclass
class _Page:
    chunks: list[int]
    outline: int | None
    headings: set[str]
    words: set[str]
    digit_share: float


class PageFeatures:
    """The features of candidate pages of one snapshot (:data:`FEATURES`); page texts are read once per page."""

    def __init__(self, lists: RankedLists) -> None:
        self.lists = lists
        self._items: dict[Any, tuple[list[int], list[str], int | None, str]] | None = None  # by page
        self._pages: dict[Any, _Page] = {}

    def matrix(self, text: str, query_vec: np.ndarray, candidates: Sequence[Candidate]) -> np.ndarray:
        """One row of :data:`FEATURES` per candidate (float32), in candidate order."""
        items, page_of = self.lists.items, self.lists.items.page_of
        units = [page_of(c.id) for c in candidates]
        pages = [self._page(u) for u in units]
        sims = self._similarities(query_vec, pages)
        query_words = content_words(text)
        first_doc = items.doc_of(candidates[0].id) if candidates else None
        top = max((c.score for c in candidates), default=1.0) or 1.0
        rows = []
        for position, (c, p) in enumerate(zip(candidates, pages, strict=True), 1):
            ranks = [c.ranks.get(name) for name in SCORED_LISTS]
            best = max((sims.get(i, -1.0) for i in p.chunks), default=-1.0)
            outline = sims.get(p.outline, 0.0) if p.outline is not None else 0.0
            rows.append([c.score / top, 1.0 / math.log2(1 + position),
                         *(0.0 if r is None else 1.0 / (1.0 + math.log(r)) for r in ranks),
                         sum(r is not None for r in ranks) / len(SCORED_LISTS),
                         best, 0.0, outline, 0.0,
                         _overlap(query_words, p.headings), _overlap(query_words, p.words), p.digit_share,
                         float(items.doc_of(c.id) == first_doc)])
        x = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURES))
        if len(x):  # how far below the best candidate: comparable across queries, whose similarities shift
            for col in ("page_best_sim", "outline_sim"):
                j = FEATURES.index(col)
                x[:, j + 1] = x[:, j] - x[:, j].max()
        return x

    def _similarities(self, query_vec: np.ndarray, pages: list[_Page]) -> dict[int, float]:
        """The exact text-space similarity of the query to every chunk and outline of ``pages``."""
        if "text" not in self.lists.snapshot.indexes:
            return {}
        ids = np.unique(np.fromiter((i for p in pages for i in (*p.chunks, *((p.outline,) if p.outline is not None
                                                                              else ()))), dtype=np.int64))
        if not len(ids):
            return {}
        return dict(self.lists.search_space("text", query_vec, self.lists.only(ids), len(ids)))

    def _page(self, unit: Any) -> _Page:
        page = self._pages.get(unit)
        if page is None:
            chunks, texts, outline, outline_text = self._page_items().get(unit, ([], [], None, ""))
            chunk_text = " ".join(texts)
            tokens = chunk_text.split()
            numbers = sum(bool(_NUMBER.match(t)) for t in tokens)
            page = _Page(chunks, outline, content_words(outline_text), content_words(chunk_text),
                         numbers / len(tokens) if tokens else 0.0)
            self._pages[unit] = page
        return page

    def _page_items(self) -> dict[Any, tuple[list[int], list[str], int | None, str]]:
        """Page -> (chunk ids, chunk texts, outline id, outline text), read once from the items table."""
        if self._items is None:
            cols = self.lists.items.table.select(["id", "kind", "source_uri", "page", "text"]).to_pydict()
            out: dict[Any, tuple[list[int], list[str], int | None, str]] = {}
            for iid, kind, uri, page, text in zip(cols["id"], cols["kind"], cols["source_uri"], cols["page"],
                                                  cols["text"], strict=True):
                chunks, texts, outline, outline_text = out.get((uri, page), ([], [], None, ""))
                if kind == ItemKind.CHUNK:
                    chunks.append(int(iid))
                    texts.append(text or "")
                elif kind == ItemKind.OUTLINE:
                    outline, outline_text = int(iid), text or ""
                out[(uri, page)] = (chunks, texts, outline, outline_text)
            self._items = out
        return self._items


def _overlap(query: set[str], page: set[str]) -> float:
    return len(query & page) / len(query) if query else 0.0


class Reranker:
    """A linear scorer of :data:`FEATURES` (standardised by the training set's mean and scale)."""

    def __init__(self, weight: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray,
                 features: Sequence[str] = FEATURES, meta: dict | None = None) -> None:
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ModelUnavailable(f"re-ranking model uses unknown features {unknown}; this version knows {FEATURES}")
        self.columns = np.array([FEATURES.index(f) for f in features], dtype=np.int64)
        self.weight, self.bias = np.asarray(weight, np.float32), float(bias)
        self.mean, self.scale = np.asarray(mean, np.float32), np.maximum(np.asarray(scale, np.float32), 1e-6)
        self.meta = meta or {}

    def scores(self, x: np.ndarray) -> np.ndarray:
        """The model's score of each row of a :meth:`PageFeatures.matrix` (higher: more relevant)."""
        z = (x[:, self.columns] - self.mean) / self.scale
        return z @ self.weight + self.bias

    def rerank(self, features: PageFeatures, text: str, query_vec: np.ndarray, fused: list, depth: int) -> list:
        """``fused`` with its first ``depth`` candidates reordered by the model (ties keep fused order), the rest
        as they were; candidates are the same objects, each given its score under ``similarities['rerank']``."""
        head, tail = fused[:depth], fused[depth:]
        if len(head) < 2:
            return fused
        s = self.scores(features.matrix(text, query_vec, head))
        order = sorted(range(len(head)), key=lambda i: (-float(s[i]), i))
        for i, c in enumerate(head):
            c.similarities[RERANK_LISTS] = float(s[i])
        return [head[i] for i in order] + tail

    def save(self, folder: str | Path, meta: dict) -> dict:
        """Write the weights and ``mmrag_model.json`` (``meta`` plus the features and the file's sha256)."""
        import hashlib

        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight, "bias": np.array([self.bias], np.float32), "mean": self.mean,
                   "scale": self.scale}, str(folder / RERANK_FILE))
        data = (folder / RERANK_FILE).read_bytes()
        meta = {**meta, "kind": "rerank-linear", "features": [FEATURES[i] for i in self.columns],
                "files": {RERANK_FILE: hashlib.sha256(data).hexdigest()}}
        (folder / MODEL_META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        return meta


def load_reranker(name: str, store: Any = None) -> Reranker | None:
    """The re-ranker a ``rerank_model`` setting names: None for ``off``; a folder, or ``store:models/rerank/<id>``
    in ``store``; its files are checked against their sha256 (:class:`ModelUnavailable` when they differ)."""
    if not name or name.lower() == "off":
        return None
    folder = fetch_stored_model(store, name) if is_store_ref(name) else Path(name).expanduser()
    meta_path = folder / MODEL_META
    if not meta_path.is_file():
        raise ModelUnavailable(f"re-ranking model {name!r}: no {MODEL_META} in {folder}")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != "rerank-linear":
        raise ModelUnavailable(f"{name!r} is not a re-ranking model (kind {meta.get('kind')!r})")
    check_files(folder, meta)
    from safetensors.numpy import load_file

    t = load_file(str(folder / RERANK_FILE))
    return Reranker(t["weight"], float(t["bias"][0]), t["mean"], t["scale"], meta["features"], meta)
