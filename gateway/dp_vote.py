"""The mechanisms of a DP answer: a sparse-vector test that pays only when voters disagree, and a vote.

A DP answer (:mod:`gateway.dp_answer`) is generated token by token. At each step the model
*without retrieval* proposes a token; that costs no privacy, since it sees no silo text.
``m`` voters, each the same model reading a disjoint group of passages, propose theirs. A
document is in at most one voter's group, so adding or removing it changes at most one vote:
every count below moves by at most 1 between neighbouring databases.

- :class:`SparseVectorTest` (AboveThreshold, Dwork & Roth 2014, Alg. 1, restarted after each
  positive): asks whether the number of voters who disagree with the free token, plus
  Laplace noise, exceeds a noisy public threshold. Below it the free token is used and nothing
  is paid; each positive answer costs ``epsilon_test`` (the run that never ends in a positive
  is covered by the same accounting: at most ``max_paid`` runs, ``max_paid * epsilon_test``).
- :func:`vote_distribution` / :func:`choose_token`: on a positive, the exponential mechanism over
  the voters' counts, restricted to a *public* domain (the free model's top tokens), picks the
  token: probability proportional to ``exp(epsilon_token * count / 2)``, ``epsilon_token``-DP.

So an answer with at most ``max_paid`` paid tokens is ``max_paid * (epsilon_test +
epsilon_token)``-DP for each document (basic composition), whatever the voters say.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

__all__ = ["SparseVectorTest", "answer_epsilon", "choose_token", "disagreement", "vote_distribution"]

_T = TypeVar("_T", bound=Hashable)

COUNT_SENSITIVITY = 1.0
"""How far one document moves a vote count: it sits in one voter's group, and that voter has one vote."""


def answer_epsilon(max_paid: int, epsilon_test: float, epsilon_token: float) -> float:
    """The guarantee of one answer, per document: every paid token pays for its test and its choice."""
    return max_paid * (epsilon_test + epsilon_token)


def disagreement(votes: Sequence[_T], free_token: _T) -> int:
    """How many voters propose another token than the free one (the test's query; sensitivity 1)."""
    return sum(1 for vote in votes if vote != free_token)


def vote_distribution(votes: Sequence[_T], domain: Sequence[_T], epsilon_token: float) -> dict[_T, float]:
    """Exact distribution of the chosen token: ``exp(epsilon * count / (2 * sensitivity))`` over ``domain``.

    Votes outside the domain count for nothing; the domain must not depend on private data (it
    is the free model's top tokens).

    Raises:
        ValueError: an empty domain, or ``epsilon_token`` not positive.
    """
    if not domain:
        raise ValueError("the token domain is empty")
    if not (math.isfinite(epsilon_token) and epsilon_token > 0):
        raise ValueError(f"epsilon_token must be positive, got {epsilon_token!r}")
    counts = Counter(votes)
    unique = list(dict.fromkeys(domain))
    rate = epsilon_token / (2.0 * COUNT_SENSITIVITY)
    top = max(counts.get(t, 0) for t in unique)
    weights = [math.exp(rate * (counts.get(t, 0) - top)) for t in unique]
    total = sum(weights)
    return {t: w / total for t, w in zip(unique, weights, strict=True)}


def choose_token(votes: Sequence[_T], domain: Sequence[_T], epsilon_token: float, rng: np.random.Generator) -> _T:
    """Draw the paid token from :func:`vote_distribution`."""
    distribution = vote_distribution(votes, domain, epsilon_token)
    tokens = list(distribution)
    return tokens[int(rng.choice(len(tokens), p=np.fromiter(distribution.values(), dtype=np.float64)))]


class SparseVectorTest:
    """AboveThreshold with restarts: is the noisy disagreement above the noisy threshold?

    Args:
        threshold: the public threshold on the number of disagreeing voters.
        epsilon_test: what each positive answer costs: threshold noise ``Lap(2/epsilon)``,
            query noise ``Lap(4/epsilon)`` (Dwork & Roth, Alg. 1, sensitivity 1).
        rng: the noise source.
    """

    def __init__(self, threshold: float, epsilon_test: float, rng: np.random.Generator) -> None:
        if not (math.isfinite(epsilon_test) and epsilon_test > 0):
            raise ValueError(f"epsilon_test must be positive, got {epsilon_test!r}")
        self._threshold = float(threshold)
        self._epsilon = float(epsilon_test)
        self._rng = rng
        self._noisy_threshold = self._draw_threshold()

    def _draw_threshold(self) -> float:
        return self._threshold + float(self._rng.laplace(0.0, 2.0 * COUNT_SENSITIVITY / self._epsilon))

    def above(self, query: float) -> bool:
        """Whether ``query`` (the disagreement) plus noise clears the threshold; a positive restarts the test."""
        noisy = float(query) + float(self._rng.laplace(0.0, 4.0 * COUNT_SENSITIVITY / self._epsilon))
        if noisy >= self._noisy_threshold:
            self._noisy_threshold = self._draw_threshold()
            return True
        return False
