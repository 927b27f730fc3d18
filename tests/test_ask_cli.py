"""``mmrag ask`` and ``mmrag eval --answers`` end to end on a small published snapshot: through the CLI entry
point, with a local OpenAI-compatible server as the generator, and once with the real SmolLM2 (slow)."""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from mmrag_core.config import load_settings
from tests.answer_fixtures import GENERATOR_CACHE, publish_text_snapshot
from tests.openai_server import OpenAIServer
from tests.tiny_models import force_hf_offline

QUESTION = "What was 3M's capital expenditure in 2018?"
REPLY = "Capital expenditure was $1,577 million in 2018 [1], not [7]."


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        force_hf_offline(mp)
        yield publish_text_snapshot(tmp_path_factory.mktemp("ask")).parent


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    """The settings point at a local OpenAI-compatible server that answers REPLY."""
    for name in list(os.environ):
        if name.startswith("MMRAG_"):
            monkeypatch.delenv(name)
    with OpenAIServer(reply=REPLY) as server:
        monkeypatch.setenv("MMRAG_ANSWERER", "generator")
        monkeypatch.setenv("MMRAG_GENERATOR", "openai")
        monkeypatch.setenv("MMRAG_GENERATOR_BASE_URL", server.base_url)
        monkeypatch.setenv("MMRAG_GENERATOR_RETRY_DELAY_SECONDS", "0.01")
        yield server


def test_ask_streams_the_answer_then_its_sources(base: Path, endpoint: OpenAIServer,
                                                 capsys: pytest.CaptureFixture) -> None:
    rc = main(["ask", QUESTION, "--store", str(base / "store"), "-k", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith(REPLY)
    assert "; * = cited):" in out and "p. 60" in out  # people read 1-based pages
    assert "* [1] 3M_2018_10K.pdf p. 60 (chunk)  /corpus/3M_2018_10K.pdf" in out  # 0-based page 59
    assert "  [2] " in out and "[4]" not in out
    assert "cites [7], which name(s) no source (there are 3)" in err
    user = endpoint.requests[0]["messages"][1]["content"]
    assert "[1] 3M_2018_10K.pdf, page 59 (text):\nPurchases of property, plant and equipment" in user
    assert endpoint.requests[0]["stream"] is True


def test_ask_json(base: Path, endpoint: OpenAIServer, capsys: pytest.CaptureFixture) -> None:
    rc = main(["ask", QUESTION, "--store", str(base / "store"), "-k", "2", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    data = json.loads(out)
    assert data["answer"] == REPLY and data["citations"] == [1, 7] and data["invalid_citations"] == [7]
    first = data["sources"][0]
    assert (first["number"], first["file"], first["page"]) == (1, "3M_2018_10K.pdf", 59)
    assert len(data["sources"]) == 2 and data["generator"] == f"openai:SmolLM2-135M-Instruct@{endpoint.base_url}"


def test_ask_unreachable_endpoint(base: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    monkeypatch.setenv("MMRAG_GENERATOR_RETRIES", "0")
    rc = main(["ask", QUESTION, "--store", str(base / "store"), "--generator", "openai"]
              + ["--config", _yaml(base, f"generator_base_url: {url}\n")])
    assert rc == 1
    assert f"{url}/chat/completions failed after 1 attempt(s): ConnectError" in capsys.readouterr().err


def _yaml(base: Path, text: str) -> str:
    path = base / "generator.yaml"
    path.write_text(text)
    return str(path)


def test_eval_with_answers(base: Path, endpoint: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "eval.json"
    rc = main(["eval", "--queries", str(base / "queries.jsonl"), "--qrels", str(base / "qrels.tsv"),
               "--store", str(base / "store"), "--systems", "bm25,text", "--answers", "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "| generator | answers | EM | number match | ROUGE-L | citation precision | cited |" in out
    assert "answer 2/2 (coffee)" in err
    answers = json.loads(out_json.read_text())["answers"]
    rows = {r["query_id"]: r for r in answers["rows"]}
    assert set(rows) == {"capex", "coffee"}, "only the queries with a reference answer"
    capex = rows["capex"]
    assert capex["number_match"] == 1.0 and capex["exact_match"] == 0.0 and capex["rouge_l"] == 0.0
    assert capex["sources"][0] == "3M_2018_10K#p59" and capex["citation_precision"] == 0.5  # [1] right, [7] none
    assert rows["coffee"]["number_match"] is None  # no number in that reference
    s = answers["summary"]
    assert s["answers"] == 2 and s["invalid_citations"] == 2 and s["number_match"] == 1.0 and s["cited"] == 1.0
    assert len(endpoint.requests) == 2
    data = json.loads(out_json.read_text())
    (row,) = data["answer_rows"]  # MMRAG_ANSWERER=generator: the generator's answers, judged
    assert row["answerer"] == "generator" and row["n"] == 2 and row["cited"] == 1.0
    judged = {r["query_id"]: r for r in data["answer_judged"]}
    assert judged["capex"]["unsupported"] == [] and judged["coffee"]["unsupported"] == ["$1,577 million"]
    assert row["unsupported"] == 1  # the canned capex reply, citing the espresso page, states an unsupported number


def test_eval_without_reference_answers_is_a_usage_error(base: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query_id": "capex", "text": QUESTION}) + "\n")
    rc = main(["eval", "--queries", str(queries), "--qrels", str(base / "qrels.tsv"), "--store",
               str(base / "store"), "--answers"])
    assert rc == 2 and "has no reference answers" in capsys.readouterr().err


def test_evaluate_task_and_its_artifact_text(base: Path) -> None:
    from tasks.eval_tasks import eval_markdown, evaluate_snapshot

    settings = load_settings(store=str(base / "store"))
    result = evaluate_snapshot.fn(settings, str(base / "queries.jsonl"), str(base / "qrels.tsv"), systems=["bm25"])
    assert [r["system"] for r in result["rows"]] == ["bm25"] and result["queries"] == 3
    md = eval_markdown(result, settings.store)
    assert md.startswith(f"# Evaluation of snapshot `{result['snapshot']}`")
    assert "| system | R@1 |" in md and "| bm25 |" in md


@pytest.mark.slow
def test_ask_with_local_smollm2(base: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The offline default: the real SmolLM2 weights, a few new tokens."""
    for name in list(os.environ):
        if name.startswith("MMRAG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MMRAG_GENERATOR_CACHE_DIR", str(GENERATOR_CACHE))
    rc = main(["ask", QUESTION, "--store", str(base / "store"), "-k", "2", "--max-new-tokens", "16", "--generator",
               "local"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    answer, _, sources = out.partition("\n\nsources (snapshot ")
    assert answer.strip(), out
    assert "[1] 3M_2018_10K.pdf p. 60 (chunk)" in sources and "[3]" not in sources
