"""The endpoint generator: any OpenAI-compatible chat-completions server over HTTP (OpenAI, vLLM, llama.cpp,
Ollama, TGI), with retries before the first token. Named so that it never shadows the ``openai`` package.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mmrag_core.answer.generators.base import GenerationError
from mmrag_core.answer.prompting import Message, TokenCounter
from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 60.0


def estimate_tokens(text: str) -> int:
    """A conservative token count without the model's tokenizer: one token per 3 characters."""
    return math.ceil(len(text) / 3)


def endpoint_token_counter(tokenizer: str | None) -> TokenCounter:
    """Token counts for an endpoint's prompts: the named tokenizer's, else :func:`estimate_tokens`."""
    if not tokenizer:
        return estimate_tokens
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"generator tokenizer {tokenizer!r} could not be loaded: {e}") from e
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


class _Retryable(Exception):
    """An answer worth asking for again (429/5xx), with the delay the server asked for, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatGenerator:
    """``POST {base_url}/chat/completions`` of any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama,
    TGI), streamed as server-sent events. Connection failures, timeouts and 429/5xx answers are retried with
    exponential backoff, but only before the first token: a stream that breaks later is an error, not a
    second, duplicated answer."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 120.0,
                 retries: int = 3, retry_delay: float = 1.0, max_new_tokens: int = 256, temperature: float = 0.0,
                 count_tokens: TokenCounter = estimate_tokens, stream: bool = True) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.retry_delay = retries, retry_delay
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.streaming = stream
        self.name = f"openai:{model}@{base_url.rstrip('/')}"
        self._count = count_tokens

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        payload = {"model": self.model, "messages": list(messages), "max_tokens": self.max_new_tokens,
                   "temperature": self.temperature, "stream": self.streaming}
        read = self._read_events if self.streaming else self._read_json
        yield from self._with_retries(lambda: read(payload))

    def _with_retries(self, attempt: Callable[[], Iterator[str]]) -> Iterator[str]:
        import httpx

        last: Exception | None = None
        for n in range(self.retries + 1):
            if n:
                delay = self.retry_delay * 2 ** (n - 1)
                if isinstance(last, _Retryable) and last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, MAX_RETRY_AFTER_SECONDS))
                log.warning("generator endpoint %s: %s; retry %d of %d in %.1f s", self.url, last, n, self.retries,
                            delay)
                time.sleep(delay)
            started = False
            try:
                for piece in attempt():
                    started = True
                    yield piece
                return
            except (httpx.TransportError, _Retryable) as e:
                if started:
                    raise GenerationError(f"the answer stream from {self.url} broke off: {_describe(e)}") from e
                last = e
        raise GenerationError(f"generator endpoint {self.url} failed after {self.retries + 1} attempt(s): "
                              f"{_describe(last)}") from last

    def _client(self) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)), headers=headers)

    def _check(self, response: Any) -> None:
        """Raise for an error status: retryable ones as _Retryable, the rest (bad request, auth) at once."""
        if response.status_code < 400:
            return
        response.read()
        message = f"HTTP {response.status_code}: {_error_message(response)}"
        if response.status_code in RETRY_STATUS:
            raise _Retryable(message, _retry_after(response.headers.get("retry-after")))
        raise GenerationError(f"generator endpoint {self.url} refused the request ({message})")

    def _read_events(self, payload: dict) -> Iterator[str]:
        with self._client() as client, client.stream("POST", self.url, json=payload) as response:
            self._check(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": comments", "event:" lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                piece = _content(_parse(data, self.url), "delta", self.url)
                if piece:
                    yield piece

    def _read_json(self, payload: dict) -> Iterator[str]:
        with self._client() as client:
            response = client.post(self.url, json=payload)
            self._check(response)
            yield _content(_parse(response.text, self.url), "message", self.url)


def _parse(data: str, url: str) -> dict:
    try:
        body = json.loads(data)
    except ValueError as e:
        raise GenerationError(f"generator endpoint {url} sent something that is not JSON: {data[:200]!r}") from e
    if not isinstance(body, dict):
        raise GenerationError(f"generator endpoint {url} sent an unexpected body: {data[:200]!r}")
    return body


def _content(body: dict, key: str, url: str) -> str:
    """The text of a chat-completion body (``key``: "message") or stream chunk (``key``: "delta")."""
    if body.get("error"):
        raise GenerationError(f"generator endpoint {url} reported an error: {body['error']}")
    choices = body.get("choices") or [{}]
    return (choices[0].get(key) or {}).get("content") or ""


def _error_message(response: Any) -> str:
    try:
        err = response.json().get("error")
        return (err.get("message") if isinstance(err, dict) else err) or response.text[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _describe(e: Exception | None) -> str:
    return f"{type(e).__name__}: {e}" if e is not None and str(e) else type(e).__name__
