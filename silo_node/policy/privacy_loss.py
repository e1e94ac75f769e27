"""Exact privacy loss of a release mechanism between two neighbouring databases.

A mechanism is epsilon-DP under a neighbouring relation when, for every pair of neighbours
and every output, the probabilities of that output differ by a factor of at most e^epsilon.
For mechanisms whose output is discrete (which passage is released, which token is chosen)
and small databases (a few documents), the output distributions can be written down
exactly and the largest log ratio computed, which is what the privacy-loss tests assert
against each mode's claim.

- :func:`max_log_ratio`: the largest ``|ln P(o) / Q(o)|`` over all outputs, infinite when one
  side can produce an output the other cannot.
- :func:`noisy_selection_pick`: the exact distribution of the passage the silo's noisy
  selection picks for ``k = 1`` (the one-shot Gumbel mechanism is the exponential mechanism),
  given the candidates' scores.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import TypeVar

from silo_node.policy.dp import SCORE_SENSITIVITY, clip_score

__all__ = ["max_log_ratio", "noisy_selection_pick"]

_O = TypeVar("_O", bound=Hashable)


def max_log_ratio(p: Mapping[_O, float], q: Mapping[_O, float], *, floor: float = 0.0) -> float:
    """The largest absolute log ratio of two output distributions.

    Args:
        p: output -> probability under one database (missing outputs have probability 0).
        q: the same under its neighbour.
        floor: probabilities at or below this count as 0 (for rounding noise).

    Returns:
        ``max_o |ln p(o) - ln q(o)|``; ``math.inf`` when an output is possible under one
        database and impossible under the other; 0 for two empty distributions.
    """
    worst = 0.0
    for output in set(p) | set(q):
        a, b = p.get(output, 0.0), q.get(output, 0.0)
        if a <= floor and b <= floor:
            continue
        if a <= floor or b <= floor:
            return math.inf
        worst = max(worst, abs(math.log(a) - math.log(b)))
    return worst


def noisy_selection_pick(
    scores: Mapping[_O, float], epsilon_per_query: float, relevance_threshold: float
) -> dict[_O, float]:
    """Exact distribution of the passage :class:`~silo_node.policy.ReleasePolicy` releases for ``k = 1``.

    For one pick the policy spends half of ``epsilon_per_query`` on the selection: Gumbel noise of
    scale ``2 * sensitivity / (epsilon / 2)`` on the clipped scores of the candidates that reach
    the threshold, the largest kept. That is the exponential mechanism: a candidate is picked with
    probability proportional to ``exp(epsilon / 2 * score / (2 * sensitivity))``.

    Args:
        scores: passage -> similarity to the query (any real; clipped to [0, 1] as the policy does).
        epsilon_per_query: the policy's ``noisy_selection.epsilon_per_query``.
        relevance_threshold: the policy's ``noisy_selection.relevance_threshold``.

    Returns:
        passage -> probability of being the released one; empty when no passage is a candidate.
    """
    clipped = {o: clip_score(s) for o, s in scores.items()}
    pool = {o: s for o, s in clipped.items() if s >= relevance_threshold}
    if not pool:
        return {}
    rate = (epsilon_per_query / 2.0) / (2.0 * SCORE_SENSITIVITY)
    top = max(pool.values())
    weights = {o: math.exp(rate * (s - top)) for o, s in pool.items()}
    total = sum(weights.values())
    return {o: w / total for o, w in weights.items()}
