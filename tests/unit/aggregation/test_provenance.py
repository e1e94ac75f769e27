from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import Passage, SourceRef, assign_sources

pytestmark = pytest.mark.unit

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)


def p(silo: str, chunk_id: str) -> Passage:
    return Passage(silo, chunk_id, "doc", "", "text", 0.5, 1, {})


def answer() -> list[Passage]:
    return [p("hospital-a", "c1"), p("code-docs", "c2"), p("hospital-a", "c3"), p("pubmed", "c4")]


def test_real_names_when_the_federation_allows_it() -> None:
    refs = assign_sources(answer(), show_silo_names=True)
    assert [(r.number, r.silo_label, r.passage.chunk_id) for r in refs] == [
        (1, "hospital-a", "c1"),
        (2, "code-docs", "c2"),
        (3, "hospital-a", "c3"),
        (4, "pubmed", "c4"),
    ]


def test_pseudonyms_are_consistent_within_an_answer() -> None:
    passages = answer()
    refs = assign_sources(passages, show_silo_names=False, rng=random.Random(7))
    assert [r.number for r in refs] == [1, 2, 3, 4]
    assert [r.passage for r in refs] == passages
    labels = [r.silo_label for r in refs]
    assert labels[0] == labels[2]
    assert len({labels[0], labels[1], labels[3]}) == 3
    assert all(label.startswith("source-silo-") for label in labels)
    for ref in refs:
        assert ref.passage.silo.casefold() not in ref.silo_label.casefold()


def test_pseudonyms_vary_across_answers() -> None:
    seen = set()
    for seed in range(20):
        refs = assign_sources(answer(), show_silo_names=False, rng=random.Random(seed))
        seen.add(tuple(r.silo_label for r in refs))
    assert len(seen) > 10


def test_without_an_rng_the_system_generator_is_used() -> None:
    refs = assign_sources(answer(), show_silo_names=False)
    assert isinstance(refs[0], SourceRef)
    assert refs[0].silo_label.startswith("source-silo-")


@pytest.mark.parametrize("names", [["A", "b"], ["silo-A", "source-silo-B"], ["o"], ["source"], ["s", "x"]])
def test_names_that_look_like_pseudonyms_are_never_shown(names: list[str]) -> None:
    passages = [p(name, f"c{i}") for i, name in enumerate(names)]
    for seed in range(30):
        refs = assign_sources(passages, show_silo_names=False, rng=random.Random(seed))
        labels = {r.silo_label for r in refs}
        assert len(labels) == len(names)
        for label in labels:
            assert not any(name.casefold() in label.casefold() for name in names)


def test_more_silos_than_letters() -> None:
    passages = [p(f"silo{i:02d}", "c") for i in range(40)]
    refs = assign_sources(passages, show_silo_names=False, rng=random.Random(1))
    assert len({r.silo_label for r in refs}) == 40


def test_empty_answer() -> None:
    assert assign_sources([], show_silo_names=False) == []


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(NAME, st.integers(0, 5)), max_size=12), st.integers(0, 2**32 - 1))
def test_pseudonym_properties(raw: list[tuple[str, int]], seed: int) -> None:
    passages = [p(name, f"c{i}-{n}") for i, (name, n) in enumerate(raw)]
    refs = assign_sources(passages, show_silo_names=False, rng=random.Random(seed))
    assert [r.number for r in refs] == list(range(1, len(passages) + 1))
    label_of: dict[str, str] = {}
    for ref in refs:
        assert label_of.setdefault(ref.passage.silo, ref.silo_label) == ref.silo_label
    assert len(set(label_of.values())) == len(label_of)
    for label in label_of.values():
        assert not any(name.casefold() in label.casefold() for name in label_of)
