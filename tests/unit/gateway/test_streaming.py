from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.streaming import ThinkSplitter

pytestmark = pytest.mark.unit


def split(deltas: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    pieces = [p for d in deltas for p in splitter.feed(d)] + splitter.flush()
    return "".join(t for k, t in pieces if k == "reasoning"), "".join(t for k, t in pieces if k == "content")


def test_tags_split_across_deltas() -> None:
    assert split(["<th", "ink>step 1", " then 2</th", "ink>Answer: B [1]"]) == ("step 1 then 2", "Answer: B [1]")


def test_no_think_is_all_content_and_lone_angle_brackets_survive() -> None:
    assert split(["a < b", " and <t", "able>"]) == ("", "a < b and <table>")


@given(st.text(max_size=40), st.text(max_size=40), st.lists(st.integers(1, 10), max_size=10))
def test_any_chunking_gives_the_same_split(reasoning: str, answer: str, cuts: list[int]) -> None:
    if "<think>" in reasoning + answer or "</think>" in reasoning + answer:
        return
    text = f"<think>{reasoning}</think>{answer}"
    deltas, i = [], 0
    for c in cuts:
        deltas.append(text[i : i + c])
        i += c
    deltas.append(text[i:])
    assert split(deltas) == (reasoning, answer)
