"""``POST /answer``: a cited answer from the served snapshot, whole (JSON) or streamed (server-sent events).

The extractive answerer (the default, ``answerer``) needs no model and answers requests in parallel. The
generator is made on the first request (a local model loads once per process) and answers one question at a
time; the search half of each request takes the served snapshot once, so the sources and the answer
come from one snapshot even across a swap."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Literal

from pydantic import BaseModel, Field

from mmrag_core.answer.answering import Answer, answer_from_sources
from mmrag_core.answer.offline import ExtractiveResult, ask_extractive
from mmrag_core.config import Settings
from mmrag_core.answer.generators import Generator, make_generator
from mmrag_core.service.snapshot_holder import SnapshotHolder


class AnswerRequest(BaseModel):
    """A question for a cited answer."""

    model_config = {"extra": "forbid"}
    question: str = Field(..., description="The question.")
    k: int | None = Field(None, description="Hits given as sources (default: extractive_k, or answer_k for the "
                          "generator).")
    answerer: Literal["extractive", "generator"] | None = Field(
        None, description="'extractive' (offline, no model) or 'generator' (default: the answerer setting).")
    stream: bool = Field(False, description="Stream server-sent events: 'token' pieces, then 'answer' (or 'error').")


def settings_generator(settings: Settings) -> Generator:
    """The generator the ``answer`` settings select, a local model on ``settings.models.device``."""
    return make_generator(settings.answer, settings.models.device)


class Answerer:
    """The service's generator and the lock that makes it answer one question at a time."""

    def __init__(self, holder: SnapshotHolder, settings: Settings,
                 make: Callable[[Settings], Generator] = settings_generator) -> None:
        self.holder, self.settings, self._make = holder, settings, make
        self._generator: Generator | None = None
        self._lock = threading.Lock()

    def extractive(self, question: str, k: int) -> ExtractiveResult:
        """Answer extractively from the served snapshot, as ``mmrag ask`` does (blocking; run it in a thread)."""
        return ask_extractive(self.holder.locked_engine(), question, self.settings, k=k)

    def answer(self, question: str, k: int, on_token: Callable[[str], None] | None = None) -> Answer:
        """Search the served snapshot, then generate from its top ``k`` hits (blocking; run it in a thread)."""
        snapshot, sources = self.holder.sources(question, k)
        with self._lock:
            if self._generator is None:
                self._generator = self._make(self.settings)
            answer = answer_from_sources(question, sources, self._generator, self.settings, on_token)
        answer.snapshot = snapshot
        return answer

    async def events(self, question: str, k: int, extractive: bool = False) -> AsyncIterator[str]:
        """Server-sent events of one answer: ``token`` per generated piece, then ``answer`` with the whole
        result (citations, sources, snapshot) or ``error`` with a message. An extractive answer is one
        ``answer`` event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: tuple[str, object] | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                result = (self.extractive(question, k) if extractive
                          else self.answer(question, k, lambda piece: put(("token", piece))))
                put(("answer", result.to_dict()))
            except Exception as e:  # noqa: BLE001 - reported to the client as an event, not a broken stream
                put(("error", f"{type(e).__name__}: {e}"))
            put(None)

        threading.Thread(target=work, name="mmrag-answer", daemon=True).start()
        while (item := await queue.get()) is not None:
            event, data = item
            yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
