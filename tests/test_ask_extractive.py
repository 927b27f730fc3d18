"""``mmrag ask`` with the offline extractive answerer (the default) and the number check of generated answers,
through the CLI entry point on a small published snapshot whose pages are statement rows; the generator is a
local OpenAI-compatible server (tests/openai_server.py) scripted to invent a number."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from tests.answer_fixtures import STATEMENT_PAGES, STATEMENT_ROW, publish_text_snapshot
from tests.openai_server import OpenAIServer
from tests.tiny_models import force_hf_offline

QUESTION = "What is the FY2018 capital expenditure amount (in USD millions) for 3M?"
ROW = STATEMENT_ROW


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        force_hf_offline(mp)
        yield str(publish_text_snapshot(tmp_path_factory.mktemp("ask_extractive"), STATEMENT_PAGES))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MMRAG_"):
            monkeypatch.delenv(name)


def test_ask_answers_extractively_by_default_without_a_generator(store: str, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    import mmrag_core.answer.generators as generators
    import mmrag_core.answer.generators.factory as factory

    for module in (generators, factory):
        monkeypatch.setattr(module, "make_generator", lambda *a, **k: pytest.fail("the generator was made"))
    rc = main(["ask", QUESTION, "--store", store, "-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    first = out.splitlines()[0]
    assert first.startswith("capex for FY2018: 1,577 USD millions [") and ROW in first
    assert "citations:" in out and "3M_2018_10K.pdf p. 60\n" in out, out
    assert f'      "{ROW}"' in out and "unsupported" not in out


def test_ask_json_is_the_structured_answer(store: str, capsys: pytest.CaptureFixture) -> None:
    rc = main(["ask", "What is 3M's FY2018 free cash flow in USD millions?", "--store", store, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out)
    assert data["answerer"] == "extractive" and data["value"] == 4862 and data["unit"] == "USD millions"
    assert data["formula"] == "cash from operations - capex (FY2018)" and not data["abstained"]
    (n,) = data["citations"]
    assert [(i["item"], i["cell"], i["citation"], i["page_label"]) for i in data["inputs"]] == [
        ("cfo", "6,439", n, "p. 60"), ("capex", "(1,577)", n, "p. 60")]
    (cited,) = data["cited"]
    assert cited["file"] == "3M_2018_10K.pdf" and cited["page_label"] == "p. 60" and ROW in cited["quotes"]
    assert data["unsupported"] is False and data["sources"][n - 1]["page"] == 59


def test_ask_abstains_with_the_closest_sources(store: str, capsys: pytest.CaptureFixture) -> None:
    rc = main(["ask", "What was 3M's FY2018 inventory turnover ratio?", "--store", store, "-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith("The sources do not state") and "closest sources:" in out


@pytest.mark.parametrize("reply, flagged", [
    ("Capital expenditure was $4,242 million in FY2018 [1][2][3].", ["$4,242 million"]),
    ("Capital expenditure was $1,577 million in FY2018 [1][2][3], or about $1.6 billion.", []),
    ("Free cash flow was $4,862 million [1][2][3].", []),  # 6,439 - 1,577: computed from cited rows
])
def test_generated_numbers_are_checked_against_the_cited_sources(store: str, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture, reply: str,
                                                                 flagged: list[str]) -> None:
    with OpenAIServer(reply=reply) as server:
        monkeypatch.setenv("MMRAG_GENERATOR_BASE_URL", server.base_url)
        rc = main(["ask", "What was 3M's FY2018 free cash flow and capital expenditure (in USD millions)?",
                   "--store", store, "-k", "3", "--generator", "openai", "--json"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        data = json.loads(out)
        assert data["answerer"] == "generator" and data["answer"] == reply
        assert data["unsupported_numbers"] == flagged and data["unsupported"] is bool(flagged)
        if flagged:  # the extractive answer from the same sources is given beside the flagged one
            assert data["extractive"]["answerer"] == "extractive" and data["extractive"]["value"] == 4862
            rc = main(["ask", QUESTION, "--store", store, "-k", "3", "--generator", "openai"])
            out = capsys.readouterr().out
            assert rc == 0 and out.startswith(reply)
            assert "\nunsupported: $4,242 million (in no cited source, nor computed from one)\n" in out
            assert "extractive answer from the same sources:\ncapex for FY2018: 1,577 USD millions" in out
        else:
            assert data["extractive"] is None


def test_eval_answers_judges_each_answerer(store: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``mmrag eval --answers``: the extractive answers judged against the references, per answerer and per
    question type, in the markdown tables and as ``answer_rows`` in the JSON."""
    queries, qrels, out_json = tmp_path / "q.jsonl", tmp_path / "qrels.tsv", tmp_path / "eval.json"
    queries.write_text("".join(json.dumps(q) + "\n" for q in [
        {"query_id": "capex", "text": QUESTION, "answer": "$1577.00", "question_type": "metrics-generated"},
        {"query_id": "fcf", "text": "What is 3M's FY2018 free cash flow in USD millions?", "answer": "$4862.00",
         "question_type": "metrics-generated"},
        {"query_id": "coffee", "text": "How is espresso made?", "answer": "By forcing hot water through coffee.",
         "question_type": "novel-generated"},
        {"query_id": "no-answer", "text": "Which bridge was closed?"}]))
    qrels.write_text("query_id\tcorpus_id\tscore\ncapex\t3M_2018_10K#p59\t1\nfcf\t3M_2018_10K#p59\t1\n"
                     "coffee\tnotes#p0\t1\nno-answer\tnotes#p0\t1\n")
    rc = main(["eval", "--queries", str(queries), "--qrels", str(qrels), "--store", store, "--systems", "bm25",
               "--answers", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "extractive answer 3/3 (coffee)" in err
    assert "| answerer | n | correct | abstained | unsupported | cited | citation precision | p50 ms |" in out
    assert "| answerer | question type | n | correct |" in out and "| extractive | metrics-generated | 2 |" in out
    data = json.loads(out_json.read_text())
    (row,) = data["answer_rows"]
    assert {k: row[k] for k in ("answerer", "n", "correct", "unsupported", "cited", "citation_precision")} == {
        "answerer": "extractive", "n": 3, "correct": round(2 / 3, 4), "unsupported": 0, "cited": round(2 / 3, 4),
        "citation_precision": 1.0}
    assert row["abstained"] == round(1 / 3, 4) and row["latency_p50_ms"] > 0
    by_type = {r["question_type"]: r for r in data["answer_rows_by_type"]}
    assert by_type["metrics-generated"]["correct"] == 1.0 and by_type["novel-generated"]["abstained"] == 1.0
    judged = {r["query_id"]: r for r in data["answer_judged"]}
    assert judged["fcf"]["rule"] == "number" and judged["coffee"]["rule"] == "abstained"
    assert "answers" not in data  # no generator ran


def test_number_check_reads_claims_not_citations_pages_or_years() -> None:
    from mmrag_core.answer.extractive import SourcePage
    from mmrag_core.answer.number_check import check_numbers, written_numbers

    claims = written_numbers("Capex was $1,577 million in FY2018 and 2017 [1, 2] (page 60), up 14.9% [3].")
    assert [(w.text, w.value, w.scale, w.percent) for w in claims] == [
        ("$1,577 million", 1577.0, 1e6, False), ("14.9%", 14.9, 1.0, True)]
    page = SourcePage("/corpus/3M_2018_10K.pdf", 59, STATEMENT_PAGES[("3M_2018_10K.pdf", 59)][0])
    question = "How did 3M's capital expenditure change from FY2017 to FY2018?"
    ok = check_numbers("Capex rose 14.9% [1], from $1.37 billion to 1,577 (USD millions) [1].", question, [page])
    assert ok.checked == 3 and ok.ok  # growth computed from the cited rows; a rounded, rescaled cell
    bad = check_numbers("Capex rose 12% [1] to $1,577 million [1].", question, [page])
    assert bad.unsupported == ("12%",)
    assert check_numbers("Capex was $1,577 million.", question, []).unsupported == ("$1,577 million",)


def test_no_value_for_segment_tables_or_questions_for_reasons() -> None:
    """Year columns repeated per segment give no one value per year, and a question for a reason or for one of
    several segments asks for no value: both abstain rather than answer with a total."""
    from mmrag_core.answer.extractive import SourcePage, answer_extractively
    from mmrag_core.answer.extractive.calculations import read_question

    segments = ("Consolidated Statements of Income\n(in millions)\n"
                "Total net revenue | 2021: 12,517 | 2020: 13,287 | 2021: 14,605 | 2020: 10,003")
    answer = answer_extractively("What was JPM's total net revenue in FY2021?", [SourcePage("/x.pdf", 3, segments)])
    assert answer.abstained and answer.value is None
    assert read_question("Which of JPM's business segments had the lowest net revenue in 2021 Q1?") is None
    assert read_question("What drove operating margin change as of FY2022 for 3M?") is None
    assert read_question("What is 3M's FY2022 operating margin? If it is not useful, explain why.") is not None
