"""A cited answer: search the snapshot, give the best hits to the generator as numbered sources, stream its
answer, and read back which sources it cites (flagging numbers that name no source) and whether every number
it states is supported by a cited source; an unsupported answer carries the extractive answer beside it."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmrag_core.answer.citations import invalid_citations, parse_citations
from mmrag_core.config import Settings
from mmrag_core.answer.generators import Generator
from mmrag_core.answer.number_check import check_numbers
from mmrag_core.answer.offline import cited_pages, extractive_from_sources
from mmrag_core.answer.prompting import Source, build_prompt, sources_from_hits

NO_SOURCES_ANSWER = "No indexed content matches the question, so there is nothing to answer from."


@dataclass
class Answer:
    """A generated answer with the sources it was given; ``citations`` are the numbers it cites, in order,
    ``invalid_citations`` those that name no source."""

    question: str
    text: str
    sources: list[Source]
    citations: list[int]
    invalid_citations: list[int]
    generator: str
    seconds: float
    first_token_seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dropped_sources: int = 0
    snapshot: str | None = None
    notes: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # numbers no cited source, question or calculation gives
    extractive: dict | None = None  # the extractive answer from the same sources, when ``unsupported``

    @property
    def cited_sources(self) -> list[Source]:
        by_number = {s.number: s for s in self.sources}
        return [by_number[n] for n in self.citations if n in by_number]

    def to_dict(self) -> dict:
        return {
            "question": self.question, "answer": self.text, "citations": self.citations,
            "invalid_citations": self.invalid_citations, "sources": [s.to_dict() for s in self.sources],
            "generator": self.generator, "snapshot": self.snapshot, "seconds": round(self.seconds, 3),
            "first_token_seconds": None if self.first_token_seconds is None else round(self.first_token_seconds, 3),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "dropped_sources": self.dropped_sources, "notes": self.notes, "answerer": "generator",
            "unsupported": bool(self.unsupported), "unsupported_numbers": self.unsupported,
            "extractive": self.extractive,
        }


def answer_from_sources(question: str, sources: Sequence[Source], generator: Generator, settings: Settings,
                        on_token: Callable[[str], None] | None = None) -> Answer:
    """Generate a cited answer from ``sources`` (ranked best first), within the settings' prompt budget.
    ``on_token`` sees each piece of text as it is generated. With no sources the generator is not asked."""
    t0 = time.perf_counter()
    if not sources:
        if on_token:
            on_token(NO_SOURCES_ANSWER)
        return Answer(question, NO_SOURCES_ANSWER, [], [], [], generator.name, time.perf_counter() - t0)
    prompt = build_prompt(question, sources, generator.count_tokens, settings.generator_prompt_tokens,
                          settings.generator_source_tokens)
    pieces: list[str] = []
    first: float | None = None
    for piece in generator.stream(prompt.messages):
        first = time.perf_counter() - t0 if first is None else first
        pieces.append(piece)
        if on_token:
            on_token(piece)
    text = "".join(pieces).strip()
    cited = parse_citations(text)
    notes = [f"{prompt.dropped} lower-ranked source(s) left out to fit the prompt budget"] if prompt.dropped else []
    answer = Answer(question, text, prompt.sources, cited, invalid_citations(cited, len(prompt.sources)),
                    generator.name, time.perf_counter() - t0, first, prompt.tokens, generator.count_tokens(text),
                    prompt.dropped, notes=notes)
    return check_answer(answer, sources)


def check_answer(answer: Answer, sources: Sequence[Source]) -> Answer:
    """Flag the numbers of ``answer`` that its cited sources do not support; when there are any, put the
    extractive answer from all of ``sources`` beside it, so the reader sees what the sources do state."""
    answer.unsupported = list(check_numbers(answer.text, answer.question,
                                            cited_pages(answer.citations, answer.sources)).unsupported)
    if answer.unsupported:
        answer.extractive = extractive_from_sources(answer.question, sources).to_dict()
        answer.notes.append("unsupported numbers (in no cited source, nor computed from one): "
                            + ", ".join(answer.unsupported))
    return answer


def ask(engine, question: str, generator: Generator, settings: Settings, image: str | Path | bytes | None = None,
        k: int | None = None, on_token: Callable[[str], None] | None = None) -> Answer:
    """Search ``engine``'s snapshot for the question (and image), then answer from the top ``k`` hits
    (default ``settings.answer_k``). The image helps find sources; the generator reads text only."""
    if not question or not question.strip():
        raise ValueError("a question is needed (an image alone can be searched with 'mmrag query --image')")
    hits = engine.search(question, image, k or settings.answer_k)
    answer = answer_from_sources(question, sources_from_hits(hits, engine.snapshot.items), generator, settings,
                                 on_token)
    answer.snapshot = engine.snapshot.id
    return answer
