"""Split a page's words into overlapping chunks that fit the text encoder.

Chunk sizes are measured with the caller's tokenizer (``count_tokens``), so a chunk never runs
past the encoder's window and gets silently truncated there. Chunks keep the union of their words'
boxes, so a hit can be shown where it sits on the page.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

TokenCounter = Callable[[list[str]], list[int]]


class Word(NamedTuple):
    """One word and its box. ``line`` identifies the text line it sits on (any hashable key, e.g.
    ``(block, line)``); when two consecutive words have different keys, chunk text breaks the line."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    line: Hashable | None = None


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive words: their text, the union of their boxes, and their token count."""

    text: str
    bbox: tuple[float, float, float, float]
    n_tokens: int


def whitespace_token_counter(words: list[str]) -> list[int]:
    """Counts one token per whitespace-separated piece: a stand-in when no tokenizer is at hand."""
    return [max(1, len(w.split())) for w in words]


def chunk_words(
    words: Sequence[Word], max_tokens: int, overlap: int, count_tokens: TokenCounter
) -> list[Chunk]:
    """Greedy chunks of at most ``max_tokens`` tokens; consecutive chunks share up to ``overlap``
    tokens of trailing words. A single word longer than ``max_tokens`` becomes a chunk on its own.

    Token counts are per word and do not include the encoder's special tokens: leave room for
    them in ``max_tokens``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens={max_tokens}), got {overlap}")
    if not words:
        return []
    counts = count_tokens([w.text for w in words])
    if len(counts) != len(words):
        raise ValueError(f"count_tokens returned {len(counts)} counts for {len(words)} words")

    chunks: list[Chunk] = []
    start, new_from = 0, 0  # new_from: first word not yet in any chunk
    while new_from < len(words):
        end = _fill(counts, start, max_tokens)
        while end <= new_from:  # the overlap leaves no room for the next new word: shrink it
            start += 1
            end = _fill(counts, start, max_tokens)
        chunks.append(_make_chunk(words[start:end], sum(counts[start:end])))
        new_from = end
        start = _overlap_start(counts, start, end, overlap)
    return chunks


def _fill(counts: Sequence[int], start: int, max_tokens: int) -> int:
    """End index of the longest run from ``start`` within ``max_tokens`` (at least one word)."""
    end, total = start + 1, counts[start]
    while end < len(counts) and total + counts[end] <= max_tokens:
        total += counts[end]
        end += 1
    return end


def _overlap_start(counts: Sequence[int], start: int, end: int, overlap: int) -> int:
    """Start of the next chunk: the trailing words of [start, end) that fit in ``overlap`` tokens,
    always past ``start`` so that chunking moves forward."""
    back, shared = end, 0
    while back - 1 > start and shared + counts[back - 1] <= overlap:
        back -= 1
        shared += counts[back]
    return back


def _make_chunk(words: Sequence[Word], n_tokens: int) -> Chunk:
    parts = [words[0].text]
    for prev, word in pairwise(words):
        new_line = prev.line is not None and word.line is not None and prev.line != word.line
        parts.append("\n" if new_line else " ")
        parts.append(word.text)
    bbox = (
        min(w.x0 for w in words),
        min(w.y0 for w in words),
        max(w.x1 for w in words),
        max(w.y1 for w in words),
    )
    return Chunk(text="".join(parts), bbox=bbox, n_tokens=n_tokens)
