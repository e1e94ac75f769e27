"""Privacy-loss tests of the DP answer's mechanisms: exact output distributions on neighbouring inputs.

Neighbours: one document added or removed. It sits in one voter's group, so one vote changes
(to anything), and the disagreement count moves by at most 1. Each mechanism must keep every
output's probability within e^epsilon across such neighbours.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from gateway.dp_vote import SparseVectorTest, answer_epsilon, choose_token, disagreement, vote_distribution
from silo_node.policy.privacy_loss import max_log_ratio

pytestmark = pytest.mark.unit

DOMAIN = ("A", "B", "C", "D")


def _neighbours(votes: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every vote vector with one voter's vote replaced, or one voter left without the document's vote."""
    out = []
    for i in range(len(votes)):
        for other in (*DOMAIN, "Z"):  # Z: a token outside the public domain
            out.append((*votes[:i], other, *votes[i + 1 :]))
    return out


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0])
def test_the_vote_is_epsilon_dp_for_one_changed_voter(epsilon: float) -> None:
    worst = 0.0
    for votes in itertools.product((*DOMAIN, "Z"), repeat=3):
        p = vote_distribution(votes, DOMAIN, epsilon)
        for other in _neighbours(votes):
            worst = max(worst, max_log_ratio(p, vote_distribution(other, DOMAIN, epsilon)))
    assert worst <= epsilon + 1e-12
    assert worst > epsilon / 2  # not vacuous: one voter's move is visible


def _laplace_cdf(x: float | np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < 0, 0.5 * np.exp(x / scale), 1.0 - 0.5 * np.exp(-x / scale))


@functools.cache
def _svt_outcomes(queries: tuple[float, ...], threshold: float, epsilon: float) -> dict[str, float]:
    """Exact probabilities of each outcome of one AboveThreshold run over ``queries``.

    Outcome ``"above@i"``: queries before ``i`` below, query ``i`` above; ``"never"``: all below.
    Integrated over the threshold noise on a fine grid (the query noises have closed forms).
    """
    rho_scale, nu_scale = 2.0 / epsilon, 4.0 / epsilon
    grid = np.linspace(-40 * rho_scale, 40 * rho_scale, 40_001)
    density = np.exp(-np.abs(grid) / rho_scale) / (2 * rho_scale)
    step = grid[1] - grid[0]
    still_below = np.ones_like(grid)
    out: dict[str, float] = {}
    for i, q in enumerate(queries):
        p_below = _laplace_cdf(threshold + grid - q, nu_scale)  # P(q + nu < T + rho)
        out[f"above@{i}"] = float(np.sum(density * still_below * (1 - p_below)) * step)
        still_below = still_below * p_below
    out["never"] = float(np.sum(density * still_below) * step)
    return out


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_the_sparse_vector_test_is_epsilon_dp_per_positive(epsilon: float) -> None:
    threshold = 2.0
    worst = 0.0
    for queries in itertools.product((0, 1, 2, 3, 4), repeat=3):
        p = _svt_outcomes(queries, threshold, epsilon)
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-6)
        for shift in itertools.product((-1, 0, 1), repeat=3):
            moved = tuple(q + s for q, s in zip(queries, shift, strict=True))
            worst = max(worst, max_log_ratio(p, _svt_outcomes(moved, threshold, epsilon)))
    assert worst <= epsilon * (1 + 1e-6)
    assert worst > epsilon / 4


def test_one_token_answer_composes_the_test_and_the_vote() -> None:
    """The token of a one-token answer (free model's token, or a paid vote) stays within eps_test + eps_token."""
    eps_test, eps_token, threshold, free = 1.0, 2.0, 1.5, "A"

    def token_distribution(votes: tuple[str, ...]) -> dict[str, float]:
        p_pay = _svt_outcomes((disagreement(votes, free),), threshold, eps_test)["above@0"]
        out = {t: p_pay * p for t, p in vote_distribution(votes, DOMAIN, eps_token).items()}
        out[free] = out.get(free, 0.0) + (1 - p_pay)
        return out

    worst = 0.0
    for votes in itertools.product(DOMAIN, repeat=3):
        p = token_distribution(votes)
        for other in _neighbours(votes):
            worst = max(worst, max_log_ratio(p, token_distribution(other)))
    assert worst <= answer_epsilon(1, eps_test, eps_token)


def test_choose_token_samples_the_exact_distribution() -> None:
    rng = np.random.default_rng(0)
    votes, draws = ("B", "B", "C", "Z"), 20_000
    exact = vote_distribution(votes, DOMAIN, 2.0)
    counts = {t: 0 for t in DOMAIN}
    for _ in range(draws):
        counts[choose_token(votes, DOMAIN, 2.0, rng)] += 1
    for token, p in exact.items():
        assert abs(counts[token] / draws - p) < 4 * math.sqrt(p * (1 - p) / draws)


def test_sparse_vector_test_pays_when_voters_disagree() -> None:
    rng = np.random.default_rng(1)
    test = SparseVectorTest(threshold=2.0, epsilon_test=8.0, rng=rng)
    assert sum(test.above(0) for _ in range(200)) < 10  # agreeing voters: free tokens
    assert sum(test.above(4) for _ in range(200)) > 190  # all four disagree: paid


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        vote_distribution(("A",), (), 1.0)
    with pytest.raises(ValueError):
        vote_distribution(("A",), DOMAIN, 0.0)
    with pytest.raises(ValueError):
        SparseVectorTest(1.0, -1.0, np.random.default_rng(0))
