"""Two-stage retrieval: find the documents a query is about, then rank the pages within them.

Many questions name a document implicitly ("3M's FY2018 cash flow statement"), while the pages that answer
them (a table) rarely repeat the issuer or the period. Stage 1 ranks documents: BM25 (bm25s) over one text
per document, its file name and the text of its first pages (where filings state issuer, form and period);
when that finds too few, the documents of the flat ranked lists (each at the rank of its best item) fill up.
Stage 2 searches the lexical and dense lists again, restricted to the items of the best documents, and fuses
them into one more ranked list ("routed") that the query engine fuses with the flat lists: a page of a
well-routed document rises, and a page the flat lists rank first keeps its place.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from mmrag_core.storage.names import file_stem
from mmrag_core.query.fusion import reciprocal_rank_fusion
from mmrag_core.storage.items import indexed_text
from mmrag_core.index.lexical import LEXICAL_KINDS, index_terms

ROUTED = "routed"  # the name of the ranked list routing adds
_NAME_SEPARATORS = re.compile(r"[_\-.]+")


def document_title(source_uri: str) -> str:
    """A document's name as words: its file name without extension, separators as spaces."""
    return _NAME_SEPARATORS.sub(" ", file_stem(source_uri))


def document_texts(items: pa.Table, first_pages: int) -> dict[str, str]:
    """doc sha256 -> its title and the indexed text of its first ``first_pages`` pages (0-based pages below
    that), in the order documents first appear in ``items``."""
    cols = items.select(["doc_sha256", "source_uri", "kind", "page", "text"]).to_pydict()
    contexts = items.column("context").to_pylist() if "context" in items.column_names else [None] * items.num_rows
    parts: dict[str, list[str]] = {}
    for doc, uri, kind, page, text, context in zip(cols["doc_sha256"], cols["source_uri"], cols["kind"],
                                                   cols["page"], cols["text"], contexts):
        texts = parts.setdefault(doc, [document_title(uri)])
        if kind in LEXICAL_KINDS and page is not None and page < first_pages and (text or context):
            texts.append(indexed_text(text, context))
    return {doc: "\n".join(t) for doc, t in parts.items()}


class DocumentRouter:
    """BM25 over one text per document (:func:`document_texts`), built in memory when a snapshot is opened
    for querying (one entry per document: small next to the page index)."""

    def __init__(self, docs: list[str], retriever: object | None) -> None:
        self.docs = docs
        self.retriever = retriever  # bm25s.BM25; None when no document has any term

    @classmethod
    def from_items(cls, items: pa.Table, first_pages: int = 3) -> DocumentRouter:
        import bm25s

        texts = document_texts(items, first_pages)
        corpus = [index_terms(t) for t in texts.values()]
        if not any(corpus):
            return cls(list(texts), None)
        retriever = bm25s.BM25(method="lucene")
        retriever.index(corpus, show_progress=False)
        return cls(list(texts), retriever)

    def rank(self, text: str, k: int | None = None) -> list[tuple[str, float]]:
        """(doc sha256, BM25 score) of the documents sharing a term with ``text``, best first."""
        if self.retriever is None:
            return []
        tokens = [t for t in index_terms(text) if t in self.retriever.vocab_dict]
        if not tokens:
            return []
        scores = np.asarray(self.retriever.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: k or len(self.docs)]
        return [(self.docs[i], float(scores[i])) for i in order if scores[i] > 0]


def documents_of(hits: Iterable[tuple[int, float]], doc_of: Callable[[int], str | None]) -> list[tuple[str, float]]:
    """Item hits as a ranking of documents: each document at its best (first) item's place and similarity."""
    seen: dict[str, float] = {}
    for item, sim in hits:
        doc = doc_of(item)
        if doc is not None and doc not in seen:
            seen[doc] = sim
    return list(seen.items())


def choose_documents(router_ranking: Sequence[tuple[str, float]], flat: dict[str, list[tuple[str, float]]],
                     n: int, rrf_k: int = 60) -> list[str]:
    """The ``n`` best documents: the router's; when it finds fewer (the query shares no term with the other
    documents' names and first pages), the best documents of the flat lists, fused by reciprocal rank, fill up.
    The flat lists do not outvote the router: the page they rank first is often on the wrong document's
    look-alike page, which is what routing is for (and the flat lists are fused with the routed one anyway)."""
    chosen = [d for d, _ in router_ranking[:n]]
    if len(chosen) < n:
        ranked = {name: hits for name, hits in flat.items() if hits}
        indexed = {doc: i for i, doc in enumerate(dict.fromkeys(d for hits in ranked.values() for d, _ in hits))}
        names = list(indexed)
        fused = reciprocal_rank_fusion({name: [(indexed[d], s) for d, s in hits] for name, hits in ranked.items()},
                                       k=rrf_k)
        chosen += [d for d in (names[f.id] for f in fused) if d not in chosen][: n - len(chosen)]
    return chosen
