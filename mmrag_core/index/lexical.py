"""The lexical (BM25) index published with every snapshot, built incrementally like the vector shards.

Two parts, so that each indexing run tokenizes only its new items while BM25's statistics always describe
the live items:

- **lexical shards** (``lexical/<id>/tokens.parquet`` + ``shard.json``, written last): the term counts
  of the items one run added, one row per item (``id``, ``terms``, ``tfs``). Shared by later snapshots, never
  rewritten; rows of removed or changed documents stay in them until compaction rewrites the shards with
  the live rows only.
- **the snapshot's BM25 matrix** (``snapshots/<id>/lexical/``): bm25s's precomputed score matrix over the
  live rows of every shard (the snapshot's items), so N, document frequencies and the average length are
  those of the live items, and a removed document cannot come back. Built at publish time from the stored
  term counts (no text is tokenized again), listed in the manifest with sha256 like every other file, and
  memory-mapped at query time.

Which items: chunks and standalone images (their OCR text), by their indexed text (a chunk's context prefix,
when it has one, and its ``text``). Figures and page renders are left out: their text is the page words they
cover, already in the chunks.

Tokenisation (:func:`index_terms`, recorded in the manifest): lower case, runs of letters and digits
(``_`` and punctuation split words, so a file name ``3M_2018_10K`` gives ``3m 2018 10k``), bm25s's English
stop words dropped, and a word mixing letters and digits is also indexed by its letter and digit runs
(``fy2018`` -> ``fy2018 fy 2018``), so "FY2018" matches a page saying "2018" and the other way round.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmrag_core.config import IndexSettings
from mmrag_core.storage.items import ItemKind, indexed_text
from mmrag_core.storage.manifest import LexicalMeta, Manifest
from mmrag_core.storage.names import ids_digest, short_id
from mmrag_core.storage.store import LEXICAL_SHARDS, Store, snapshot_key

log = logging.getLogger(__name__)

LEXICAL = "lexical"
LEXICAL_FORMAT = 1
LEXICAL_KINDS: tuple[str, ...] = (ItemKind.CHUNK, ItemKind.IMAGE)
TOKENIZER: dict = {"name": "alnum-runs", "version": 1, "lower": True, "stopwords": "bm25s.STOPWORDS_EN",
                   "split_letter_digit": True}
BM25_PARAMS: dict = {"method": "lucene", "k1": 1.5, "b": 0.75}
TOKENS_FILE = "tokens.parquet"
MARKER = "shard.json"
IDS_FILE = "ids.npy"  # bm25s document position -> item id
TOKENS_SCHEMA = pa.schema([("id", pa.int64()), ("terms", pa.list_(pa.string())), ("tfs", pa.list_(pa.int32()))])

_WORD = re.compile(r"[^\W_]+")
_RUN = re.compile(r"[^\W\d_]+|\d+")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


STOPWORDS = _stopwords()


def index_terms(text: str) -> list[str]:
    """The terms of ``text`` as the lexical index and its queries see them (see the module docstring)."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        out.append(word)
        runs = _RUN.findall(word)
        if len(runs) > 1:
            out.extend(runs)
    return out


def compatible(meta: LexicalMeta | None) -> bool:
    """Whether a manifest's ``lexical`` entry was built the way this code builds and queries one."""
    return meta is not None and meta.format == LEXICAL_FORMAT and meta.tokenizer == TOKENIZER


# ---- shards: term counts of the items one run added --------------------------------------------------------


@dataclass
class LexicalShard:
    """A stored shard of term counts: ``count`` items, its files with sha256 and size."""

    id: str
    count: int
    files: dict[str, dict] = field(default_factory=dict)  # store key -> {sha256, bytes}

    @property
    def folder(self) -> str:
        return f"{LEXICAL_SHARDS}/{self.id}"

    @property
    def tokens_key(self) -> str:
        """The key of its term counts: as recorded when written (the manifest is the truth), else where it goes."""
        return next((k for k in self.files if k.endswith("/" + TOKENS_FILE)), f"{self.folder}/{TOKENS_FILE}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LexicalShard:
        return cls(**d)


def tokenize_items(items: pa.Table) -> pa.Table:
    """One row of term counts per item of :data:`LEXICAL_KINDS` whose indexed text (its context prefix, when
    it has one, and its text: :func:`~mmrag_core.storage.items.indexed_text`) has any term."""
    cols = items.select(["id", "kind", "text"]).to_pydict()
    contexts = items.column("context").to_pylist() if "context" in items.column_names else [None] * items.num_rows
    ids, terms, tfs = [], [], []
    for item, kind, text, context in zip(cols["id"], cols["kind"], cols["text"], contexts):
        if kind not in LEXICAL_KINDS or not (text or context):
            continue
        counts = Counter(index_terms(indexed_text(text, context)))
        if counts:
            ids.append(int(item))
            terms.append(list(counts))
            tfs.append(list(counts.values()))
    return pa.Table.from_pydict({"id": ids, "terms": terms, "tfs": tfs}, schema=TOKENS_SCHEMA)


def load_shard_marker(store: Store, shard_id: str) -> LexicalShard | None:
    """The finished shard ``shard_id`` (its marker exists), or None."""
    try:
        return LexicalShard.from_dict(json.loads(store.read_bytes(f"{LEXICAL_SHARDS}/{shard_id}/{MARKER}")))
    except FileNotFoundError:
        return None


def save_shard(store: Store, shard_id: str, tokens: pa.Table) -> LexicalShard:
    """Write a shard's term counts, then its marker (a re-run after a crash finds the marker and skips)."""
    buf = io.BytesIO()
    pq.write_table(tokens, buf, compression="zstd")
    data = buf.getvalue()
    shard = LexicalShard(shard_id, tokens.num_rows)
    store.write_bytes(shard.tokens_key, data)
    shard.files = {shard.tokens_key: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    store.write_bytes(f"{shard.folder}/{MARKER}", json.dumps(shard.to_dict(), indent=2).encode())
    return shard


def read_shard(store: Store, shard: LexicalShard) -> pa.Table:
    """A shard's rows; remote files come through the download cache, checked by sha256."""
    return pq.read_table(store.local_file(shard.tokens_key, shard.files[shard.tokens_key]["sha256"]))


def ensure_shard(store: Store, items: pa.Table, record_key: str) -> LexicalShard | None:
    """The shard of ``items``' term counts (tokenized now unless a finished copy is stored); None when no
    item has any lexical text. Its id follows from the items' ids and the record key, so a re-run plans it
    again and finds it."""
    ids = np.sort(items.column("id").to_numpy()) if items.num_rows else np.empty(0, np.int64)
    if not len(ids):
        return None
    shard_id = short_id(LEXICAL, LEXICAL_FORMAT, TOKENIZER, record_key, ids_digest(ids))
    done = load_shard_marker(store, shard_id)
    if done is not None:
        return done
    tokens = tokenize_items(items)
    return save_shard(store, shard_id, tokens) if tokens.num_rows else None


# ---- the snapshot's BM25 index over the live rows ----------------------------------------------------------


def live_rows(store: Store, shards: Iterable[LexicalShard], item_ids: np.ndarray) -> pa.Table:
    """Every shard's rows of the items in ``item_ids`` (the snapshot's items), in shard order."""
    keep = pa.array(np.asarray(item_ids, dtype=np.int64))
    parts = [t.filter(pc.is_in(t.column("id"), value_set=keep)) for t in (read_shard(store, s) for s in shards)]
    return pa.concat_tables(parts).combine_chunks() if parts else TOKENS_SCHEMA.empty_table()


@dataclass
class LexicalState:
    """The lexical index a snapshot publishes: its shards and the BM25 files built over their live rows."""

    shards: list[LexicalShard]
    files: dict[str, bytes]  # the snapshot's own BM25 files (name -> bytes); empty when nothing is indexed
    stats: dict  # count (live items), stored (rows in shards), vocabulary, avgdl, seconds_build
    compacted: str | None = None  # why the shards were merged into one of live rows, if they were

    def to_manifest(self, snapshot_id: str) -> LexicalMeta:
        return LexicalMeta(format=LEXICAL_FORMAT, tokenizer=TOKENIZER, **BM25_PARAMS,
                           shards=[s.to_dict() for s in self.shards],
                           files={name: snapshot_key(snapshot_id, f"{LEXICAL}/{name}") for name in sorted(self.files)},
                           **self.stats, tombstoned=self.stats["stored"] - self.stats["count"],
                           **({"compacted": self.compacted} if self.compacted else {}))


def build_bm25(rows: pa.Table) -> tuple[dict[str, bytes], dict]:
    """bm25s's index over ``rows`` (term counts), saved as files (name -> bytes), and its statistics."""
    import bm25s

    if rows.num_rows == 0:
        return {}, {"count": 0, "vocabulary": 0, "avgdl": 0.0}
    terms = rows.column("terms").combine_chunks()
    encoded = pc.dictionary_encode(terms.flatten())
    term_ids = encoded.indices.to_numpy().astype(np.int64)
    tfs = rows.column("tfs").combine_chunks().flatten().to_numpy().astype(np.int64)
    offsets = terms.offsets.to_numpy()
    offsets = offsets - offsets[0]
    # bm25s counts the occurrences of each term id in a document's list: repeat each term tf times.
    expanded = np.repeat(term_ids, tfs)
    ends = np.concatenate([[0], np.cumsum(tfs)])[offsets]
    corpus = [expanded[ends[i]:ends[i + 1]].tolist() for i in range(rows.num_rows)]
    vocab = {term: n for n, term in enumerate(encoded.dictionary.to_pylist())}
    retriever = bm25s.BM25(**BM25_PARAMS)
    retriever.index((corpus, vocab), create_empty_token=False, show_progress=False)
    files = {}
    with tempfile.TemporaryDirectory(prefix="mmrag-bm25-") as tmp:
        retriever.save(tmp, show_progress=False)
        np.save(Path(tmp) / IDS_FILE, rows.column("id").to_numpy().astype(np.int64))
        for path in sorted(Path(tmp).iterdir()):
            files[path.name] = path.read_bytes()
    stats = {"count": rows.num_rows, "vocabulary": len(vocab), "avgdl": round(float(np.diff(ends).mean()), 3)}
    return files, stats


def compaction_reason(shards: int, stored: int, live: int, settings: IndexSettings) -> str | None:
    """Why lexical shards should be merged into one of live rows (the vector spaces' thresholds), or None."""
    if shards > settings.compact_max_shards:
        return f"{shards} lexical shards > compact_max_shards={settings.compact_max_shards}"
    if stored and (stored - live) / stored > settings.compact_tombstone_fraction:
        return (f"{stored - live} of {stored} lexical rows dead > "
                f"compact_tombstone_fraction={settings.compact_tombstone_fraction}")
    return None


def build_state(store: Store, shards: list[LexicalShard], item_ids: np.ndarray, settings: IndexSettings | None = None,
                compact: str | None = None) -> LexicalState:
    """The lexical index of a snapshot whose items are ``item_ids``: its shards and the BM25 files over their
    live rows. The shards are merged into one holding only the live rows when ``compact`` gives a reason, or
    when ``settings``' compaction thresholds say so."""
    t0 = time.perf_counter()
    rows = live_rows(store, shards, item_ids)
    stored = sum(s.count for s in shards)
    reason = compact or (compaction_reason(len(shards), stored, rows.num_rows, settings) if settings else None)
    if reason and shards and (len(shards) > 1 or stored != rows.num_rows):
        shard_id = short_id("lexical-compact", [s.id for s in shards], ids_digest(rows.column("id").to_numpy()))
        shards = [load_shard_marker(store, shard_id) or save_shard(store, shard_id, rows)]
        stored = rows.num_rows
    else:
        reason = None
    files, stats = build_bm25(rows)
    stats.update(stored=stored, seconds_build=round(time.perf_counter() - t0, 3))
    return LexicalState(shards, files, stats, reason)


def lexical_for_run(store: Store, items: pa.Table, new_shas: set[str], parent: Manifest | None,
                    record_key: str) -> list[LexicalShard]:
    """The lexical shards of a snapshot with ``items``: the parent's (when built the same way) plus one
    shard of the new documents' items. Without a compatible parent index, every item is tokenized."""
    parent_meta = parent.lexical if parent else None
    if compatible(parent_meta):
        shards = [LexicalShard.from_dict(s) for s in parent_meta.shards]
        new = items.filter(pc.is_in(items.column("doc_sha256"), value_set=pa.array(sorted(new_shas), pa.string())))
    else:
        shards, new = [], items
    new = new.filter(pc.is_in(new.column("kind"), value_set=pa.array(LEXICAL_KINDS, pa.string())))
    shard = ensure_shard(store, new, record_key)
    return shards + ([shard] if shard is not None else [])


# ---- query time --------------------------------------------------------------------------------------------


class LexicalIndex:
    """A snapshot's BM25 index, memory-mapped: ``search`` ranks the live items by BM25 (bm25s)."""

    def __init__(self, retriever: object | None, ids: np.ndarray, meta: LexicalMeta) -> None:
        self.retriever = retriever  # bm25s.BM25, None when the snapshot has no lexical text
        self.ids = np.asarray(ids, dtype=np.int64)
        self.meta = meta
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def open(cls, store: Store, manifest: Manifest) -> LexicalIndex | None:
        """The lexical index of a verified snapshot; None (with a warning) when it has none this code reads."""
        import bm25s

        meta = manifest.lexical
        if not compatible(meta):
            if meta:
                log.warning("snapshot %s: lexical index built with another format or tokenizer; not searched "
                            "(re-index to rebuild it)", manifest.id)
            return None
        if not meta.files:
            return cls(None, np.empty(0, np.int64), meta)
        paths = {name: store.local_file(key, manifest.files[key].sha256) for name, key in meta.files.items()}
        # bm25s reads fixed names under one folder; cached remote copies are named by their hash, so each is
        # given by its absolute path (pathlib ignores the folder for an absolute name).
        retriever = bm25s.BM25.load(
            paths["params.index.json"].parent, data_name=str(paths["data.csc.index.npy"]),
            indices_name=str(paths["indices.csc.index.npy"]), indptr_name=str(paths["indptr.csc.index.npy"]),
            vocab_name=str(paths["vocab.index.json"]), params_name=str(paths["params.index.json"]),
            mmap=True, show_progress=False)
        return cls(retriever, np.load(paths[IDS_FILE]), meta)

    def positions(self, item_ids: Iterable[int]) -> np.ndarray:
        """The index positions of those of ``item_ids`` the index holds."""
        wanted = np.fromiter(item_ids, dtype=np.int64) if not isinstance(item_ids, np.ndarray) else item_ids
        wanted = wanted.astype(np.int64, copy=False)
        if not len(self._sorted) or not len(wanted):
            return np.empty(0, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return self._order[at[self._sorted[at] == wanted]]

    def search(self, text: str, k: int = 10, allowed_ids: Iterable[int] | None = None,
               denied_ids: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best items for ``text`` as (item id, BM25 score), best first; only items sharing a term
        with the query, only among ``allowed_ids`` and never ``denied_ids`` when given (the mask applies before
        top-k is taken). Ties keep index order."""
        if self.retriever is None or k <= 0:
            return []
        vocab = self.retriever.vocab_dict
        tokens = [t for t in index_terms(text) if t in vocab]
        if not tokens:
            return []
        mask = None
        if allowed_ids is not None:
            mask = np.zeros(len(self.ids), dtype=np.float32)
            mask[self.positions(allowed_ids)] = 1.0
        if denied_ids is not None:
            mask = np.ones(len(self.ids), dtype=np.float32) if mask is None else mask
            mask[self.positions(denied_ids)] = 0.0
        scores = np.asarray(self.retriever.get_scores(tokens, weight_mask=mask), dtype=np.float64)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        order = hits[np.lexsort((hits, -scores[hits]))]
        return [(int(self.ids[i]), float(scores[i])) for i in order]
