"""Training pairs of the image space, from a published snapshot: a text that describes a figure -> that figure,
with the other figures of the same document as hard negatives (they share its issuer, period and style, so they
are what a query confuses it with).

The texts come from the corpus itself (no labels): the figure's generated ``caption`` (BLIP-2, when captioning
was on), the words printed inside it (its ``text``: text layer or OCR), and the text of its page next to it (a
caption line such as "Figure 3: ..." or "Chart: ...", else the nearest chunk). Figures are named by a ref,
``figure:<doc sha256>:<item key>``, whose pixels live in the document's stored record (:func:`load_figure_images`).
The pairs are kept in the store as Parquet, ``learn/figure_pairs/<fingerprint>.parquet``.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmrag_core.learn.pairs import doc_name, fingerprint, split
from mmrag_core.storage.store import doc_key

PAIRS_PREFIX = "learn/figure_pairs"
FIGURE_KINDS = ("figure", "image")  # pictures a text describes; page renders are whole pages, not figures
MIN_CHARS = 8  # a shorter text says too little to pick a figure
MAX_WORDS = 48  # CLIP's text tower reads 77 tokens
_CAPTION_LINE = re.compile(r"^\s*(fig(ure)?|chart|graph|exhibit|diagram)\b\.?\s*[\w.-]{0,6}\s*[:.\-\u2013\u2014]",
                           re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class FigureExample:
    """A text describing a figure. ``source``: caption | figure_text | page_text."""

    query_id: str
    query: str
    source: str
    doc: str
    page: int
    ref: str
    doc_sha256: str


def figure_ref(doc_sha256: str, item_key: int) -> str:
    """The name of a figure in training rows: its document and its record's item id."""
    return f"figure:{doc_sha256}:{int(item_key)}"


def _clip_words(text: str | None) -> str:
    words = _SPACES.sub(" ", text or "").strip().split(" ")
    return " ".join(words[:MAX_WORDS]).strip()


def _centre_y(bbox: list | None) -> float | None:
    return None if not bbox else (float(bbox[1]) + float(bbox[3])) / 2


def _page_texts(figures: list[dict], chunks: list[dict]) -> list[str | None]:
    """Per figure of one page (in reading order, top to bottom), the page text next to it: the page's caption
    lines matched in order when there is one per figure, else the chunk whose box centre is nearest."""
    lines = [ln.strip() for c in chunks for ln in (c["text"] or "").splitlines() if _CAPTION_LINE.match(ln)]
    if lines and len(lines) == len(figures):
        return lines
    out: list[str | None] = []
    for f in figures:
        fy = _centre_y(f["bbox"])
        placed = [(abs(_centre_y(c["bbox"]) - fy), i) for i, c in enumerate(chunks)
                  if fy is not None and c["bbox"]]
        best = min(placed)[1] if placed else (0 if len(chunks) == 1 else None)
        out.append(None if best is None else chunks[best]["text"])
    return out


def figure_examples(items: pa.Table) -> list[FigureExample]:
    """Every (text, figure) pair the snapshot's items offer, deduplicated per figure, in a stable order."""
    if "item_key" not in items.column_names:
        raise ValueError("this snapshot's items have no item_key column (an old snapshot): re-index to fine-tune "
                         "the image space")
    cols = ["kind", "source_uri", "doc_sha256", "page", "bbox", "text", "caption", "item_key"]
    rows = items.select(cols).to_pylist()
    by_page: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: {"figures": [], "chunks": []})
    for r in rows:
        if r["page"] is None:
            continue
        slot = "figures" if r["kind"] in FIGURE_KINDS else "chunks" if r["kind"] == "chunk" else None
        if slot:
            by_page[(r["doc_sha256"], int(r["page"]))][slot].append(r)
    out: list[FigureExample] = []
    for (sha, page), group in sorted(by_page.items()):
        figures = sorted(group["figures"], key=lambda f: (_centre_y(f["bbox"]) or 0.0, f["item_key"]))
        if not figures:
            continue
        near = _page_texts(figures, group["chunks"])
        for f, page_text in zip(figures, near, strict=True):
            ref = figure_ref(sha, f["item_key"])
            seen: set[str] = set()
            for source, text in (("caption", f["caption"]), ("figure_text", f["text"]), ("page_text", page_text)):
                query = _clip_words(text)
                if len(query) < MIN_CHARS or query.lower() in seen:
                    continue
                seen.add(query.lower())
                qid = "fig-" + hashlib.sha256(f"{ref}|{source}".encode()).hexdigest()[:12]
                out.append(FigureExample(qid, query, source, doc_name(f["source_uri"]), page, ref, sha))
    return out


def figure_rows(examples: list[FigureExample], per_query: int) -> list[dict]:
    """Training rows (the mined-row layout the training loop reads, ``unit`` naming the figure): per example up
    to ``per_query`` other figures of its document as hard negatives, nearest pages first; a figure described by
    the same text is no negative (it would be a right answer)."""
    figures_of: dict[str, dict[str, int]] = defaultdict(dict)  # doc sha -> ref -> page
    texts_of: dict[str, set[str]] = defaultdict(set)
    for e in examples:
        figures_of[e.doc_sha256][e.ref] = e.page
        texts_of[e.ref].add(e.query.lower())
    rows = []
    for e in examples:
        base = {"query_id": e.query_id, "query": e.query, "source": e.source, "doc": e.doc, "page": e.page,
                "positive": e.ref, "outline": None, "unit": e.ref}
        others = sorted((abs(pg - e.page), ref) for ref, pg in figures_of[e.doc_sha256].items()
                        if ref != e.ref and e.query.lower() not in texts_of[ref])
        picked = [ref for _, ref in others[:per_query]]
        if not picked:
            rows.append({**base, "negative": None, "negative_unit": None, "negative_doc": None,
                         "negative_page": None})
        for ref in picked:
            rows.append({**base, "negative": ref, "negative_unit": ref, "negative_doc": e.doc,
                         "negative_page": figures_of[e.doc_sha256][ref]})
    return rows


def pairs_to_store(store, examples: list[FigureExample], per_query: int, snapshot_id: str) -> tuple[str, list[dict]]:
    """The rows of ``examples``, kept once in the store (keyed on the examples and ``per_query``); their key."""
    fp = hashlib.sha256(f"{fingerprint(examples)}|{per_query}".encode()).hexdigest()[:16]
    key = f"{PAIRS_PREFIX}/{fp}.parquet"
    if store.exists(key):
        return key, store.read_parquet(key).to_pylist()
    rows = figure_rows(examples, per_query)
    meta = {"fingerprint": fp, "snapshot": snapshot_id, "examples": len(examples), "per_query": per_query,
            "sources": sorted({e.source for e in examples})}
    table = pa.Table.from_pylist(rows).replace_schema_metadata({"mmrag.figure_pairs": json.dumps(meta)})
    store.write_parquet(key, table)
    return key, rows


def split_figures(examples: list[FigureExample], val_fraction: float,
                  seed: int = 0) -> tuple[list[FigureExample], list[FigureExample]]:
    """Train and validation examples, split by query (at least one held out)."""
    train, val = split(examples, val_fraction, seed)
    if not val:
        val, train = train[-1:], train[:-1]
    return train, val


def load_figure_images(store, refs: list[str]) -> dict[str, bytes]:
    """The PNG bytes of figures given by ref, read from their documents' stored records (one read per document)."""
    by_doc: dict[str, list[int]] = defaultdict(list)
    for ref in refs:
        _, sha, key = ref.split(":")
        by_doc[sha].append(int(key))
    out: dict[str, bytes] = {}
    for sha, keys in by_doc.items():
        with store.open(doc_key(sha)) as f:
            table = pq.read_table(f, columns=["id", "image_png"])
        table = table.filter(pc.is_in(table.column("id"), pa.array(keys, pa.int64())))
        for key, png in zip(table.column("id").to_pylist(), table.column("image_png").to_pylist(), strict=True):
            if png:
                out[figure_ref(sha, key)] = png
    missing = [r for r in refs if r not in out]
    if missing:
        raise FileNotFoundError(f"{len(missing)} figure(s) have no stored image, e.g. {missing[0]} "
                                "(their document's record is gone: re-index)")
    return out
