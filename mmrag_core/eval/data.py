"""The evaluation's inputs, read and checked in one place: queries (with optional reference answers) and
relevance judgements (qrels), whose ids fix the level (pages or documents) every ranking is made at.

- ``queries.jsonl``: one JSON object a line with at least ``query_id`` and ``text``, and optionally a reference
  ``answer`` (used only by :func:`mmrag_core.eval.answers.evaluate_answers`; other keys ignored).
- ``qrels.tsv``: ``query_id<TAB>corpus_id<TAB>score`` with a header line; ``score`` is a graded relevance
  (> 0 is relevant). A ``corpus_id`` names a page, ``<doc_name>#p<page>`` (``doc_name`` = the file name
  without its extension, ``page`` 0-based; see :func:`mmrag_core.eval.bm25_baseline.page_id`), or a whole
  document, ``<doc_name>``: the level is read from the qrels.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

PAGE_ID = re.compile(r"^.+#p\d+$")

Qrels = dict[str, dict[str, float]]  # query id -> unit id -> relevance grade (> 0)


def _query_lines(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(query id, the line's object) for each line of a queries file, checked: an id, a text, no repeats."""
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid, text = str(obj["query_id"]), obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: a query line needs a JSON object with 'query_id' and 'text' "
                                 f"({e})") from e
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{n}: query {qid} has no text")
            if qid in seen:
                raise ValueError(f"{path}:{n}: query id {qid} is repeated")
            seen.add(qid)
            yield qid, obj


def load_queries(path: str | Path) -> dict[str, str]:
    """Query id -> query text, in file order, from a JSON-lines file."""
    return {qid: obj["text"] for qid, obj in _query_lines(path)}


def load_reference_answers(path: str | Path) -> dict[str, str]:
    """Query id -> reference answer (the optional ``answer`` key of a query line), for the queries that have one."""
    return {qid: str(obj["answer"]) for qid, obj in _query_lines(path)
            if obj.get("answer") is not None and str(obj["answer"]).strip()}


def load_query_field(path: str | Path, key: str) -> dict[str, str]:
    """Query id -> the value of another key of a query line (``question_type``), for the queries that have it."""
    return {qid: str(obj[key]) for qid, obj in _query_lines(path) if obj.get(key) is not None}


def load_qrels(path: str | Path) -> Qrels:
    """Query id -> {corpus id: grade} from a ``query_id<TAB>corpus_id<TAB>score`` file (header line
    optional). Judgements with a score <= 0 (not relevant) are dropped."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if n == 1 and fields[0].strip().lower() == "query_id":
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated fields (query_id, corpus_id, score), "
                                 f"got {len(fields)}")
            qid, cid, score = (x.strip() for x in fields)
            try:
                grade = float(score)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: score {score!r} is not a number") from e
            if grade > 0:
                qrels.setdefault(qid, {})[cid] = grade
    return qrels


def qrels_level(qrels: Qrels) -> str:
    """``"page"`` when every judged id is a page id (``name#p<n>``), ``"doc"`` when none is."""
    ids = [c for judged in qrels.values() for c in judged]
    pages = sum(bool(PAGE_ID.match(c)) for c in ids)
    if ids and pages == len(ids):
        return "page"
    if pages == 0:
        return "doc"
    raise ValueError(f"qrels mix page ids (<doc_name>#p<page>) and document ids: {pages} of {len(ids)} are pages")
