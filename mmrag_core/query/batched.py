"""Many queries answered together: their texts encoded in a few forward passes, then each searched as alone.

On CPU a query's time is mostly the text encoder's forward pass. A pass costs a fixed part (measured on the
2-core machine, MiniLM: ~14 CPU-ms, what ~48 tokens of a batch cost) plus a part per token of the padded batch
(~0.3 CPU-ms); a query of 11 to 98 tokens pays the fixed part alone. Padding is not free: one pass over texts of
11 to 98 tokens pads each to 98 and cost more than encoding them one by one. So the texts are grouped by token
length (:func:`length_groups`: the grouping of least modelled cost) and each group is one encoder call. The vectors are then handed to the engine's ``search``, which answers each
request exactly as it would alone (same filters, k, strategy, lists, fusion, dedupe).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmrag_core.query.filters import QueryFilters

if TYPE_CHECKING:
    from mmrag_core.query.hits import Hit

log = logging.getLogger(__name__)

CALL_COST_TOKENS = 48  # the fixed cost of one encoder call, in tokens of a batch (measured, see above)
CLIP_ONLY = ("early", "unified")  # strategies that never read the text space's vector


class Engine(Protocol):
    """What batching reads of a :class:`~mmrag_core.query.engine.QueryEngine` (a protocol: the engine imports
    this module)."""

    snapshot: Any
    strategy: str
    text_encoder: Any
    clip: Any

    def default_lists(self) -> list[str]: ...

    def search(self, **kwargs: Any) -> list[Hit]: ...


@dataclass(frozen=True)
class SearchRequest:
    """One query's arguments to :meth:`QueryEngine.search` (the same names and defaults)."""

    text: str | None = None
    image: str | Path | bytes | None = None
    k: int = 10
    spaces: Collection[str] | None = None
    strategy: str | None = None
    filters: QueryFilters | Mapping | None = None
    fusion: str | None = None
    dedupe: bool | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # further keywords of search(), passed as they are

    @property
    def has_text(self) -> bool:
        return bool(self.text and self.text.strip())


def search_many(engine: Engine, requests: Sequence[SearchRequest]) -> list[list[Hit] | Exception]:
    """Each request's hits (or the exception its search raised), in the order of ``requests``: the texts encoded
    together (:func:`query_vectors`), then each request searched by ``engine.search`` with its vectors. One
    request's error is its own: the others are answered."""
    try:
        vectors = query_vectors(engine, requests)
    except Exception:  # noqa: BLE001 - every request then encodes its own text, and fails alone if it must
        log.warning("batched query encoding failed; encoding the %d queries one by one", len(requests),
                    exc_info=True)
        vectors = [{} for _ in requests]
    out: list[list[Hit] | Exception] = []
    for request, vecs in zip(requests, vectors):
        try:
            out.append(search_one(engine, request, vecs))
        except Exception as e:  # noqa: BLE001 - handed to the request's caller, who raises it
            out.append(e)
    return out


def search_one(engine: Engine, request: SearchRequest, vectors: Mapping[str, np.ndarray]) -> list[Hit]:
    """``request`` searched by ``engine`` with its query ``vectors`` already computed."""
    return engine.search(text=request.text, image=request.image, k=request.k, spaces=request.spaces,
                         strategy=request.strategy, filters=request.filters, fusion=request.fusion,
                         dedupe=request.dedupe, vectors=vectors, **request.options)


def query_vectors(engine: Engine, requests: Sequence[SearchRequest]) -> list[dict[str, np.ndarray]]:
    """Per request, its query vectors by name (``text``: the text space; ``clip:text``: CLIP's text tower) for
    the spaces its search may read, each space's texts encoded in length groups. Image vectors are left to the
    search (a request with an image is rare and its image is one encoder call either way)."""
    out: list[dict[str, np.ndarray]] = [{} for _ in requests]
    texts = [r.text if r.has_text else None for r in requests]
    if "text" in engine.snapshot.indexes:
        wanted = [n for n, r in enumerate(requests)
                  if texts[n] is not None and (r.strategy or engine.strategy) not in CLIP_ONLY]
        if wanted:
            encoder = engine.text_encoder
            lengths = _token_lengths(encoder, [texts[n] for n in wanted])
            _fill(out, "text", wanted, [texts[n] for n in wanted], lengths, encoder.encode)
    clip = engine.clip if "image" in engine.snapshot.indexes else None
    if clip is not None:
        defaults = set(engine.default_lists())
        wanted = [n for n, r in enumerate(requests) if texts[n] is not None and _reads_clip_text(r, engine, defaults)]
        if wanted:  # CLIP's tokenizer pads every text to its full context: one group
            _fill(out, "clip:text", wanted, [texts[n] for n in wanted], [1] * len(wanted), clip.encode_texts)
    return out


def length_groups(lengths: Sequence[int], call_cost: float = CALL_COST_TOKENS) -> list[list[int]]:
    """Positions of ``lengths`` in groups of consecutive lengths (shortest first) that minimise the modelled
    encoding cost: ``call_cost`` per group plus, per group, its size times its longest length (every text is
    padded to it). Exact, by dynamic programming over the sorted lengths (n is at most a micro-batch)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[j]: least cost of the j shortest
    start = [0] * (len(order) + 1)  # where the last group of that best grouping starts
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + call_cost + (j - i) * longest
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def _fill(out: list[dict[str, np.ndarray]], name: str, positions: list[int], texts: list[str], lengths: list[int],
          encode: Callable[[list[str]], np.ndarray]) -> None:
    for group in length_groups(lengths):
        vectors = encode([texts[i] for i in group])
        for row, i in enumerate(group):
            out[positions[i]][name] = vectors[row : row + 1]


def _token_lengths(encoder: Any, texts: list[str]) -> list[int]:
    ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
    return [len(x) for x in ids]


def _reads_clip_text(request: SearchRequest, engine: Engine, defaults: set[str]) -> bool:
    strategy = request.strategy or engine.strategy
    if strategy != "late":
        return True  # early, cascade and unified all read the CLIP text vector of a text query
    return "image:text" in (defaults if request.spaces is None else set(request.spaces))
