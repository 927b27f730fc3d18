"""A BM25 index over page texts, built from a snapshot's items (bm25s).

For now it is the lexical baseline of retrieval evaluation: it ranks the same pages the dense spaces
find, from the same text. (A later step publishes a lexical index with each snapshot.)

A page's text is the text of its ``chunk`` items in ordinal order, plus the OCR text of a standalone
image (an image file's page has no chunks). Figures are left out: their text is the page words they
cover, already in the chunks. Consecutive chunks overlap (``chunk_overlap`` tokens), so the words at
chunk boundaries are counted twice; that slightly inflates their term frequency and the page length,
and is accepted for a baseline.

Tokenisation: lower case, ``\\w+`` (Unicode word characters), no stemming, no stop words.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmrag_core.storage.items import ItemKind
from mmrag_core.storage.names import file_stem

_TOKEN = re.compile(r"\w+")
PAGE_TEXT_KINDS: tuple[str, ...] = (ItemKind.CHUNK, ItemKind.IMAGE)


def tokenize(text: str) -> list[str]:
    """Lower-case ``\\w+`` tokens."""
    return _TOKEN.findall(text.lower())


def doc_name(source_uri: str) -> str:
    """A document's name: its file name without the extension (``/a/3M_2018_10K.pdf`` -> ``3M_2018_10K``)."""
    return file_stem(source_uri)


def page_id(source_uri: str, page: int) -> str:
    """The id of a page, as evaluation qrels name it: ``<doc_name>#p<page>`` (``page`` 0-based)."""
    return f"{doc_name(source_uri)}#p{int(page)}"


def page_texts(items: pa.Table) -> dict[str, str]:
    """Page id -> the page's text (chunks in ordinal order, then standalone-image OCR text), in the order
    pages first appear in ``items``. Pages without any text are left out."""
    cols = items.select(["kind", "source_uri", "page", "ordinal", "text"]).to_pydict()
    parts: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for kind, uri, page, ordinal, text in zip(cols["kind"], cols["source_uri"], cols["page"], cols["ordinal"],
                                              cols["text"]):
        if kind in PAGE_TEXT_KINDS and text and text.strip():
            parts[page_id(uri, page)].append((PAGE_TEXT_KINDS.index(kind), int(ordinal or 0), text))
    return {pid: "\n".join(t for _, _, t in sorted(p)) for pid, p in parts.items()}


@dataclass
class PageBM25:
    """BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) over page texts."""

    page_ids: list[str]
    retriever: object  # bm25s.BM25

    @classmethod
    def from_texts(cls, texts: dict[str, str], k1: float = 1.5, b: float = 0.75) -> PageBM25:
        import bm25s

        if not texts:
            raise ValueError("no page text to index")
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index([tokenize(t) for t in texts.values()], show_progress=False)
        return cls(list(texts), retriever)

    @classmethod
    def from_items(cls, items: pa.Table, **params: float) -> PageBM25:
        """Index the page texts of a snapshot's items (see :func:`page_texts`)."""
        return cls.from_texts(page_texts(items), **params)

    def search(self, text: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best pages for ``text`` as (page id, score), best first; only pages sharing a term
        with the query. Ties keep index order, so results are deterministic."""
        tokens = [t for t in tokenize(text) if t in self.retriever.vocab_dict]
        if not tokens:
            return []
        scores = np.asarray(self.retriever.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.page_ids[i], float(scores[i])) for i in order if scores[i] > 0]
