"""The cited prompt: numbered sources with file and page, image sources as caption + OCR text, the token
budget (lowest-ranked sources dropped first), trimming, and sources taken from hits and snapshot items."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmrag_core.storage.items import Item, items_to_table
from mmrag_core.answer.prompting import (
    ELLIPSIS,
    MESSAGE_OVERHEAD_TOKENS,
    Source,
    build_prompt,
    count_message_tokens,
    longest_fitting_prefix,
    sources_from_hits,
    trim_to_tokens,
)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def chunk(n: int, text: str, uri: str = "/corpus/report.pdf", page: int = 0) -> Source:
    return Source(n, "chunk", uri, page, text)


SOURCES = [chunk(1, "Capital expenditure in 2018 was 1,577 million dollars.", page=59),
           Source(2, "image", "/corpus/scans/chart.png", 0, "Revenue 2017 2018", caption="a bar chart of revenue"),
           chunk(3, "The bridge was closed after the storm.", "/corpus/notes.pdf", 2),
           chunk(4, "Espresso is brewed with hot water.", "/corpus/notes.pdf", 3)]


def test_sources_are_numbered_with_file_and_page() -> None:
    prompt = build_prompt("What was the 2018 capex?", SOURCES, words, budget=10_000)
    system, user = prompt.messages
    assert (system["role"], user["role"]) == ("system", "user")
    assert "only" in system["content"] and "[1]" in system["content"]  # answer from the sources, cite as [n]
    content = user["content"]
    assert "[1] report.pdf, page 59 (text):\nCapital expenditure in 2018 was 1,577 million dollars." in content
    assert "[2] chart.png, page 0 (image):\nCaption: a bar chart of revenue\nText in the image: Revenue 2017 2018" \
        in content
    assert content.index("[1]") < content.index("[2]") < content.index("[3]") < content.index("[4]")
    assert content.rstrip().endswith("citing them as [n].") and "Question: What was the 2018 capex?" in content
    assert [s.number for s in prompt.sources] == [1, 2, 3, 4] and prompt.dropped == 0
    assert prompt.tokens == count_message_tokens(prompt.messages, words)
    assert prompt.tokens == words(system["content"]) + words(content) + 2 * MESSAGE_OVERHEAD_TOKENS


def test_budget_drops_lowest_ranked_first() -> None:
    full = build_prompt("What was the 2018 capex?", SOURCES, words, budget=10_000).tokens
    for budget in range(full - 1, 0, -7):
        try:
            prompt = build_prompt("What was the 2018 capex?", SOURCES, words, budget=budget)
        except ValueError:
            break
        assert prompt.tokens <= budget
        assert prompt.tokens == count_message_tokens(prompt.messages, words)
        kept = [s.number for s in prompt.sources]
        assert kept == list(range(1, len(kept) + 1)), "the best-ranked sources stay, with their numbers"
        assert prompt.dropped == len(SOURCES) - len(kept)
        assert f"[{len(kept) + 1}]" not in prompt.messages[1]["content"]
    else:
        pytest.fail("a small enough budget must be refused")


def test_top_source_is_trimmed_when_it_alone_does_not_fit() -> None:
    long = chunk(1, " ".join(f"w{i}" for i in range(300)))
    bare = build_prompt("q?", [], words, budget=10_000).tokens
    prompt = build_prompt("q?", [long, chunk(2, "short")], words, budget=bare + 50, source_tokens=1000)
    assert [s.number for s in prompt.sources] == [1] and prompt.dropped == 1
    assert prompt.tokens <= bare + 50
    assert prompt.sources[0].text.startswith("w0 w1 w2") and prompt.sources[0].text.endswith(ELLIPSIS)


def test_each_source_is_trimmed_to_source_tokens() -> None:
    long = chunk(1, " ".join(f"w{i}" for i in range(100)))
    prompt = build_prompt("q?", [long], words, budget=10_000, source_tokens=20)
    assert words(prompt.sources[0].text) <= 20 and prompt.sources[0].text.endswith(ELLIPSIS)
    assert prompt.sources[0].text.startswith("w0 w1")
    short = chunk(1, "nothing to cut here")
    assert build_prompt("q?", [short], words, budget=10_000, source_tokens=20).sources[0].text == short.text


def test_question_over_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="more than the prompt budget of 30"):
        build_prompt("why " * 40, SOURCES, words, budget=30)
    with pytest.raises(ValueError, match="question"):
        build_prompt("  ", SOURCES, words, budget=1000)


def test_trim_and_prefix_search() -> None:
    text = "one two three four five six"
    assert trim_to_tokens(text, 6, words) == text
    assert trim_to_tokens(text, 3, words) == "one two" + ELLIPSIS  # the ellipsis counts too
    toks = [f"t{i}" for i in range(37)]
    for limit in range(40):
        got = longest_fitting_prefix(toks, lambda t, n=limit: len(t.split()) <= n)
        assert got == " ".join(toks[:min(limit, 37)])


def test_no_sources_says_so() -> None:
    prompt = build_prompt("q?", [], words, budget=1000)
    assert "(no sources were found)" in prompt.messages[1]["content"] and prompt.sources == []


def test_sources_from_hits_use_the_items_full_text() -> None:
    sha = "a" * 64
    long_text = "Capital expenditure " + "detail " * 100 + "end."
    items = items_to_table([
        Item(11, "chunk", "/c/report.pdf", sha, 3, None, long_text),
        Item(12, "image", "/c/blank.png", "b" * 64, 0, None, "", text_source="none"),
        Item(13, "figure", "/c/report.pdf", sha, 4, None, "Q1 Q2 Q3", text_source="text_layer"),
    ])

    def hit(i: int, kind: str, uri: str, page: int) -> SimpleNamespace:
        return SimpleNamespace(id=i, kind=kind, source_uri=uri, page=page, score=1.0 / i, snippet="cut…")

    hits = [hit(11, "chunk", "/c/report.pdf", 3), hit(12, "image", "/c/blank.png", 0),
            hit(13, "figure", "/c/report.pdf", 4)]
    sources = sources_from_hits(hits, items)
    assert [(s.number, s.item_id, s.kind, s.page) for s in sources] == [(1, 11, "chunk", 3), (2, 13, "figure", 4)]
    assert sources[0].text == long_text, "the full chunk, not the display snippet"
    assert sources[0].file == "report.pdf" and sources[0].caption is None
    assert sources_from_hits(hits[:1])[0].text == "cut…", "without items, the snippet is what there is"
