"""``POST /answer`` of the query service through a real uvicorn server, with the generator pointed at a real
local OpenAI-compatible HTTP server (tests/openai_server.py): whole and streamed answers, citations checked
against the sources, invalid citations flagged, generator failures reported."""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from mmrag_core.config import Settings
from mmrag_core.service import create_app
from tests.live_server import live_server
from tests.openai_server import OpenAIServer
from tests.query_corpus import SENTENCES, offline_query_corpus

QUESTION = "How do plants turn light into sugar?"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with offline_query_corpus(tmp_path_factory.mktemp("answer")) as corpus, OpenAIServer() as llm:
        settings = Settings(store=corpus["store"].uri, service_poll_seconds=0, answerer="generator",
                            generator="openai", generator_model="test-model", generator_base_url=llm.base_url,
                            generator_retries=1,
                            generator_retry_delay_seconds=0.05)
        with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield {"client": client, "llm": llm, "snapshot": corpus["store"].latest_id(), **corpus}


def _events(text: str) -> list[tuple[str, object]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_answer_cites_the_sources_it_was_given(service: dict) -> None:
    llm: OpenAIServer = service["llm"]
    llm.reply = "Photosynthesis does it [1]."
    r = service["client"].post("/answer", json={"question": QUESTION, "k": 3})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["answer"] == "Photosynthesis does it [1]." and data["citations"] == [1]
    assert data["invalid_citations"] == [] and data["snapshot"] == service["snapshot"]
    assert 1 <= len(data["sources"]) <= 3 and data["sources"][0]["number"] == 1
    prompt = json.dumps(llm.requests[-1]["messages"])
    assert SENTENCES[1] in prompt and "[1]" in prompt, "the top hit's full text reached the generator, numbered"
    assert llm.requests[-1]["model"] == "test-model"


def test_streamed_answer_sends_tokens_then_the_whole_answer(service: dict) -> None:
    llm: OpenAIServer = service["llm"]
    llm.reply = "It is photosynthesis, see [1] and [7]."
    with service["client"].stream("POST", "/answer", json={"question": QUESTION, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.read().decode())
    tokens = [data for event, data in events if event == "token"]
    assert len(tokens) > 1 and "".join(tokens) == llm.reply
    (event, final), = [e for e in events if e[0] != "token"]
    assert event == "answer" and final["citations"] == [1, 7] and final["invalid_citations"] == [7]


def test_bad_questions_and_generator_failures_are_clear(service: dict) -> None:
    client, llm = service["client"], service["llm"]
    assert client.post("/answer", json={"question": "   "}).status_code == 422
    assert client.post("/answer", json={"question": QUESTION, "k": 10_000}).status_code == 422
    llm.fail_next(5, status=500)
    r = client.post("/answer", json={"question": QUESTION})
    assert r.status_code == 502 and "the generator failed" in r.json()["detail"] and llm.base_url in r.json()["detail"]
    llm.fail_next(5, status=500)
    with client.stream("POST", "/answer", json={"question": QUESTION, "stream": True}) as r:
        events = _events(r.read().decode())
    assert events[-1][0] == "error" and "500" in events[-1][1]
    llm._failures.clear()


def test_extractive_answer_needs_no_generator(service: dict) -> None:
    """The extractive answerer (the default of a service without answerer='generator'), whole and streamed:
    no request reaches the generator, and a question no statement row answers is an abstention naming the
    closest sources."""
    client, llm = service["client"], service["llm"]
    before = len(llm.requests)
    r = client.post("/answer", json={"question": QUESTION, "answerer": "extractive", "k": 3})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["answerer"] == "extractive" and data["abstained"] and data["unsupported"] is False
    assert data["snapshot"] == service["snapshot"] and 1 <= len(data["sources"]) <= 3 and data["closest"]
    with client.stream("POST", "/answer", json={"question": QUESTION, "answerer": "extractive",
                                               "stream": True}) as r:
        events = _events(r.read().decode())
    assert [e for e, _ in events] == ["answer"] and events[0][1]["answerer"] == "extractive"
    assert len(llm.requests) == before
