"""Answer generators, chosen by ``settings.generator``: a local transformers causal LM (:mod:`.local`), or any
OpenAI-compatible chat-completions endpoint over HTTP (:mod:`.openai_compatible`). Both stream the answer as
text pieces and count tokens with the tokenizer the model reads the prompt with, so a prompt budget means the
same thing for both. :func:`make_generator` picks one from the ``answer`` settings.
"""
from __future__ import annotations

from mmrag_core.answer.generators.base import GenerationError, Generator
from mmrag_core.answer.generators.factory import make_generator
from mmrag_core.answer.generators.local import LocalGenerator
from mmrag_core.answer.generators.openai_compatible import OpenAIChatGenerator, estimate_tokens

__all__ = ["GenerationError", "Generator", "LocalGenerator", "OpenAIChatGenerator", "estimate_tokens",
           "make_generator"]
