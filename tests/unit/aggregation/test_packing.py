from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import Passage, approx_token_count, pack_context

pytestmark = pytest.mark.unit


def words(text: str) -> int:
    """A counter that is easy to check by hand: one token per word."""
    return len(text.split())


def p(chunk_id: str, n_words: int, title: str = "") -> Passage:
    text = " ".join(f"{chunk_id}w{i}" for i in range(n_words))
    return Passage("s", chunk_id, "doc", title, text, 0.5, 1, {})


def test_passages_that_fit_are_kept_in_order() -> None:
    passages = [p("a", 10, title="Two words"), p("b", 20), p("c", 30)]
    # Costs with overhead 16: a = 2 + 10 + 16 = 28, b = 36, c = 46.
    packed, used = pack_context(passages, budget_tokens=200, count_tokens=words)
    assert packed == passages
    assert used == 28 + 36 + 46


def test_a_passage_that_does_not_fit_is_cut_at_a_word_boundary() -> None:
    passages = [p("a", 10), p("b", 200), p("c", 5)]
    # a costs 26; 100 - 26 = 74 left (>= 64): b is cut to 74 - 16 = 58 words; c is dropped.
    packed, used = pack_context(passages, budget_tokens=100, count_tokens=words)
    assert [x.chunk_id for x in packed] == ["a", "b"]
    assert packed[0] == passages[0]
    cut = packed[1]
    assert cut.text.split() == passages[1].text.split()[:58]
    assert passages[1].text.startswith(cut.text)
    assert passages[1].text[len(cut.text)] == " "
    assert used == 100


def test_with_little_room_left_the_rest_is_dropped() -> None:
    passages = [p("a", 40), p("b", 200), p("c", 1)]
    # a costs 56; 100 - 56 = 44 left (< 64): b is dropped, and c after it although it would fit.
    packed, used = pack_context(passages, budget_tokens=100, count_tokens=words)
    assert [x.chunk_id for x in packed] == ["a"]
    assert used == 56


def test_first_passage_is_cut_when_it_alone_is_too_long() -> None:
    packed, used = pack_context([p("a", 1000)], budget_tokens=80, count_tokens=words, per_passage_overhead=0)
    assert len(packed[0].text.split()) == 80
    assert used == 80


def test_tiny_or_zero_budget_packs_nothing() -> None:
    assert pack_context([p("a", 10)], budget_tokens=0, count_tokens=words) == ([], 0)
    assert pack_context([p("a", 10)], budget_tokens=20, count_tokens=words) == ([], 0)
    assert pack_context([], budget_tokens=100, count_tokens=words) == ([], 0)


def test_a_title_too_long_for_the_room_drops_the_passage() -> None:
    passage = p("a", 10, title=" ".join(["t"] * 90))
    assert pack_context([passage], budget_tokens=100, count_tokens=words) == ([], 0)


def test_negative_overhead_is_refused() -> None:
    with pytest.raises(ValueError, match="overhead"):
        pack_context([], budget_tokens=10, count_tokens=words, per_passage_overhead=-1)


def test_approx_token_count() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("abcd") == 1
    assert approx_token_count("abcde") == 2
    assert approx_token_count("a b c d") == 4  # at least one token per word
    assert approx_token_count("x" * 400) == 100


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_approx_count_grows_with_prefixes(text: str) -> None:
    counts = [approx_token_count(text[:i]) for i in range(len(text) + 1)]
    assert counts == sorted(counts)


VOCABULARY = ["a", "to", "the", "fever", "aspirin,", "reduces", "inflammation.", "x" * 30, "\n\nNext"]
sentence = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=120).map(" ".join)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.sampled_from(["", "Title", "A much longer title of the document"]), sentence), max_size=8),
    st.integers(-10, 600),
    st.integers(0, 20),
    st.sampled_from([approx_token_count, words]),
)
def test_packing_never_exceeds_the_budget(
    raw: list[tuple[str, str]], budget: int, overhead: int, counter: Callable[[str], int]
) -> None:
    passages = [Passage("s", f"c{i}", "d", title, text, 0.5, 1, {}) for i, (title, text) in enumerate(raw)]
    packed, used = pack_context(passages, budget_tokens=budget, count_tokens=counter, per_passage_overhead=overhead)
    assert used <= max(budget, 0)
    recount = sum((counter(x.title) if x.title else 0) + counter(x.text) + overhead for x in packed)
    assert used == recount
    assert [x.chunk_id for x in packed] == [x.chunk_id for x in passages[: len(packed)]]
    assert packed[:-1] == passages[: max(len(packed) - 1, 0)]
    if packed:
        last, original = packed[-1], passages[len(packed) - 1]
        assert original.text.startswith(last.text)
        assert len(last.text) == len(original.text) or original.text[len(last.text)].isspace()
