"""Answer metrics against hand-computed cases: exact match, number match, ROUGE-L, citation precision."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmrag_core.eval.answer_metrics import (
    citation_precision,
    exact_match,
    lcs_length,
    mean_of,
    normalize_answer,
    number_match,
    numbers_in,
    rouge_l,
    score_answer,
)
from mmrag_core.answer.answering import Answer
from mmrag_core.eval.data import load_reference_answers
from mmrag_core.eval.report import answers_markdown_table
from mmrag_core.answer.prompting import Source


def test_normalize_and_exact_match() -> None:
    assert normalize_answer("  The Quick, brown fox!  ") == "quick brown fox"
    assert exact_match("The answer is: Yes.", "answer is yes") == 1.0
    assert exact_match("Yes, it is.", "No") == 0.0


@pytest.mark.parametrize("prediction, reference, want", [
    ("$1,577 million", "1577.00", 1.0),              # separators, currency, scale word, stated precision
    ("Capex was $1,577 million in FY2018 [1].", "$1577.00", 1.0),
    ("24.3", "24.26", 1.0),                          # 24.26 rounded to one decimal is 24.3
    ("24.2", "24.26", 0.0),
    ("1580", "1577", 0.0),
    ("The margin fell 1.9%", "1.9%", 1.0),
    ("The margin fell 1.9 percent", "1.90%", 1.0),
    ("$1,800 million", "$1.8 bn", 1.0),              # across scale words
    ("$2,018mn", "AMCOR's Adj. EBITDA was $2,018mn in FY 2023", 0.0),  # 2023 is not in the prediction
    ("$2,018mn in FY 2023", "AMCOR's Adj. EBITDA was $2,018mn in FY 2023", 1.0),
    ("3M grew", "-3", 0.0),                          # "3M" is a name, not a number
    ("It fell by -2.5%", "−2.5%", 1.0),
    ("no number here", "8.70", 0.0),
])
def test_number_match(prediction: str, reference: str, want: float) -> None:
    assert number_match(prediction, reference) == want


def test_number_match_needs_a_number_in_the_reference() -> None:
    assert number_match("1577", "The company is capital-light") is None


def test_numbers_in() -> None:
    got = [(n.value, n.unit, n.scale) for n in numbers_in("FY2018 3M: $1,577.5 million, 12%, 8 bn, (7)")]
    assert got == [(1577.5, 0.1, 1e6), (12.0, 1.0, 1.0), (8.0, 1.0, 1e9), (7.0, 1.0, 1.0)]


def test_rouge_l_by_hand() -> None:
    # words after normalising: "cat sat on mat" vs "cat is on mat": LCS "cat on mat" = 3, P = R = 3/4
    assert rouge_l("The cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    # LCS("a b c d e", "a c e f") = 3 (a c e): P = 3/5, R = 3/4, F = 2PR/(P+R) = 2/3
    assert rouge_l("alpha beta gamma delta eps", "alpha gamma eps phi") == pytest.approx(2 / 3)
    assert rouge_l("same words", "same words") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("x", "y") == 0.0
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook case


def test_citation_precision() -> None:
    pages = {1: "3M_2018_10K#p59", 2: "3M_2018_10K#p60", 3: "notes#p0"}
    relevant = {"3M_2018_10K#p59", "notes#p0"}
    assert citation_precision([1, 3], pages, relevant) == 1.0
    assert citation_precision([1, 2], pages, relevant) == 0.5
    assert citation_precision([1, 2, 9], pages, relevant) == pytest.approx(1 / 3)  # [9] names no source
    assert citation_precision([], pages, relevant) is None


def test_score_answer_and_means() -> None:
    sources = [Source(1, "chunk", "/c/3M_2018_10K.pdf", 59, "capex"), Source(2, "chunk", "/c/3M_2018_10K.pdf", 60, "x")]
    answer = Answer("q", "Capex was $1,577 million [1][2] [5].", sources, [1, 2, 5], [5], "fake", 1.0)
    row = score_answer(answer, "$1577.00", {"3M_2018_10K#p59"})
    assert row == {"exact_match": 0.0, "number_match": 1.0, "rouge_l": 0.0, "citation_precision": pytest.approx(1 / 3),
                   "cited": True, "invalid_citations": 1}
    no_ref = score_answer(answer, None, set())
    assert no_ref["exact_match"] is None and no_ref["citation_precision"] is None  # nothing judged
    assert score_answer(answer, None, {"3M_2018_10K"}, level="doc")["citation_precision"] == pytest.approx(2 / 3)
    assert mean_of([{"m": 1.0}, {"m": None}, {"m": 0.0}], "m") == 0.5
    assert mean_of([{"m": None}], "m") is None


def test_reference_answers_and_table(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"query_id": "a", "text": "t1", "answer": "$8.70"}\n{"query_id": "b", "text": "t2"}\n'
                 '{"query_id": "c", "text": "t3", "answer": " "}\n{"query_id": "d", "text": "t4", "answer": 24.26}\n')
    assert load_reference_answers(q) == {"a": "$8.70", "d": "24.26"}
    summary = {"generator": "fake", "answers": 2, "exact_match": 0.5, "number_match": None, "rouge_l": 0.25,
               "citation_precision": 1.0, "cited": 1.0, "invalid_citations": 0, "latency_p50_s": 3.14}
    lines = answers_markdown_table(summary).splitlines()
    assert lines[0].startswith("| generator | answers | EM | number match |")
    assert lines[2] == "| fake | 2 | 0.500 | - | 0.250 | 1.000 | 1.000 | 0 | 3.1 |"
