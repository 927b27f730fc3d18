"""Cited prompts: a question and its fused hits become numbered sources [1], [2], ... that the generator is
told to answer from, and to cite.

A text chunk goes in verbatim (trimmed to ``source_tokens``); a figure or image goes in as its caption and
the text read in it (OCR), since the generator reads text only. Each source says its file and (0-based)
page, so that a cited answer can be checked against the document.

The whole prompt fits ``budget`` tokens counted with the generator's own tokenizer (``count_tokens``): the
lowest-ranked sources are dropped first, so the numbers of the kept ones stay their ranks. Messages are in
chat format (system + user), which chat-tuned models are trained on and OpenAI-compatible endpoints take.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import pyarrow as pa
import pyarrow.compute as pc

from mmrag_core.storage.items import ItemKind
from mmrag_core.storage.names import file_name

TokenCounter = Callable[[str], int]
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}

# Tokens a chat template adds around each message (ChatML: "<|im_start|>role\n" ... "<|im_end|>\n", about 5),
# and the generation prompt after the last one; counted on top of the contents so the budget holds.
MESSAGE_OVERHEAD_TOKENS = 8
ELLIPSIS = " …"

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. After each statement, cite "
    "the source(s) it comes from by number in square brackets, like [1] or [2][3]. If the sources do not "
    "contain the answer, say that the sources do not answer the question. Do not use outside knowledge."
)


@dataclass(frozen=True)
class Source:
    """A hit as the generator sees it: ``number`` is how the answer cites it (1-based, its rank)."""

    number: int
    kind: str
    source_uri: str
    page: int  # 0-based
    text: str  # a chunk's text, or the text read in a figure or image (OCR)
    caption: str | None = None
    score: float = 0.0
    item_id: int | None = None

    @property
    def file(self) -> str:
        return file_name(self.source_uri)

    @property
    def is_visual(self) -> bool:
        return self.kind in (ItemKind.FIGURE, ItemKind.IMAGE)

    def to_dict(self) -> dict:
        return {**asdict(self), "file": self.file}


@dataclass
class Prompt:
    """Messages for the generator, the sources they hold (numbered 1..n) and what did not fit."""

    messages: list[Message]
    sources: list[Source]
    dropped: int  # lowest-ranked sources left out to fit the budget
    tokens: int  # contents + MESSAGE_OVERHEAD_TOKENS per message, with the generator's tokenizer


def item_rows(items: pa.Table, ids: Iterable[int]) -> dict[int, dict]:
    """Item id -> its row (text, kind, and ``caption`` where the snapshot has one), for the given ids."""
    wanted = pa.array(list(ids), pa.int64())
    columns = [c for c in ("id", "text", "caption") if c in items.column_names]
    rows = items.filter(pc.is_in(items.column("id"), value_set=wanted)).select(columns).to_pylist()
    return {int(r["id"]): r for r in rows}


def sources_from_hits(hits: Sequence, items: pa.Table | None = None) -> list[Source]:
    """Sources in hit order. Hits carry a display snippet only, so the full text comes from the snapshot's
    ``items``; hits with no text at all (an image nothing could be read in, no caption) cannot support an
    answer and are left out."""
    rows = item_rows(items, (h.id for h in hits)) if items is not None else {}
    out: list[Source] = []
    for h in hits:
        row = rows.get(int(h.id), {})
        text = (row.get("text") if row else h.snippet) or ""
        caption = row.get("caption") or None
        if not text.strip() and not caption:
            continue
        out.append(Source(len(out) + 1, h.kind, h.source_uri, int(h.page), text, caption, float(h.score), h.id))
    return out


def longest_fitting_prefix(words: Sequence[str], fits: Callable[[str], bool], suffix: str = "") -> str:
    """The longest ``words`` prefix (joined by spaces, plus ``suffix`` when cut short) that ``fits``; "" when
    none does. A binary search: O(log n) calls of ``fits``."""
    if fits(" ".join(words)):
        return " ".join(words)
    lo, hi = 0, len(words) - 1  # the answer is a prefix length in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(" ".join(words[:mid]) + suffix):
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + suffix if lo else ""


def trim_to_tokens(text: str, limit: int, count_tokens: TokenCounter) -> str:
    """``text`` cut at a word boundary to at most ``limit`` tokens, marked with an ellipsis when cut."""
    if count_tokens(text) <= limit:
        return text
    return longest_fitting_prefix(text.split(), lambda t: count_tokens(t) <= limit, ELLIPSIS)


def _body(source: Source) -> str:
    """What the generator reads of a source: the text, or for a figure/image its caption and OCR text."""
    if not source.is_visual:
        return source.text
    parts = [f"Caption: {source.caption}"] if source.caption else []
    if source.text.strip():
        parts.append(f"Text in the {source.kind}: {source.text}")
    return "\n".join(parts)


def render_source(source: Source) -> str:
    kind = source.kind if source.is_visual else "text"
    return f"[{source.number}] {source.file}, page {source.page} ({kind}):\n{_body(source)}"


def render_messages(question: str, sources: Sequence[Source]) -> list[Message]:
    """The system instructions and the user turn: the numbered sources, then the question."""
    blocks = "\n\n".join(render_source(s) for s in sources) if sources else "(no sources were found)"
    user = (f"Sources:\n\n{blocks}\n\nQuestion: {question.strip()}\n\n"
            "Answer from the sources above only, citing them as [n].")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def count_message_tokens(messages: Sequence[Message], count_tokens: TokenCounter) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def build_prompt(question: str, sources: Sequence[Source], count_tokens: TokenCounter, budget: int,
                 source_tokens: int = 400) -> Prompt:
    """A prompt of at most ``budget`` tokens: each source trimmed to ``source_tokens``, then the lowest-ranked
    dropped until it fits; when even the best source alone does not fit, it is trimmed to what does. A
    question that leaves no room for any source is a ``ValueError``."""
    if not question.strip():
        raise ValueError("a question is needed")
    bare = count_message_tokens(render_messages(question, []), count_tokens)
    if bare > budget:
        raise ValueError(f"the question and instructions take {bare} tokens, more than the prompt budget of "
                         f"{budget} (generator_prompt_tokens)")
    kept = [replace(s, number=n, text=trim_to_tokens(s.text, source_tokens, count_tokens))
            for n, s in enumerate(sources, 1)]

    def tokens(selection: Sequence[Source]) -> int:
        return count_message_tokens(render_messages(question, selection), count_tokens)

    while kept and tokens(kept) > budget:
        kept.pop()
    if not kept and sources:
        best = replace(sources[0], number=1)
        text = longest_fitting_prefix(best.text.split(), lambda t: tokens([replace(best, text=t)]) <= budget,
                                      ELLIPSIS)
        if text:
            kept = [replace(best, text=text)]
    return Prompt(render_messages(question, kept), kept, len(sources) - len(kept), tokens(kept))
