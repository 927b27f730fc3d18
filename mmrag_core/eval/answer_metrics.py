"""Answer quality against a reference answer, and citation quality against relevance judgements.

- exact match: equal after normalising (lower case, punctuation, articles and extra spaces removed);
- number match: every number of the reference is in the answer, where two numbers agree when one is the
  other rounded to its stated precision ("$1,577 million" ~ "1577.00"; "24.3" ~ "24.26"; "1.9%" ~ "1.9"),
  also across a scale word ("$1.8 bn" ~ "1,800 million"). Not applicable (None) when the reference has no
  number; financial questions mostly ask for one, which exact match rarely credits;
- ROUGE-L F1: longest common subsequence of the normalised word sequences, harmonic mean of its
  precision (over the answer) and recall (over the reference);
- citation precision: the fraction of the answer's citations that name a source on a relevant page
  (``<doc_name>#p<page>``, as in qrels); a citation naming no source counts as wrong. None without citations.
"""
from __future__ import annotations

import re
import string
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mmrag_core.eval.bm25_baseline import doc_name, page_id

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WORD = re.compile(r"\w+")
# A number not glued to letters ("FY2018", "3M" are not numbers), optionally signed, with thousands
# separators and decimals, then an optional scale: a word ("1.8 billion", "1.8 bn") or "mn"/"bn" ("2,018mn").
_NUMBER = re.compile(
    r"(?<![\w.])([-−]?)\$?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
    r"(?:\s*(thousand|million|billion|trillion|mn|bn)\b|(mn|bn)\b|(?!\w))",
    re.IGNORECASE,
)
_SCALES = {"thousand": 1e3, "million": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD normalisation)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


@dataclass(frozen=True)
class Number:
    """A number as written: its value, the unit of its last stated digit, and its scale word's factor."""

    value: float
    unit: float  # 1 for "1577", 0.01 for "1577.00"
    scale: float = 1.0

    def agrees(self, other: Number) -> bool:
        """Equal up to half the coarser unit, as written or both with their scales applied."""
        pairs = [(self.value, self.unit, other.value, other.unit)]
        if self.scale != 1.0 or other.scale != 1.0:
            pairs.append((self.value * self.scale, self.unit * self.scale, other.value * other.scale,
                          other.unit * other.scale))
        return any(abs(a - b) <= max(ua, ub) / 2 + 1e-9 * max(abs(a), abs(b), 1.0) for a, ua, b, ub in pairs)


def numbers_in(text: str) -> list[Number]:
    """The numbers written in ``text`` (currency signs, thousands separators and % ignored)."""
    out = []
    for sign, whole, decimals, word, suffix in _NUMBER.findall(text):
        value = float(whole.replace(",", "") + (f".{decimals}" if decimals else ""))
        scale = _SCALES.get((word or suffix).lower(), 1.0)
        out.append(Number(-value if sign else value, 10.0 ** -len(decimals), scale))
    return out


def number_match(prediction: str, reference: str) -> float | None:
    """1.0 when every number of ``reference`` agrees with one in ``prediction``; None when it has none."""
    wanted = numbers_in(reference)
    if not wanted:
        return None
    found = numbers_in(prediction)
    return float(all(any(w.agrees(f) for f in found) for w in wanted))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words; 0 when either side is empty."""
    p, r = _WORD.findall(normalize_answer(prediction)), _WORD.findall(normalize_answer(reference))
    lcs = lcs_length(p, r) if p and r else 0
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def citation_precision(citations: Sequence[int], source_units: dict[int, str],
                       relevant: Collection[str]) -> float | None:
    """The fraction of ``citations`` (source numbers) whose source's unit (page id or document name) is in
    ``relevant``; a number missing from ``source_units`` (it names no source) counts as wrong. None without
    citations."""
    if not citations:
        return None
    return sum(source_units.get(n) in relevant for n in citations) / len(citations)


def score_answer(answer, reference: str | None, relevant: Collection[str] | None, level: str = "page") -> dict:
    """The metrics of one :class:`~mmrag_core.answer.answering.Answer`: the reference-based ones None without a
    reference, citation precision None without judgements (``relevant``: page ids, or document names when
    ``level`` is ``"doc"``)."""
    units = {s.number: page_id(s.source_uri, s.page) if level == "page" else doc_name(s.source_uri)
             for s in answer.sources}
    has_ref = bool(reference and reference.strip())
    return {
        "exact_match": exact_match(answer.text, reference) if has_ref else None,
        "number_match": number_match(answer.text, reference) if has_ref else None,
        "rouge_l": round(rouge_l(answer.text, reference), 4) if has_ref else None,
        "citation_precision": citation_precision(answer.citations, units, relevant) if relevant else None,
        "cited": bool(answer.citations),
        "invalid_citations": len(answer.invalid_citations),
    }


def mean_of(rows: Sequence[dict], key: str) -> float | None:
    """The mean of ``key`` over the rows where it applies (is not None); None where it never does."""
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return round(sum(values) / len(values), 4) if values else None
