from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import CalibratedMerger, Merger, Passage, RRFMerger, ScoreMerger, make_merger
from federation.errors import ConfigError

pytestmark = pytest.mark.unit

MERGERS: list[Merger] = [ScoreMerger(), RRFMerger(), CalibratedMerger()]


def p(silo: str, chunk_id: str, score: float, rank: int) -> Passage:
    return Passage(silo, chunk_id, f"doc-{chunk_id}", "", f"text of {chunk_id}", score, rank, {})


def ids(passages: Sequence[Passage]) -> list[str]:
    return [f"{x.silo}:{x.chunk_id}" for x in passages]


def three_silos() -> dict[str, list[Passage]]:
    return {
        "a": [p("a", "a1", 0.9, 1), p("a", "a2", 0.5, 2)],
        "b": [p("b", "b1", 0.8, 1), p("b", "b2", 0.7, 2)],
        "c": [p("c", "c1", 0.6, 1)],
    }


def test_score_merger_is_global_top_k_by_score() -> None:
    merged = ScoreMerger().merge(three_silos(), 3)
    assert ids(merged) == ["a:a1", "b:b1", "b:b2"]
    assert ids(ScoreMerger().merge(three_silos(), 10)) == ["a:a1", "b:b1", "b:b2", "c:c1", "a:a2"]


def test_score_ties_break_by_silo_name_then_rank() -> None:
    per_silo = {
        "zeta": [p("zeta", "z1", 0.5, 1)],
        "alpha": [p("alpha", "x1", 0.5, 1), p("alpha", "x2", 0.5, 2)],
    }
    assert ids(ScoreMerger().merge(per_silo, 3)) == ["alpha:x1", "alpha:x2", "zeta:z1"]


def test_rrf_interleaves_silos_rank_by_rank_and_keeps_original_scores() -> None:
    # Fused: rank 1 -> 1/61 (a1, b1, c1), rank 2 -> 1/62 (a2, b2); ties by original score.
    merged = RRFMerger().merge(three_silos(), 5)
    assert ids(merged) == ["a:a1", "b:b1", "c:c1", "b:b2", "a:a2"]
    assert [x.score for x in merged] == [0.9, 0.8, 0.6, 0.7, 0.5]


def test_rrf_follows_the_papers_formula() -> None:
    # Cormack et al. 2009: RRF(d) = sum over rankings r of 1 / (k + r(d)), k = 60.
    # run1 ranks d1, d2, d3; run2 ranks d3, d2. By hand:
    #   d1 = 1/61                 = 0.016393
    #   d2 = 1/62 + 1/62          = 0.032258
    #   d3 = 1/63 + 1/61          = 0.032266
    per_run = {
        "run1": [p("s", "d1", 0.9, 1), p("s", "d2", 0.5, 2), p("s", "d3", 0.3, 3)],
        "run2": [p("s", "d3", 0.3, 1), p("s", "d2", 0.5, 2)],
    }
    merger = RRFMerger(k0=60)
    fused = merger.fused_scores(per_run)
    assert fused[("s", "d1")] == pytest.approx(1 / 61)
    assert fused[("s", "d2")] == pytest.approx(2 / 62)
    assert fused[("s", "d3")] == pytest.approx(1 / 63 + 1 / 61)
    merged = merger.merge(per_run, 3)
    assert [x.chunk_id for x in merged] == ["d3", "d2", "d1"]
    assert [x.score for x in merged] == [0.3, 0.5, 0.9]
    # A small k0 weighs top ranks more: d1 = 1/1, d2 = 1/2 + 1/2, d3 = 1/3 + 1/1; d1/d2 tie -> score.
    assert [x.chunk_id for x in RRFMerger(k0=0).merge(per_run, 3)] == ["d3", "d1", "d2"]


def test_rrf_refuses_negative_k0() -> None:
    with pytest.raises(ValueError, match="k0"):
        RRFMerger(k0=-1)


def low_and_high() -> dict[str, list[Passage]]:
    return {
        "high": [p("high", "h1", 0.90, 1), p("high", "h2", 0.85, 2), p("high", "h3", 0.80, 3)],
        "low": [p("low", "l1", 0.30, 1), p("low", "l2", 0.20, 2), p("low", "l3", 0.10, 3)],
    }


def test_calibrated_lifts_a_silo_whose_scores_are_low_but_relatively_best() -> None:
    assert ids(ScoreMerger().merge(low_and_high(), 2)) == ["high:h1", "high:h2"]
    # z-scores: h1, l1 = +1.22; h2, l2 = 0; h3, l3 = -1.22; ties by original score.
    assert ids(CalibratedMerger().merge(low_and_high(), 2)) == ["high:h1", "low:l1"]
    assert ids(CalibratedMerger().merge(low_and_high(), 4)) == ["high:h1", "low:l1", "high:h2", "low:l2"]
    merged = CalibratedMerger().merge(low_and_high(), 2)
    assert [x.score for x in merged] == [0.90, 0.30]


def test_calibrated_falls_back_to_pooled_scores_for_a_single_hit() -> None:
    # Pooled over 0.90, 0.85, 0.80, 0.95: mean 0.875, std 0.0559; the single 0.95 -> z = +1.34,
    # above h1's within-silo z of +1.22.
    per_silo = {"high": low_and_high()["high"], "one": [p("one", "o1", 0.95, 1)]}
    assert ids(CalibratedMerger().merge(per_silo, 4)) == ["one:o1", "high:h1", "high:h2", "high:h3"]
    # A weak single hit (0.5, pooled z = -1.7) does not jump the queue.
    per_silo = {"high": low_and_high()["high"], "one": [p("one", "o1", 0.5, 1)]}
    assert ids(CalibratedMerger().merge(per_silo, 4)) == ["high:h1", "high:h2", "high:h3", "one:o1"]


def test_calibrated_handles_zero_variance_everywhere() -> None:
    per_silo = {"b": [p("b", "b1", 0.5, 1)], "a": [p("a", "a1", 0.5, 1), p("a", "a2", 0.5, 2)]}
    calibrated = CalibratedMerger().calibrated_scores(per_silo)
    assert set(calibrated.values()) == {0.0}
    assert ids(CalibratedMerger().merge(per_silo, 3)) == ["a:a1", "a:a2", "b:b1"]


@pytest.mark.parametrize("merger", MERGERS, ids=lambda m: m.name)
def test_edge_cases(merger: Merger) -> None:
    assert isinstance(merger, Merger)
    assert merger.merge({}, 5) == []
    assert merger.merge(three_silos(), 0) == []
    assert merger.merge({"a": []}, 5) == []


@pytest.mark.parametrize("merger", MERGERS, ids=lambda m: m.name)
def test_a_passage_listed_twice_comes_out_once(merger: Merger) -> None:
    twice = p("a", "a1", 0.9, 1)
    per_silo = {"a": [twice, twice], "a-again": [twice]}
    assert ids(merger.merge(per_silo, 5)) == ["a:a1"]


def test_make_merger_by_name() -> None:
    assert isinstance(make_merger("score"), ScoreMerger)
    assert isinstance(make_merger("rrf"), RRFMerger)
    assert isinstance(make_merger("calibrated"), CalibratedMerger)
    for name in ("score", "rrf", "calibrated"):
        assert make_merger(name).name == name


def test_make_merger_lists_the_choices_for_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match=r"'bm25'.*calibrated, rrf, score"):
        make_merger("bm25")


@st.composite
def per_silo_passages(draw: st.DrawFn) -> dict[str, list[Passage]]:
    silos = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    result: dict[str, list[Passage]] = {}
    for silo in silos:
        # Coarse scores so that ties across and within silos are common.
        scores = draw(st.lists(st.integers(-10, 10).map(lambda s: s / 10), max_size=6))
        scores.sort(reverse=True)
        result[silo] = [p(silo, f"{silo}{i}", s, i + 1) for i, s in enumerate(scores)]
    return result


@settings(max_examples=150, deadline=None, derandomize=True)
@given(per_silo_passages(), st.integers(0, 12), st.sampled_from(MERGERS))
def test_merger_properties(per_silo: Mapping[str, list[Passage]], k: int, merger: Merger) -> None:
    merged = merger.merge(per_silo, k)
    inputs = [x for passages in per_silo.values() for x in passages]
    assert len(merged) == min(k, len(inputs))
    assert len({x.key for x in merged}) == len(merged)
    assert all(any(x is y for y in inputs) for x in merged)
    assert merger.merge(per_silo, k) == merged
    reordered = {silo: per_silo[silo] for silo in reversed(list(per_silo))}
    assert merger.merge(reordered, k) == merged
    # A longer list starts with the shorter one.
    assert merger.merge(per_silo, k + 3)[: len(merged)] == merged
    if isinstance(merger, ScoreMerger):
        assert [x.score for x in merged] == sorted((x.score for x in merged), reverse=True)
