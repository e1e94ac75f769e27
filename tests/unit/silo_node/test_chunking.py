from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silo_node.ingest import chunk_text

pytestmark = pytest.mark.unit


def _nonspace(text: str) -> str:
    return "".join(text.split())


# --- examples -------------------------------------------------------------------------


def test_short_text_is_one_chunk() -> None:
    text = "Asthma is a chronic disease.\n\nIt narrows the airways."
    assert chunk_text(text, max_chars=200, overlap_chars=20) == [text]


def test_whitespace_only_text_gives_no_chunks() -> None:
    assert chunk_text("", max_chars=100, overlap_chars=10) == []
    assert chunk_text(" \n\n\t \n", max_chars=100, overlap_chars=10) == []


def test_paragraphs_are_packed_whole_and_never_cut() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * (i % 7 + 3) + "end." for i in range(30)]
    chunks = chunk_text("\n\n".join(paragraphs), max_chars=120, overlap_chars=30)
    assert len(chunks) > 1
    assert all(len(chunk) <= 120 for chunk in chunks)
    # Each chunk is a run of whole paragraphs, in order, and each paragraph appears exactly once.
    assert [p for chunk in chunks for p in chunk.split("\n\n")] == paragraphs
    # Greedy: no two neighbouring chunks could have been merged.
    for first, second in itertools.pairwise(chunks):
        assert len(first) + 2 + len(second.split("\n\n")[0]) > 120


def test_long_paragraph_is_split_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something about kidneys." for i in range(40)]
    chunks = chunk_text(" ".join(sentences), max_chars=200, overlap_chars=0)
    assert len(chunks) > 5
    assert all(len(chunk) <= 200 for chunk in chunks)
    assert all(chunk.endswith("kidneys.") for chunk in chunks)
    assert " ".join(chunks) == " ".join(sentences)


def test_sentence_without_punctuation_is_split_between_words() -> None:
    words = [f"w{i:03d}" for i in range(300)]
    chunks = chunk_text(" ".join(words), max_chars=50, overlap_chars=0)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert [w for chunk in chunks for w in chunk.split()] == words
    # Splitting between words packs each chunk as far as the next word allows.
    assert all(len(chunk) + 1 + 4 > 50 for chunk in chunks[:-1])


def test_word_longer_than_a_chunk_is_cut_hard() -> None:
    chunks = chunk_text("x" * 250, max_chars=100, overlap_chars=20)
    assert chunks == ["x" * 100, "x" * 100, "x" * 50]


def test_pieces_of_a_split_paragraph_overlap_at_word_boundaries() -> None:
    words = [f"token{i}" for i in range(200)]
    chunks = chunk_text(" ".join(words), max_chars=100, overlap_chars=30)
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        assert len(current) <= 100
        previous_words, current_words = previous.split(), current.split()
        # The chunk starts with the last few whole words of the previous one ...
        shared = next(n for n in range(len(previous_words), 0, -1) if previous_words[-n:] == current_words[:n])
        overlap = " ".join(current_words[:shared])
        assert 0 < len(overlap) <= 30
        # ... as many as fit in overlap_chars (counting the space that follows them).
        assert len(" ".join(previous_words[-shared - 1 :])) + 1 > 30


def test_no_overlap_between_packed_paragraphs() -> None:
    text = "First paragraph here.\n\nSecond paragraph here.\n\nThird paragraph here."
    assert chunk_text(text, max_chars=50, overlap_chars=20) == [
        "First paragraph here.\n\nSecond paragraph here.",
        "Third paragraph here.",
    ]


def test_short_heading_stays_with_the_start_of_a_long_paragraph() -> None:
    text = "# Stroke\n\n" + " ".join(["A stroke cuts the blood supply to the brain."] * 10)
    chunks = chunk_text(text, max_chars=150, overlap_chars=0)
    assert chunks[0].startswith("# Stroke\n\nA stroke")
    assert all(len(chunk) <= 150 for chunk in chunks)


def test_windows_line_ends_separate_paragraphs() -> None:
    assert chunk_text("one two\r\n\r\nthree four", max_chars=10, overlap_chars=0) == ["one two", "three four"]


@pytest.mark.parametrize(("max_chars", "overlap_chars"), [(0, 0), (-5, 0), (10, 10), (10, 11), (10, -1)])
def test_invalid_sizes_are_rejected(max_chars: int, overlap_chars: int) -> None:
    with pytest.raises(ValueError, match=r"max_chars|overlap_chars"):
        chunk_text("some text", max_chars=max_chars, overlap_chars=overlap_chars)


# --- properties -----------------------------------------------------------------------

_WORD = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzéß0123456789", min_size=1, max_size=12),
    st.text(alphabet="abc", min_size=30, max_size=400),  # occasionally longer than a chunk
    st.sampled_from(["end.", "why?", "stop!", "(note)", "“quoted.”", "e.g.", "…"]),
)
_SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", "\n \n\n", "\t", ". ", "\r\n", "\u00a0", "\u3000"])


@st.composite
def _texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORD, max_size=150))
    parts: list[str] = [draw(st.sampled_from(["", " ", "\n"]))]
    for word in words:
        parts += [word, draw(_SEPARATOR)]
    return "".join(parts)


_ANY_TEXT = st.one_of(_texts(), st.text(max_size=600))


@st.composite
def _sizes(draw: st.DrawFn) -> tuple[int, int]:
    max_chars = draw(st.integers(min_value=1, max_value=300))
    overlap_chars = draw(st.integers(min_value=0, max_value=max_chars - 1))
    return max_chars, overlap_chars


@settings(max_examples=300, deadline=None)
@given(text=_ANY_TEXT, sizes=_sizes())
def test_chunks_are_stripped_non_empty_and_within_the_limit(text: str, sizes: tuple[int, int]) -> None:
    max_chars, overlap_chars = sizes
    chunks = chunk_text(text, max_chars=max_chars, overlap_chars=overlap_chars)
    for chunk in chunks:
        assert chunk
        assert chunk == chunk.strip()
        assert len(chunk) <= max_chars
    assert (chunks == []) == (not text.strip())
    assert chunk_text(text, max_chars=max_chars, overlap_chars=overlap_chars) == chunks  # deterministic


@settings(max_examples=300, deadline=None)
@given(text=_ANY_TEXT, max_chars=st.integers(min_value=1, max_value=300))
def test_without_overlap_chunks_hold_exactly_the_text(text: str, max_chars: int) -> None:
    chunks = chunk_text(text, max_chars=max_chars, overlap_chars=0)
    assert "".join(_nonspace(chunk) for chunk in chunks) == _nonspace(text)


@settings(max_examples=300, deadline=None)
@given(text=_ANY_TEXT, sizes=_sizes())
def test_no_word_is_lost(text: str, sizes: tuple[int, int]) -> None:
    max_chars, overlap_chars = sizes
    chunks = chunk_text(text, max_chars=max_chars, overlap_chars=overlap_chars)
    chunk_words = {word for chunk in chunks for word in chunk.split()}
    for word in text.split():
        if len(word) <= max_chars - overlap_chars:
            assert word in chunk_words  # whole, never cut
    # Words too long for a chunk are cut, but every character is still there, in order.
    covered = iter("".join(_nonspace(chunk) for chunk in chunks))
    assert all(char in covered for char in _nonspace(text))  # a subsequence: overlaps only add


@settings(max_examples=200, deadline=None)
@given(paragraphs=st.lists(st.text(alphabet="abc .,", min_size=1, max_size=40).map(str.strip).filter(bool), max_size=8))
def test_text_that_fits_is_returned_whole(paragraphs: list[str]) -> None:
    text = "\n\n".join(paragraphs)
    expected = [text] if text else []
    assert chunk_text(text, max_chars=max(1, len(text)), overlap_chars=0) == expected
