"""Training queries for the retriever, each tied to its positive page(s) in a published snapshot.

Two sources. *Labelled*: a queries file and qrels (``<doc>#p<page>``, 0-based), optionally with an evidence file
(FinanceBench layout) whose evidence text picks the positive chunk and guards against false negatives.
*Self-supervised* (no labels, so a model trained on them alone can ship under the project's licence), from the
pages themselves: a page's headings with its document's issuer and period -> that page; a statement line item
(:mod:`mmrag_core.query.vocabulary`) asked with an analyst's word -> the statement page that prints it; and, from
any corpus, a sentence of a page -> that page (:func:`passage_examples`, generic prose).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from mmrag_core.query.vocabulary import STATEMENTS, norm, statement_of, terms_on

_E = TypeVar("_E")  # an example type with a ``query_id``
_WORD = re.compile(r"\w+")
_GENERIC = re.compile(r"^(table of contents|index|part [ivx]+|item \d+[a-z]?\.?|notes? to .*|in millions.*|"
                      r"(january|february|march|april|may|june|july|august|september|october|november|december).*|"
                      r"\(?unaudited\)?|continued|page \d+|\d.*)$")
_SUFFIX = re.compile(r"[,.]?\s*\b(inc|incorporated|corp|corporation|company|co|ltd|plc|llc|n\.?v|s\.?a)\b\.?",
                     re.IGNORECASE)


@dataclass
class Page:
    """One PDF page of a snapshot: its chunks (id, text) and its outline (document facts | headings)."""

    doc: str
    page: int
    chunks: list[tuple[int, str]] = field(default_factory=list)
    outline: str | None = None

    @property
    def text(self) -> str:
        """The page's chunk texts, joined (chunks overlap, which is harmless for matching)."""
        return "\n".join(t for _, t in self.chunks)


@dataclass(frozen=True)
class Example:
    """A training query with its positive page. ``positive``: the page's chunk that best matches the query's
    hint (the evidence, the heading, the line item); ``outline``: the page's outline, a second positive for the
    outline list. ``guards``: what makes another page a false negative (:func:`is_false_negative`)."""

    query_id: str
    query: str
    doc: str
    page: int
    positive: str
    outline: str | None
    guards: tuple[str, ...]
    source: str  # labelled | heading | line_item | passage
    pages: tuple[int, ...] = ()  # every positive page of the query in ``doc`` (labelled queries may have several)


def doc_name(source_uri: str) -> str:
    """The name qrels use for a document: its file name without the extension."""
    return Path(source_uri).stem


def corpus_pages(items: pa.Table) -> dict[tuple[str, int], Page]:
    """Group a snapshot's chunk and outline items by (document name, page)."""
    cols = items.select(["id", "kind", "source_uri", "page", "text"]).to_pydict()
    pages: dict[tuple[str, int], Page] = {}
    for iid, kind, uri, page, text in zip(cols["id"], cols["kind"], cols["source_uri"], cols["page"], cols["text"],
                                          strict=True):
        if kind not in ("chunk", "outline") or page is None or not text:
            continue
        key = (doc_name(uri), int(page))
        p = pages.setdefault(key, Page(*key))
        if kind == "outline":
            p.outline = text
        else:
            p.chunks.append((int(iid), text))
    return pages


def best_chunk(page: Page, hint: str) -> str:
    """The page's chunk sharing the most distinct words with ``hint`` (the first chunk on a tie)."""
    want = {w for w in _WORD.findall(hint.lower()) if len(w) > 2}
    best, score = page.chunks[0][1], -1
    for _, text in page.chunks:
        s = len(want & set(_WORD.findall(text.lower())))
        if s > score:
            best, score = text, s
    return best


def _qid(*parts: object) -> str:
    return "ss-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12]


def _pick(options: tuple[str, ...] | list[str], key: str) -> str:
    """A deterministic choice among ``options`` (varied across keys, stable across runs)."""
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def doc_facts(outlines: list[str]) -> tuple[list[str], int]:
    """The leading outline fields every page of a document shares (issuer, period, form) and their count."""
    fields = [o.split(" | ") for o in outlines]
    n = 0
    while fields and all(len(f) > n + 1 for f in fields) and len({f[n] for f in fields}) == 1:
        n += 1
    return (fields[0][:n] if fields else []), n


def issuer_name(facts: list[str], doc: str) -> str:
    """A question's name for the issuer: the outline's first fact without legal suffixes, else the file name's
    first word."""
    raw = facts[0] if facts else doc.split("_")[0]
    name = _SUFFIX.sub("", raw).replace(".COM", "").replace(".com", "").strip(" ,.")
    return name.title() if name.isupper() else name


def period_name(facts: list[str], doc: str) -> str:
    """The document's period as a question says it (``FY2019``, ``Q2 2023``), from its facts or file name."""
    text = " ".join(facts[1:]) + " " + doc
    m = re.search(r"\b(FY\d{4}|Q[1-4] ?(?:FY)?\d{4})\b", text) or re.search(r"(?<!\d)(20\d\d|19\d\d)(?!\d)", text)
    if not m:
        return ""
    return m.group(1) if m.group(1).startswith(("FY", "Q")) else f"FY{m.group(1)}"


def pages_by_doc(pages: dict[tuple[str, int], Page]) -> dict[str, list[Page]]:
    """The pages that have text, grouped by document."""
    by_doc: dict[str, list[Page]] = defaultdict(list)
    for p in pages.values():
        if p.chunks:
            by_doc[p.doc].append(p)
    return by_doc


def self_supervised(pages: dict[tuple[str, int], Page], max_heading_per_doc: int = 60) -> list[Example]:
    """Heading and line-item examples from the pages of a snapshot (no labels)."""
    by_doc = pages_by_doc(pages)
    out: list[Example] = []
    for doc, doc_pages in sorted(by_doc.items()):
        doc_pages.sort(key=lambda p: p.page)
        facts, n_facts = doc_facts([p.outline for p in doc_pages if p.outline])
        issuer, period = issuer_name(facts, doc), period_name(facts, doc)
        headings_of = {p.page: (p.outline or "").split(" | ")[n_facts:] for p in doc_pages}
        heading_examples = []
        for p in doc_pages:
            out.extend(_line_item_examples(p, headings_of[p.page], issuer, period))
            heading_examples.extend(_heading_examples(p, headings_of[p.page], issuer, period))
        if len(heading_examples) > max_heading_per_doc:  # an even spread over the document
            step = len(heading_examples) / max_heading_per_doc
            heading_examples = [heading_examples[int(i * step)] for i in range(max_heading_per_doc)]
        out.extend(heading_examples)
    return out


def _good_heading(h: str) -> bool:
    words = [w for w in _WORD.findall(h) if w.isalpha() and len(w) > 2]
    return 8 <= len(h) <= 90 and len(words) >= 2 and not _GENERIC.match(norm(h))


def _heading_examples(p: Page, headings: list[str], issuer: str, period: str) -> list[Example]:
    good = [h.strip() for h in headings if _good_heading(h.strip())]
    if not good:
        return []
    h = max(good, key=len) if len(good) > 1 else good[0]
    key = f"{p.doc}#{p.page}#{h}"
    template = _pick(("{issuer} {period} {h}", "What does {issuer}'s report for {period} say about {h}?",
                      "{h} - {issuer} {period}", "Where is the {h} of {issuer} ({period})?"), key)
    query = template.format(issuer=issuer, period=period, h=h.lower() if h.isupper() else h)
    return [Example(_qid(key), query, p.doc, p.page, best_chunk(p, h), p.outline, (f"heading:{norm(h)}",),
                    "heading", (p.page,))]


def _line_item_examples(p: Page, headings: list[str], issuer: str, period: str, most: int = 2) -> list[Example]:
    kind = statement_of(" ".join(headings))
    if kind is None:
        return []
    out = []
    for term, label in terms_on(p.text, kind)[:most]:
        key = f"{p.doc}#{p.page}#{label}"
        ask, statement = _pick(term.asks, key), _pick(STATEMENTS[kind][0], key + "s")
        template = _pick(("What was {issuer}'s {period} {ask}? Use the {statement}.",
                          "What is the {period} {ask} (in USD millions) for {issuer}? Answer from the {statement}.",
                          "{issuer} {ask} {period} according to its {statement}",
                          "Using the {statement}, how much was {issuer}'s {ask} in {period}?"), key + "t")
        query = template.format(issuer=issuer, period=period, ask=ask, statement=statement)
        out.append(Example(_qid(key), query, p.doc, p.page, best_chunk(p, label), p.outline,
                           (f"statement:{kind}:{label}",), "line_item", (p.page,)))
    return out


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def passage_examples(pages: dict[tuple[str, int], Page], per_doc: int = 60, min_words: int = 10,
                     max_words: int = 40) -> list[Example]:
    """Generic pairs from any corpus (no labels): a sentence of a page -> that page, the chunk holding it the
    positive. Mixed into a domain's pairs (headings, line items) they hold the projection to the base space on
    plain prose, which is what a figure caption is and what domain pairs never touch. At most ``per_doc`` per
    document, one per page, spread over the document; a page holding the same sentence is not a negative."""
    by_doc = pages_by_doc(pages)
    out: list[Example] = []
    for doc, doc_pages in sorted(by_doc.items()):
        found = []
        for p in sorted(doc_pages, key=lambda p: p.page):
            sentences = sorted({s for _, t in p.chunks for s in _SENTENCE.split(" ".join(t.split()))
                                if min_words <= len(s.split()) <= max_words
                                and sum(c.isalpha() for c in s) > 0.7 * len(s)})
            if sentences:
                s = _pick(sentences, f"{doc}#{p.page}")
                found.append(Example(_qid(doc, p.page, s), s, doc, p.page, best_chunk(p, s), p.outline,
                                     (f"text:{norm(s)}",), "passage", (p.page,)))
        if len(found) > per_doc:
            step = len(found) / per_doc
            found = [found[int(i * step)] for i in range(per_doc)]
        out.extend(found)
    return out


def labelled(pages: dict[tuple[str, int], Page], queries: str | Path, qrels: str | Path,
             evidence: str | Path | None = None) -> list[Example]:
    """One example per (query, relevant page present in the snapshot); the evidence file (query_id, doc_name,
    page, evidence_text), when given, picks the positive chunk and guards against false negatives."""
    texts = {}
    answers = {}
    for line in Path(queries).read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            texts[str(q["query_id"])] = q["text"]
            answers[str(q["query_id"])] = str(q.get("answer") or "")
    evid: dict[tuple[str, str, int], str] = {}
    if evidence and Path(evidence).is_file():
        for line in Path(evidence).read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                evid[(str(e["query_id"]), e["doc_name"], int(e["page"]))] = e.get("evidence_text") or ""
    rel: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for line in Path(qrels).read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 2 and "#p" in parts[1] and (len(parts) < 3 or float(parts[2] or 1) > 0):
            doc, _, page = parts[1].rpartition("#p")
            rel[parts[0]].append((doc, int(page)))
    out = []
    for qid, targets in sorted(rel.items()):
        if qid not in texts:
            continue
        for doc, page in targets:
            p = pages.get((doc, page))
            if p is None or not p.chunks:
                continue
            hint = evid.get((qid, doc, page)) or texts[qid]
            guards = tuple(g for g in (_answer_guard(answers[qid]), *_evidence_guards(evid, qid)) if g)
            same_doc = tuple(sorted(pg for d, pg in targets if d == doc))
            out.append(Example(qid, texts[qid], doc, page, best_chunk(p, hint), p.outline, guards, "labelled",
                               same_doc))
    return out


def _answer_guard(answer: str) -> str | None:
    """An answer worth looking for on a page: a number with 3+ digits as printed (a ratio like 0.66 is everywhere)."""
    digits = re.sub(r"[^\d.]", "", answer)
    return f"text:{norm(answer).strip('$ ')}" if sum(c.isdigit() for c in digits) >= 3 else None


def _evidence_guards(evid: dict[tuple[str, str, int], str], qid: str) -> Iterable[str]:
    for (q, _, _), text in evid.items():
        if q == qid and text.strip():
            yield f"evidence:{norm(text)[:2000]}"


def is_false_negative(page: Page, guards: tuple[str, ...]) -> bool:
    """Whether a candidate negative page may hold the answer after all. Guards: ``text:S`` (the page's text holds
    S), ``heading:H`` (its outline holds heading H), ``statement:KIND:LABEL`` (it is a KIND statement printing
    LABEL), ``evidence:E`` (it holds most of the evidence's distinctive lines)."""
    text = norm(page.text)
    outline = norm(page.outline or "")
    for g in guards:
        kind, _, arg = g.partition(":")
        if kind == "text" and arg and arg in text:
            return True
        if kind == "heading" and arg and arg in outline:
            return True
        if kind == "statement":
            statement, _, label = arg.partition(":")
            if statement_of(outline) == statement and label in text:
                return True
        if kind == "evidence":
            pieces = [x for x in _split_evidence(arg) if len(x) >= 12]
            if pieces and sum(x in text for x in pieces) >= max(1, len(pieces) // 2):
                return True
    return False


def _split_evidence(text: str) -> list[str]:
    """Evidence normalised to one line: cut into 8-word pieces so that a page quoting it still matches."""
    words = text.split()
    return [" ".join(words[i:i + 8]) for i in range(0, max(1, len(words) - 7), 8)]


def split(examples: list[_E], val_fraction: float, seed: int = 0) -> tuple[list[_E], list[_E]]:
    """Train and validation examples (anything with a ``query_id``), split by query id (all pages of a query on
    one side), stable across runs."""
    def held_out(qid: str) -> bool:
        h = int(hashlib.sha256(f"{seed}|{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return h < val_fraction

    train = [e for e in examples if not held_out(e.query_id)]
    val = [e for e in examples if held_out(e.query_id)]
    return train, val


def fingerprint(examples: list[Example]) -> str:
    """A digest of the examples (order included): what a mined table and a model are keyed on."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(asdict(e), sort_keys=True).encode())
    return h.hexdigest()[:16]
