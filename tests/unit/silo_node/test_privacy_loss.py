"""Privacy-loss tests: exact output distributions of the silo's release modes on neighbouring databases.

Neighbours here are the usual ones for documents: the same corpus with one document removed.
A mode offered as epsilon-DP must keep every output's probability within a factor e^epsilon
between any two neighbours; these tests compute the factor exactly on tiny corpora.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from federation.config import NoisySelectionSettings, ReleasePolicySettings
from silo_node.policy import Candidate, ReleasePolicy
from silo_node.policy.privacy_loss import max_log_ratio, noisy_selection_pick

pytestmark = pytest.mark.unit

EPSILON = 1.0
THRESHOLD = 0.3
CORPUS = {"a": 0.92, "b": 0.81, "c": 0.47}  # three documents' similarity to one query


def _without(corpus: dict[str, float], doc: str) -> dict[str, float]:
    return {d: s for d, s in corpus.items() if d != doc}


def _rank_pool_pick(corpus: dict[str, float], pool_size: int) -> dict[str, float]:
    """The mechanism as it was: the exact top ``pool_size`` by rank are the candidates (no threshold)."""
    top = dict(sorted(corpus.items(), key=lambda item: -item[1])[:pool_size])
    return noisy_selection_pick(top, EPSILON, relevance_threshold=0.0)


def test_noisy_selection_gives_no_document_level_guarantee() -> None:
    """Removing a document makes its own release impossible: the loss is unbounded, whatever epsilon says."""
    for doc in CORPUS:
        with_doc = noisy_selection_pick(CORPUS, EPSILON, THRESHOLD)
        without_doc = noisy_selection_pick(_without(CORPUS, doc), EPSILON, THRESHOLD)
        assert with_doc[doc] > 0.2  # the member is released verbatim often
        assert doc not in without_doc
        assert max_log_ratio(with_doc, without_doc) == math.inf


def test_the_old_rank_pool_also_leaked_about_the_other_documents() -> None:
    """With the top-1 by rank as the pool, removing ``a`` turns ``b`` from impossible into certain."""
    with_a = _rank_pool_pick(CORPUS, pool_size=1)
    without_a = _rank_pool_pick(_without(CORPUS, "a"), pool_size=1)
    assert with_a == {"a": 1.0} and without_a == {"b": 1.0}
    # The public threshold keeps every other document's candidacy as it was: b and c stay possible.
    threshold_with = noisy_selection_pick(CORPUS, EPSILON, THRESHOLD)
    threshold_without = noisy_selection_pick(_without(CORPUS, "a"), EPSILON, THRESHOLD)
    assert set(threshold_without) == set(threshold_with) - {"a"}


def test_the_selection_keeps_its_claim_for_the_relation_it_states() -> None:
    """Same candidates, each clipped score moved by at most 1: the pick's loss is at most half the epsilon."""
    grid = [-0.4, 0.0, 0.3, 0.55, 1.0, 1.7]  # raw similarities, clipped by the mechanism
    worst = 0.0
    for first in itertools.product(grid, repeat=3):
        for second in itertools.product(grid, repeat=3):
            p = noisy_selection_pick(dict(zip("abc", first, strict=True)), EPSILON, relevance_threshold=0.0)
            q = noisy_selection_pick(dict(zip("abc", second, strict=True)), EPSILON, relevance_threshold=0.0)
            worst = max(worst, max_log_ratio(p, q))
    # Within the bound; with three candidates the worst case (one score 1 -> 0, the others 0 -> 1) reaches
    # ln(e^r (1 + 2 e^r) / (e^r + 2)) for r = epsilon / 4, two thirds of it.
    rate = EPSILON / 4
    assert worst == pytest.approx(math.log(math.exp(rate) * (1 + 2 * math.exp(rate)) / (math.exp(rate) + 2)))
    assert worst <= EPSILON / 2


def test_the_exact_distribution_is_the_policys() -> None:
    """The formula the tests enumerate is what ReleasePolicy does (5,000 draws, within 4 standard errors)."""
    noisy = NoisySelectionSettings(enabled=True, epsilon_per_query=4.0, relevance_threshold=0.5, budget_per_window=1e9)
    policy = ReleasePolicy(ReleasePolicySettings(noisy_selection=noisy), audit=None, rng=np.random.default_rng(0))
    scores = {0: 0.92, 1: 0.81, 2: 0.47, 3: 0.66}
    candidates = [
        Candidate(chunk_id=i, doc_id=f"d{i}", title="t", text="x", score=s, metadata={}) for i, s in scores.items()
    ]
    draws = 5000
    counts = Counter(policy.apply("gw", 1, candidates, request_id="r").hits[0].chunk_id for _ in range(draws))
    exact = noisy_selection_pick(scores, 4.0, 0.5)
    assert set(counts) == set(exact) == {0, 1, 3}  # 0.47 is below the threshold
    for chunk_id, probability in exact.items():
        error = math.sqrt(probability * (1 - probability) / draws)
        assert abs(counts[chunk_id] / draws - probability) < 4 * error


def test_max_log_ratio() -> None:
    assert max_log_ratio({"x": 0.5, "y": 0.5}, {"x": 0.25, "y": 0.75}) == pytest.approx(math.log(2))
    assert max_log_ratio({"x": 1.0}, {"y": 1.0}) == math.inf
    assert max_log_ratio({}, {}) == 0.0
