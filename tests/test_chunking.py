"""Chunking: token limits, overlap, long words, boxes and line breaks."""
from __future__ import annotations

import random

import pytest

from mmrag_core.ingest.extract.chunking import Chunk, Word, chunk_words, whitespace_token_counter


def words_of(texts: list[str], per_line: int = 1000) -> list[Word]:
    """Words laid out left to right, ``per_line`` to a line, 10 points wide and 12 apart."""
    words = []
    for i, text in enumerate(texts):
        x, y = (i % per_line) * 12.0, (i // per_line) * 20.0
        words.append(Word(x, y, x + 10, y + 10, text, line=i // per_line))
    return words


def syllable_counter(words: list[str]) -> list[int]:
    """A counter where long words take several tokens, like a word-piece tokenizer."""
    return [len(w) // 3 + 1 for w in words]


def test_whitespace_chunks_overlap_exactly() -> None:
    words = words_of([f"w{i}" for i in range(10)])
    chunks = chunk_words(words, max_tokens=4, overlap=1, count_tokens=whitespace_token_counter)
    assert [c.text for c in chunks] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert [c.n_tokens for c in chunks] == [4, 4, 4]


def test_no_overlap_partitions_the_words() -> None:
    words = words_of([f"w{i}" for i in range(7)])
    chunks = chunk_words(words, max_tokens=3, overlap=0, count_tokens=whitespace_token_counter)
    assert [c.text for c in chunks] == ["w0 w1 w2", "w3 w4 w5", "w6"]


@pytest.mark.parametrize("seed", range(5))
def test_multi_token_words_respect_the_limit_and_cover_everything(seed: int) -> None:
    rng = random.Random(seed)
    texts = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 14))) for _ in range(300)]
    max_tokens, overlap = 20, 6
    chunks = chunk_words(words_of(texts), max_tokens, overlap, syllable_counter)

    position = 0  # walk the chunks over the word sequence
    for i, chunk in enumerate(chunks):
        pieces = chunk.text.split()
        assert chunk.n_tokens == sum(syllable_counter(pieces))
        assert chunk.n_tokens <= max_tokens
        if i:
            shared = _shared_prefix(texts, position, pieces)
            assert sum(syllable_counter(pieces[:shared])) <= overlap
            assert shared < len(pieces)  # every chunk brings new words
            position += len(pieces) - shared
        else:
            assert pieces == texts[: len(pieces)]
            position = len(pieces)
    assert position == len(texts)


def _shared_prefix(texts: list[str], end: int, pieces: list[str]) -> int:
    """How many leading ``pieces`` repeat the words just before ``end``."""
    for shared in range(min(len(pieces), end), -1, -1):
        if texts[end - shared : end] == pieces[:shared] and texts[end : end + len(pieces) - shared] == pieces[shared:]:
            return shared
    raise AssertionError("chunk does not continue the text")


def test_word_longer_than_the_limit_is_a_chunk_alone() -> None:
    texts = ["a", "b", "x" * 40, "c", "d"]
    chunks = chunk_words(words_of(texts), max_tokens=5, overlap=2, count_tokens=syllable_counter)
    assert [c.text for c in chunks] == ["a b", "x" * 40, "c d"]
    assert chunks[1].n_tokens == 14


def test_overlap_shrinks_to_make_room_for_new_words() -> None:
    # after "a b c" the overlap "b c" (2 tokens) plus "dddddd" (3 tokens) exceeds 4: keep only "c"
    texts = ["a", "b", "c", "dddddd", "e"]
    chunks = chunk_words(words_of(texts), max_tokens=4, overlap=2, count_tokens=syllable_counter)
    assert [c.text for c in chunks] == ["a b c", "c dddddd", "e"]
    texts = ["a", "b", "c", "dddddddddd"]  # 4 tokens: fits only alone
    chunks = chunk_words(words_of(texts), max_tokens=4, overlap=2, count_tokens=syllable_counter)
    assert [c.text for c in chunks] == ["a b c", "dddddddddd"]


def test_box_is_the_union_and_lines_break() -> None:
    words = words_of(["one", "two", "three", "four", "five"], per_line=2)
    (chunk,) = chunk_words(words, max_tokens=10, overlap=0, count_tokens=whitespace_token_counter)
    assert chunk == Chunk(text="one two\nthree four\nfive", bbox=(0.0, 0.0, 22.0, 50.0), n_tokens=5)


def test_words_without_line_keys_join_with_spaces() -> None:
    words = [Word(0, 0, 1, 1, "a"), Word(0, 5, 1, 6, "b")]
    assert chunk_words(words, 5, 0, whitespace_token_counter)[0].text == "a b"


def test_empty_input_gives_no_chunks() -> None:
    assert chunk_words([], 10, 2, whitespace_token_counter) == []


@pytest.mark.parametrize("max_tokens, overlap", [(0, 0), (5, 5), (5, -1), (5, 9)])
def test_bad_limits_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_words(words_of(["a"]), max_tokens, overlap, whitespace_token_counter)


def test_counter_must_count_every_word() -> None:
    with pytest.raises(ValueError, match="counts"):
        chunk_words(words_of(["a", "b"]), 5, 0, lambda ws: [1])
