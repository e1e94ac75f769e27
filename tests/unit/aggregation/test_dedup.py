from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import Passage, deduplicate
from aggregation.dedup import jaccard, shingles

pytestmark = pytest.mark.unit

GUIDELINE = (
    "Adults with community acquired pneumonia who are well enough to be treated at home "
    "should receive amoxicillin for five days; those with comorbidities need a combination "
    "of a beta lactam and a macrolide, and every patient should be reviewed within two days "
    "if the symptoms do not improve or the fever returns after initial treatment"
)
DIFFERENT = (
    "The configuration file of the silo node lists the index backend, the embedding model "
    "fingerprint and the release policy; restart the node after editing it so that the new "
    "policy applies to every request that arrives afterwards from any gateway"
)


def p(silo: str, chunk_id: str, text: str) -> Passage:
    return Passage(silo, chunk_id, "doc", "", text, 0.5, 1, {})


def test_identical_text_across_silos_collapses_onto_the_first() -> None:
    first, copy = p("hospital-a", "c1", GUIDELINE), p("hospital-b", "c9", GUIDELINE)
    kept, removed = deduplicate([first, copy])
    assert kept == [first]
    assert removed == 1


def test_case_and_punctuation_do_not_hide_a_copy() -> None:
    shouty = GUIDELINE.upper().replace(" ", " ... ").replace(";", "!!")
    kept, removed = deduplicate([p("a", "c1", GUIDELINE), p("b", "c2", shouty)])
    assert (len(kept), removed) == (1, 1)


def test_near_identical_text_collapses() -> None:
    edited = GUIDELINE.replace("returns after initial treatment", "returns after first treatment")
    assert 0.85 <= jaccard(shingles(GUIDELINE), shingles(edited)) < 1.0
    kept, removed = deduplicate([p("a", "c1", GUIDELINE), p("b", "c2", edited)])
    assert [x.chunk_id for x in kept] == ["c1"]
    assert removed == 1


def test_different_texts_are_kept_in_order() -> None:
    passages = [p("a", "c1", GUIDELINE), p("b", "c2", DIFFERENT), p("c", "c3", "aspirin for fever")]
    assert deduplicate(passages) == (passages, 0)


def test_short_texts_compare_as_word_sets() -> None:
    assert shingles("Aspirin, for FEVER!") == frozenset({("aspirin",), ("for",), ("fever",)})
    kept, removed = deduplicate([p("a", "c1", "Aspirin for fever."), p("b", "c2", "fever: aspirin for")])
    assert (len(kept), removed) == (1, 1)
    kept, removed = deduplicate([p("a", "c1", "Aspirin for fever."), p("b", "c2", "Paracetamol for pain.")])
    assert removed == 0


def test_a_short_text_is_not_a_copy_of_a_long_one_that_contains_it() -> None:
    passages = [p("a", "c1", GUIDELINE), p("b", "c2", "adults with pneumonia")]
    assert deduplicate(passages) == (passages, 0)


def test_shingles_are_five_word_windows() -> None:
    assert shingles("one two three four five six") == frozenset(
        {("one", "two", "three", "four", "five"), ("two", "three", "four", "five", "six")}
    )


def test_jaccard_of_empty_sets_is_one() -> None:
    assert jaccard(frozenset(), frozenset()) == 1.0
    assert jaccard(frozenset({("a",)}), frozenset()) == 0.0


def test_threshold_decides_what_counts_as_a_copy() -> None:
    words = GUIDELINE.split()
    half_changed = " ".join(words[: len(words) // 2] + ["zzz"] * (len(words) - len(words) // 2))
    passages = [p("a", "c1", GUIDELINE), p("b", "c2", half_changed)]
    assert deduplicate(passages, threshold=0.85)[1] == 0
    assert deduplicate(passages, threshold=0.3)[1] == 1


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01])
def test_threshold_must_be_in_range(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([], threshold=threshold)


texts = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta"]), min_size=0, max_size=9).map(" ".join)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(texts, max_size=8), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_removed_set_only_grows_as_the_threshold_falls(raw: list[str], t1: float, t2: float) -> None:
    low, high = sorted((t1, t2))
    passages = [p("s", f"c{i}", text or "empty") for i, text in enumerate(raw)]
    kept_low, removed_low = deduplicate(passages, threshold=low)
    kept_high, removed_high = deduplicate(passages, threshold=high)
    assert removed_low >= removed_high
    assert {x.chunk_id for x in kept_low} <= {x.chunk_id for x in kept_high}
    assert len(kept_low) + removed_low == len(passages)
    if passages:
        assert kept_low[0] is passages[0]
    assert [x.chunk_id for x in kept_high] == sorted((x.chunk_id for x in kept_high), key=lambda c: int(c[1:]))


def reference(passages: list[Passage], threshold: float) -> list[str]:
    """Brute force: drop a passage whose Jaccard index with any earlier one reaches the threshold."""

    def similarity(a: str, b: str) -> float:
        if min(len(a.split()), len(b.split())) < 5:
            return jaccard(shingles(a, 1), shingles(b, 1))
        return jaccard(shingles(a), shingles(b))

    return [
        x.chunk_id
        for j, x in enumerate(passages)
        if all(similarity(passages[i].text, x.text) < threshold for i in range(j))
    ]


long_texts = st.lists(st.sampled_from(["alpha", "beta", "gamma"]), min_size=3, max_size=14).map(" ".join)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(long_texts, max_size=7), st.floats(0.05, 1.0))
def test_fast_path_agrees_with_brute_force(raw: list[str], threshold: float) -> None:
    passages = [p("s", f"c{i}", text) for i, text in enumerate(raw)]
    kept, _ = deduplicate(passages, threshold=threshold)
    assert [x.chunk_id for x in kept] == reference(passages, threshold)
