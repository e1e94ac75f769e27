from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from silo_node.policy import gumbel_top_k, laplace_scores

pytestmark = pytest.mark.unit

SCORES = np.array([0.91, 0.88, 0.75, 0.74, 0.60, 0.42, 0.30, 0.12, 0.05, -0.20])


def test_small_epsilon_selection_is_noisy() -> None:
    rng = np.random.default_rng(1)
    picked = {frozenset(gumbel_top_k(SCORES, 3, epsilon=0.5, sensitivity=1.0, rng=rng).tolist()) for _ in range(50)}
    assert len(picked) > 5  # the same query often releases a different set


def test_large_epsilon_converges_to_exact_top_k() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        picked = gumbel_top_k(SCORES, 3, epsilon=1e6, sensitivity=1.0, rng=rng)
        assert picked.tolist() == [0, 1, 2]


def test_exact_top_k_becomes_more_likely_as_epsilon_grows() -> None:
    rng = np.random.default_rng(3)

    def hit_rate(epsilon: float) -> float:
        runs = 400
        hits = sum(set(gumbel_top_k(SCORES, 3, epsilon, 1.0, rng).tolist()) == {0, 1, 2} for _ in range(runs))
        return hits / runs

    rates = [hit_rate(eps) for eps in (1.0, 30.0, 3000.0)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] > 0.9


def test_single_pick_matches_the_exponential_mechanism() -> None:
    # For k = 1 the Gumbel-max trick samples index i with probability proportional to
    # exp(eps * u_i / (2 * sensitivity)): the exponential mechanism.
    scores = np.array([1.0, 0.5, 0.0])
    epsilon, sensitivity, runs = 2.0, 1.0, 20_000
    rng = np.random.default_rng(4)
    counts = np.bincount([int(gumbel_top_k(scores, 1, epsilon, sensitivity, rng)[0]) for _ in range(runs)], minlength=3)
    weights = np.exp(epsilon * scores / (2 * sensitivity))
    expected = weights / weights.sum()
    assert np.allclose(counts / runs, expected, atol=0.015)


def test_same_seed_same_selection() -> None:
    a = gumbel_top_k(SCORES, 4, 1.0, 1.0, np.random.default_rng(7))
    b = gumbel_top_k(SCORES, 4, 1.0, 1.0, np.random.default_rng(7))
    assert a.tolist() == b.tolist()


def test_k_larger_than_pool_returns_every_index_once() -> None:
    picked = gumbel_top_k(SCORES[:4], 10, 1.0, 1.0, np.random.default_rng(5))
    assert sorted(picked.tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("scores", "k", "epsilon", "sensitivity"),
    [
        (np.zeros((2, 2)), 1, 1.0, 1.0),
        (np.array([0.1, math.nan]), 1, 1.0, 1.0),
        (SCORES, -1, 1.0, 1.0),
        (SCORES, 1, 0.0, 1.0),
        (SCORES, 1, 1.0, -1.0),
        (SCORES, 1, math.inf, 1.0),
    ],
)
def test_invalid_arguments_are_refused(scores: np.ndarray, k: int, epsilon: float, sensitivity: float) -> None:
    with pytest.raises(ValueError):
        gumbel_top_k(scores, k, epsilon, sensitivity, np.random.default_rng(0))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    scores=arrays(np.float64, st.integers(0, 40), elements=st.floats(-1, 1)),
    k=st.integers(0, 50),
    epsilon=st.floats(0.01, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_picks_are_distinct_valid_indices(scores: np.ndarray, k: int, epsilon: float, seed: int) -> None:
    picked = gumbel_top_k(scores, k, epsilon, 1.0, np.random.default_rng(seed))
    assert picked.dtype == np.intp
    assert len(picked) == min(k, len(scores))
    assert len(set(picked.tolist())) == len(picked)
    assert all(0 <= i < len(scores) for i in picked.tolist())


def test_laplace_scores_are_clamped_and_unbiased_inside_the_range() -> None:
    rng = np.random.default_rng(6)
    noisy = laplace_scores(np.full(20_000, 0.2), epsilon=5.0, sensitivity=0.5, rng=rng, low=-10, high=10)
    assert abs(noisy.mean() - 0.2) < 0.01
    # Laplace(b) has standard deviation sqrt(2) * b, here b = sensitivity / epsilon = 0.1.
    assert noisy.std() == pytest.approx(math.sqrt(2) * 0.1, rel=0.05)
    clamped = laplace_scores(np.array([0.99, -0.99]), epsilon=0.01, sensitivity=1.0, rng=rng)
    assert np.all(clamped >= -1) and np.all(clamped <= 1)


def test_laplace_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        laplace_scores([0.1], epsilon=0, sensitivity=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        laplace_scores([0.1], epsilon=1, sensitivity=1, rng=np.random.default_rng(0), low=1, high=0)
