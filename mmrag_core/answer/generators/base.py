"""What answering needs of a generator, whatever its backend: the protocol and the one error it raises."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from mmrag_core.answer.prompting import Message


class GenerationError(RuntimeError):
    """The generator could not produce an answer: endpoint unreachable or refusing, or the model failed."""


class Generator(Protocol):
    """What answering needs of a model: its name, its token count, and a stream of answer text."""

    name: str

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: Sequence[Message]) -> Iterator[str]: ...
