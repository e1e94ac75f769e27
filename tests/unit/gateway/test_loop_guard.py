"""The loop guard on real looping replies of the embedded model, on legitimate text, and while streaming."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.loop_guard import RepetitionGuard, find_loop

pytestmark = pytest.mark.unit

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "smollm2_replies.json").read_text(encoding="utf-8"))
REPLIES = FIXTURES["replies"]


def _tokens(text: str) -> list[str]:
    """Pieces about the size of model tokens: words with their leading space, and punctuation."""
    return re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text)


@pytest.mark.parametrize("reply", [r for r in REPLIES if r["loops"]], ids=lambda r: f"{r['question']}-{r['seed']}")
def test_real_loops_of_the_embedded_model_are_caught_and_cut_after_the_first_copy(reply: dict[str, object]) -> None:
    content = str(reply["content"])
    loop = find_loop(content)
    assert loop is not None and loop.repeats >= 2
    kept = content[: loop.cut]
    assert find_loop(kept) is None  # what is left does not loop
    assert kept.count(loop.unit) < content.count(loop.unit)
    assert len(kept) < len(content)


@pytest.mark.parametrize("reply", [r for r in REPLIES if not r["loops"]], ids=lambda r: f"{r['question']}-{r['seed']}")
def test_replies_that_only_repeat_code_or_examples_are_not_loops(reply: dict[str, object]) -> None:
    assert find_loop(str(reply["content"])) is None


@pytest.mark.parametrize(
    "text",
    [
        "Asthma is a chronic disease of the airways [1]. It causes wheezing and shortness of breath [2].",
        "Use json.loads(s) to parse a JSON string [1]. json.loads returns a dict for a JSON object [1].",
        "very very good, very very nice, and very very long",
        "The list [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] sorted is [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]; reversed, "
        "[10, 9, 8, 7, 6, 5, 4, 3, 2, 1] sorted is again [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].",
        "```python\nfor line in f:\n    print(line)\n```\nor\n```python\nfor line in f:\n    print(line)\n```",
    ],
)
def test_legitimate_repetition_is_not_a_loop(text: str) -> None:
    assert find_loop(text) is None


def test_back_to_back_copies_keep_one_copy() -> None:
    loop = find_loop("Hypertrophic cardiomyopathy is a heart disease. " + "The answer is: " * 50)
    assert loop is not None and loop.unit == "The answer is:"
    assert ("Hypertrophic cardiomyopathy is a heart disease. " + "The answer is: " * 50)[: loop.cut].endswith(
        "disease. The answer is:"
    )


def test_one_word_repeated_is_a_loop_once_it_spans_enough_words() -> None:
    assert find_loop("no " * 8) is None
    assert find_loop("no " * 9 + "end") is not None


def test_streaming_with_holdback_never_releases_a_short_loop() -> None:
    text = "Dilated cardiomyopathy causes symptoms such as " + "difficulty breathing, " * 40
    guard = RepetitionGuard(holdback=160)
    released = "".join(guard.feed(piece) for piece in _tokens(text)) + guard.finish()
    assert guard.loop is not None
    assert released == guard.text
    assert released.count("difficulty breathing") == 1


@pytest.mark.parametrize("reply", [r for r in REPLIES if r["loops"]], ids=lambda r: f"{r['question']}-{r['seed']}")
def test_streaming_a_real_loop_stops_at_the_same_cut_as_the_whole_text(reply: dict[str, object]) -> None:
    """A long repeated passage may be partly released before its copy is recognised; the answer is still cut."""
    content = str(reply["content"])
    guard = RepetitionGuard(holdback=160)
    released = ""
    for piece in _tokens(content):
        released += guard.feed(piece)
        if guard.loop is not None:
            break
    released += guard.finish()
    whole = find_loop(content)
    assert guard.loop is not None and whole is not None
    assert guard.loop.cut == whole.cut and guard.text == content[: whole.cut]
    assert content.startswith(released) and len(released) >= whole.cut


def test_text_without_a_loop_is_released_whole_and_in_order() -> None:
    text = "Asthma is a chronic inflammatory disease of the airways [1]. Attacks are triggered by allergens [2]."
    guard = RepetitionGuard(holdback=20)
    pieces = [guard.feed(p) for p in _tokens(text)]
    assert "".join(pieces) == text[: len(text) - 20]
    assert "".join(pieces) + guard.finish() == text and guard.loop is None
