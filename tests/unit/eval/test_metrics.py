from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from eval.metrics import (
    MultipleChoiceTally,
    accuracy,
    bootstrap_ci,
    bootstrap_ratio_ci,
    citation_validity,
    interval,
    ndcg_at_k,
    overlap_at_k,
    pass_at_k,
    percentiles,
    recall_at_k,
    silo_recall,
)

pytestmark = pytest.mark.unit

LOG2_3 = math.log2(3)  # 1.58496...: the discount denominator at rank 2
LOG2_5 = math.log2(5)  # 2.32193...: at rank 4


# --- recall@k ---------------------------------------------------------------------------


def test_recall_counts_gold_ids_in_the_first_k() -> None:
    retrieved = ["a", "b", "c", "d"]
    gold = {"b", "d", "x"}
    # top-2 = {a, b}; {a, b} ∩ gold = {b} → 1/3
    assert recall_at_k(retrieved, gold, 2) == pytest.approx(1 / 3)
    # top-4 = {a, b, c, d}; ∩ gold = {b, d} → 2/3
    assert recall_at_k(retrieved, gold, 4) == pytest.approx(2 / 3)
    # k beyond the list is the whole list
    assert recall_at_k(retrieved, gold, 100) == pytest.approx(2 / 3)


def test_recall_counts_a_repeated_gold_id_once() -> None:
    # top-2 = [b, b] → {b}; gold {b, c} → 1/2, not 2/2
    assert recall_at_k(["b", "b", "c"], ["b", "c"], 2) == 0.5


def test_recall_rejects_empty_gold_and_bad_k() -> None:
    with pytest.raises(ValueError, match="gold"):
        recall_at_k(["a"], [], 5)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(["a"], ["a"], 0)


# --- nDCG@k -----------------------------------------------------------------------------


def test_ndcg_by_hand() -> None:
    # hits at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # |gold| = 2: IDCG = 1/log2(2) + 1/log2(3) = 1 + 0.63093 = 1.63093
    # nDCG = 1.06161 / 1.63093 = 0.65092
    value = ndcg_at_k(["x", "a", "y", "b"], {"a", "b"}, k=4)
    assert value == pytest.approx((1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3))
    assert value == pytest.approx(0.65092, abs=1e-5)


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_without_hits() -> None:
    assert ndcg_at_k(["a", "b", "z"], {"a", "b"}, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, k=2) == 0.0


def test_ndcg_ideal_uses_min_of_gold_and_k() -> None:
    # three gold ids but k = 1: IDCG = 1, DCG = 1 → 1.0 (not 1 / (1 + 0.63 + 0.5))
    assert ndcg_at_k(["a"], {"a", "b", "c"}, k=1) == pytest.approx(1.0)


def test_ndcg_repeated_hit_earns_nothing() -> None:
    # [a, a]: DCG = 1 (the second a is a repeat); IDCG = 1 + 1/log2(3) = 1.63093 → 0.61315
    assert ndcg_at_k(["a", "a"], {"a", "b"}, k=2) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_ndcg_rejects_empty_gold() -> None:
    with pytest.raises(ValueError, match="gold"):
        ndcg_at_k(["a"], set())


# --- overlap@k (federation gap) ---------------------------------------------------------


def test_overlap_by_hand() -> None:
    # {a, b, c} ∩ {a, c, d} = {a, c} → 2 / min(3, 3) = 2/3
    assert overlap_at_k(["a", "b", "c"], ["a", "c", "d"], 3) == pytest.approx(2 / 3)
    # only the first k of each list count: {x, y} ∩ {a, b} = {} → 0
    assert overlap_at_k(["x", "y", "a"], ["a", "b"], 2) == 0.0


def test_overlap_divides_by_the_reference_when_it_is_shorter_than_k() -> None:
    # reference [a]: 1 / min(5, 1) = 1.0
    assert overlap_at_k(["b", "a"], ["a"], 5) == 1.0


def test_overlap_with_empty_reference_is_vacuously_one() -> None:
    assert overlap_at_k([], [], 10) == 1.0
    assert overlap_at_k(["a"], [], 10) == 1.0


# --- routing, answers, citations --------------------------------------------------------


def test_silo_recall() -> None:
    # {h1, h2} ∩ {h2, h3} = {h2} → 1/2
    assert silo_recall({"h1", "h2"}, {"h2", "h3"}) == 0.5
    assert silo_recall([], {"h2"}) == 0.0
    assert silo_recall({"h1"}, set()) is None


def test_accuracy_counts_unparseable_as_wrong() -> None:
    tally = accuracy([0, 1, None, 3], [0, 2, 1, 3])
    # right at positions 0 and 3; position 1 wrong; position 2 unparseable (also wrong)
    assert tally == MultipleChoiceTally(correct=2, wrong=2, unparseable=1, total=4)
    assert tally.accuracy == 0.5


def test_accuracy_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="3 predictions for 2 answers"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="without questions"):
        accuracy([], [])


def test_citation_validity() -> None:
    # cited {1, 3, 7} (3 twice counts once); retrieved {1, 2, 3} → {1, 3} → 2/3
    assert citation_validity([1, 3, 3, 7], [1, 2, 3]) == pytest.approx(2 / 3)
    assert citation_validity([4], [1, 2, 3]) == 0.0
    assert citation_validity([], [1, 2]) is None


# --- bootstrap --------------------------------------------------------------------------


def test_bootstrap_of_two_values_by_hand() -> None:
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles of 1000 draws are 0 and 1; the point estimate is 0.5
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)


def test_bootstrap_single_value() -> None:
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)


def test_bootstrap_contains_the_mean_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(42)
    small = rng.binomial(1, 0.6, size=50).astype(float).tolist()
    large = rng.binomial(1, 0.6, size=2000).astype(float).tolist()
    point_s, low_s, high_s = bootstrap_ci(small)
    point_l, low_l, high_l = bootstrap_ci(large)
    assert point_s == pytest.approx(float(np.mean(small)))
    assert low_s < point_s < high_s
    assert low_l < point_l < high_l
    # the width shrinks roughly as 1/sqrt(n): sqrt(2000 / 50) ≈ 6.3
    assert (high_l - low_l) < (high_s - low_s) / 4


def test_bootstrap_is_deterministic_by_seed() -> None:
    values = [0.1, 0.4, 0.35, 0.8, 0.9, 0.05, 0.6]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_other_statistic_and_confidence() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    point, low, high = bootstrap_ci(values, statistic=lambda a: float(np.median(a)))
    assert point == 3.0
    assert low <= point <= high <= 100.0
    _, low_90, high_90 = bootstrap_ci(values, statistic=lambda a: float(np.median(a)), confidence=0.5)
    assert low <= low_90 <= high_90 <= high


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "at least one value"),
        ([1.0, math.nan], {}, "finite"),
        ([1.0, 2.0], {"confidence": 1.0}, "confidence"),
        ([1.0, 2.0], {"resamples": 0}, "resamples"),
    ],
)
def test_bootstrap_rejects_bad_input(values: list[float], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(values, **kwargs)


# --- latency percentiles ----------------------------------------------------------------


def test_percentiles_by_hand() -> None:
    # 5 sorted samples; q reads position 4 * q / 100: p50 → 2 → 30; p95 → 3.8 → 40 + 0.8 * 10 = 48
    assert percentiles([50.0, 10.0, 30.0, 20.0, 40.0]) == {"p50": 30.0, "p95": pytest.approx(48.0)}
    assert set(percentiles([1.0, 2.0], qs=(99.9, 0, 100))) == {"p99.9", "p0", "p100"}


def test_percentiles_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        percentiles([])
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentiles([1.0], qs=(101,))


def test_pooled_share_weighs_items_by_their_units_and_resamples_whole_items() -> None:
    # three answers: 1 of 1, 0 of 3 and 2 of 2 claims supported; one with no claims is left out
    share, low, high = bootstrap_ratio_ci([1, 0, 2, 0], [1, 3, 2, 0])
    assert share == pytest.approx(3 / 6)
    assert 0.0 <= low < share < high <= 1.0
    # a resample holds whole answers, so the bounds are shares of whole answers: 0/3 and 3/3 are reachable
    assert low == pytest.approx(0.0) and high == pytest.approx(1.0)
    assert bootstrap_ratio_ci([1, 0, 2], [1, 3, 2]) == bootstrap_ratio_ci([1, 0, 2], [1, 3, 2])
    assert bootstrap_ratio_ci([2], [4]) == (0.5, 0.5, 0.5)


def test_pooled_share_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="at least one item with units"):
        bootstrap_ratio_ci([0], [0])
    with pytest.raises(ValueError, match="between 0 and its total"):
        bootstrap_ratio_ci([3], [2])
    with pytest.raises(ValueError, match="2 success counts for 1"):
        bootstrap_ratio_ci([1, 1], [2])


def test_interval_is_the_mean_with_its_bounds_and_count() -> None:
    figure = interval([0.0, 1.0, 1.0, 1.0])
    assert figure is not None
    assert figure["mean"] == 0.75 and figure["n"] == 4 and figure["low"] <= 0.75 <= figure["high"]
    assert interval([]) is None


# --- pass@k -----------------------------------------------------------------------------


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    # 1 - C(3, 2) / C(5, 2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 3) == 0.0
    # n - c = 1 < k = 2: every pair holds a pass
    assert pass_at_k(5, 4, 2) == 1.0


def test_pass_at_k_matches_the_binomial_formula() -> None:
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)
