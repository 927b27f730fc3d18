"""Length-bucketed text encoding (issue 20, item 5): each text tokenised once, batches of similar token length,
vectors identical to encoding in input order and back in the caller's order; the actor's thread share."""
from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import ray

from mmrag_core.models.text_encoder import TRACE_ENV, TextEncoder, length_batches

SENTENCES = [
    "Revenue increased 4% year over year, driven by growth in the Domestic segment.",
    "Gross profit rate declined primarily due to lower product margin rates.",
    "Operating cash flow was used to fund capital expenditures and share repurchases.",
    "The Company recorded restructuring charges related to its cost optimisation programme.",
    "Net sales in the Flexibles segment decreased due to lower volumes in North America.",
    "Inventory turnover improved as merchandise inventories were reduced across categories.",
]


def _mixed_texts() -> list[str]:
    """What a run embeds, shuffled: ~200-token chunks, one past the model's limit (truncated), mid-length page
    outlines, short captions and headings, and a blank text; all distinct, so an order mix-up shows."""
    rng = random.Random(7)
    chunks = [" ".join(rng.choice(SENTENCES) for _ in range(12)) + f" (note {i})" for i in range(10)]
    overlong = [" ".join(SENTENCES * 8)]
    outlines = [f"BEST BUY CO 10-Q fiscal 2024 Q2 | page {p}: Consolidated Statements of Earnings; "
                f"Segment Information; Liquidity" for p in range(8)]
    captions = [f"Figure {i}: bar chart of quarterly revenue by segment" for i in range(10)]
    headings = ["Item 2.", "Total assets", "Net earnings per share", "Risk factors", "Table of contents", ""]
    texts = chunks + overlong + outlines + captions + headings
    rng.shuffle(texts)
    return texts


@pytest.fixture(scope="module")
def encoder():  # noqa: ANN201
    import huggingface_hub.constants as hf_constants

    mp = pytest.MonkeyPatch()
    mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        yield TextEncoder("all-MiniLM-L6-v2", batch_size=8)
    finally:
        mp.undo()


class CountingTokenizer:
    """The encoder's tokenizer, counting the texts of each call."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.calls = inner, []

    def __call__(self, texts: list[str], **kw):  # noqa: ANN003, ANN204
        self.calls.append(len(texts))
        return self.inner(texts, **kw)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bucketed_vectors_match_input_order_batches(encoder) -> None:  # noqa: ANN001
    texts = _mixed_texts()
    bucketed, in_order = encoder.encode(texts), encoder.encode(texts, bucketed=False)
    assert bucketed.shape == (len(texts), 384) and bucketed.dtype == np.float32
    assert _row_cosines(bucketed, in_order).min() >= 0.999
    # Back in the caller's order: each row is nearest to the same text's row of the other encoding.
    assert ((bucketed @ in_order.T).argmax(axis=1) == np.arange(len(texts))).all()


def test_bucketed_vectors_match_one_text_at_a_time(encoder, monkeypatch) -> None:  # noqa: ANN001
    texts = _mixed_texts()
    bucketed = encoder.encode(texts)
    monkeypatch.setattr(encoder, "batch_size", 1)  # no padding at all: the reference
    alone = encoder.encode(texts)
    assert _row_cosines(bucketed, alone).min() >= 0.999
    np.testing.assert_allclose(bucketed, alone, atol=1e-5)


def test_bucketing_pads_less_and_tokenises_once(encoder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    texts = _mixed_texts()
    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    counting = CountingTokenizer(encoder.tokenizer)
    monkeypatch.setattr(encoder, "tokenizer", counting)
    encoder.encode(texts)
    assert counting.calls == [len(texts)]  # each text tokenised once: the bucketing and the forward pass share it
    encoder.encode(texts, bucketed=False)
    bucketed, in_order = (json.loads(line) for line in trace.read_text().splitlines())
    lengths = [len(x) for x in counting.inner(texts, truncation=True, max_length=encoder.max_length)["input_ids"]]
    assert bucketed["tokens"] == in_order["tokens"] == sum(lengths)
    assert bucketed["texts"] == texts and bucketed["seconds"] > 0
    assert len(bucketed["threads"]) == len(length_batches(lengths, encoder.batch_size))  # one count per batch
    assert min(bucketed["threads"]) >= 1
    # Sorted by length, a batch of 8 pads to its own longest: well under the input order's padding.
    assert bucketed["padded_tokens"] - bucketed["tokens"] < 0.25 * (in_order["padded_tokens"] - in_order["tokens"])
    assert max(lengths) == encoder.max_length  # the over-long text was truncated, not an error


def test_threads_are_set_per_call_or_asked_per_batch(encoder) -> None:  # noqa: ANN001
    import torch

    before = torch.get_num_threads()
    texts = _mixed_texts()
    reference = encoder.encode(texts)
    asked = []

    def share() -> int:  # what the actor asks Ray before each batch: here 1 thread, then 2
        asked.append(len(asked))
        return 1 if len(asked) == 1 else 2

    try:
        one = encoder.encode(texts, threads=1)
        assert torch.get_num_threads() == 1
        np.testing.assert_allclose(one, reference, atol=1e-5)
        varying = encoder.encode(texts, threads=share)
        lengths = [len(x) for x in encoder.token_ids(texts)]
        assert len(asked) == len(length_batches(lengths, encoder.batch_size)) > 1 and torch.get_num_threads() == 2
        np.testing.assert_allclose(varying, reference, atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_encode_threads_follow_free_cpu_slots() -> None:
    """On a real 2-slot Ray: all slots while nothing runs, one while a 1-CPU task (an extraction) holds the other,
    all again once it ends; the actor's own reserved slots always count."""
    from tasks.encoder_threads import encode_threads

    @ray.remote(num_cpus=1)
    def hold(seconds: float) -> None:
        time.sleep(seconds)

    def settle(want: int, reserved: int = 0) -> int:  # Ray's resource view follows a task within a moment
        deadline = time.monotonic() + 10
        got = encode_threads(reserved, 2)
        while got != want and time.monotonic() < deadline:
            time.sleep(0.05)
            got = encode_threads(reserved, 2)
        return got

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert settle(2) == 2
        running = hold.remote(4.0)
        assert settle(1) == 1
        assert settle(2, reserved=1) == 2  # its own slot plus the free one, at most the node's cores
        ray.get(running)
        assert settle(2) == 2
    finally:
        if started:
            ray.shutdown()
