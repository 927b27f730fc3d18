"""``make_generator``: the one place that turns the ``answer`` settings into a generator, so callers never pick
a backend themselves."""
from __future__ import annotations

import os

from mmrag_core.answer.generators.base import Generator
from mmrag_core.answer.generators.local import LocalGenerator
from mmrag_core.answer.generators.openai_compatible import OpenAIChatGenerator, endpoint_token_counter
from mmrag_core.config import AnswerSettings


def make_generator(answer: AnswerSettings, device: str = "cpu") -> Generator:
    """The generator ``answer.generator`` selects; ``device`` (``settings.models.device``) is where a local
    model runs."""
    if answer.generator == "local":
        return LocalGenerator(answer.generator_model, device, answer.generator_max_new_tokens,
                              answer.generator_temperature, answer.generator_cache_dir)
    if answer.generator == "openai":
        key = answer.generator_api_key.get_secret_value() if answer.generator_api_key else None
        return OpenAIChatGenerator(
            answer.generator_base_url, answer.generator_model, key or os.environ.get("OPENAI_API_KEY"),
            timeout=answer.generator_timeout_seconds, retries=answer.generator_retries,
            retry_delay=answer.generator_retry_delay_seconds, max_new_tokens=answer.generator_max_new_tokens,
            temperature=answer.generator_temperature, count_tokens=endpoint_token_counter(answer.generator_tokenizer),
            stream=answer.generator_stream,
        )
    raise ValueError(f"unknown generator {answer.generator!r}; choose 'local' or 'openai' (MMRAG_GENERATOR)")
