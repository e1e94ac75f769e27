"""Evaluation metrics: retrieval quality, routing, answers, uncertainty, latency.

Every function here is pure and small enough to check by hand; each docstring gives its
formula. Notation: ``top_k(r)`` is the *set* of ids among the first ``k`` entries of the
ranked list ``r`` (a duplicate id counts once), ``|S|`` is the size of a set.

Retrieval (ranked lists of chunk ids):
    * :func:`recall_at_k` — share of the gold ids found in the first ``k`` results.
    * :func:`ndcg_at_k` — rank-aware quality with binary relevance.
    * :func:`overlap_at_k` — the federation gap: how much of the central index's exact
      top-``k`` the federated search recovered.

Routing, answers and citations:
    * :func:`silo_recall` — share of the relevant silos the router asked.
    * :func:`accuracy` — multiple-choice tally (MMLU), unparseable answers counted wrong.
    * :func:`citation_validity` — share of cited source numbers that were really retrieved.
    * :func:`pass_at_k` — the unbiased pass@k estimator for generated code (HumanEval).

Uncertainty and latency:
    * :func:`bootstrap_ci` — percentile bootstrap confidence interval of any statistic.
    * :func:`bootstrap_ratio_ci` — the same for a pooled share ``Σ successes / Σ totals``,
      resampling the items (answers), not the units they hold (claims).
    * :func:`interval` — a mean with its interval, as the report writes it.
    * :func:`percentiles` — latency percentiles keyed ``"p50"``, ``"p95"``, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MultipleChoiceTally",
    "Statistic",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_ratio_ci",
    "citation_validity",
    "interval",
    "ndcg_at_k",
    "overlap_at_k",
    "pass_at_k",
    "percentiles",
    "recall_at_k",
    "silo_recall",
]

FloatArray = npt.NDArray[np.float64]
Statistic = Callable[[FloatArray], float]
"""A statistic of a 1-D sample, for :func:`bootstrap_ci`."""


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _top_k(ranked: Sequence[str], k: int) -> set[str]:
    return set(ranked[:k])


def recall_at_k(retrieved: Sequence[str], gold: Collection[str], k: int) -> float:
    """Share of the gold ids found among the first ``k`` retrieved ids.

    ``recall@k = |top_k(retrieved) ∩ gold| / |gold|``. A gold id retrieved twice counts
    once, so the value lies in ``[0, 1]``.

    Args:
        retrieved: Ids in rank order, best first.
        gold: The ids that answer the question.
        k: How many leading results count.

    Returns:
        The recall, in ``[0, 1]``.

    Raises:
        ValueError: If ``gold`` is empty (the question has no answer to find) or ``k < 1``.
    """
    _check_k(k)
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("recall is undefined without gold ids")
    return len(_top_k(retrieved, k) & gold_set) / len(gold_set)


def _discount(rank: int) -> float:
    """The log2 discount of a 1-based rank: ``1 / log2(rank + 1)``."""
    return 1.0 / math.log2(rank + 1)


def ndcg_at_k(retrieved: Sequence[str], gold: Collection[str], k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary relevance.

    ``DCG@k = Σ_{i=1..k} rel_i / log2(i + 1)``, where ``rel_i`` is 1 when the id at rank
    ``i`` is gold and has not appeared at an earlier rank, else 0 (so a repeated hit earns
    nothing and the score cannot exceed 1). ``IDCG@k = Σ_{i=1..min(|gold|, k)} 1 / log2(i + 1)``,
    the DCG of a ranking that puts every gold id first. ``nDCG@k = DCG@k / IDCG@k``.

    Args:
        retrieved: Ids in rank order, best first.
        gold: The relevant ids.
        k: How many leading results count.

    Returns:
        The nDCG, in ``[0, 1]``.

    Raises:
        ValueError: If ``gold`` is empty or ``k < 1``.
    """
    _check_k(k)
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("nDCG is undefined without gold ids")
    seen: set[str] = set()
    dcg = 0.0
    for rank, doc_id in enumerate(retrieved[:k], start=1):
        if doc_id in gold_set and doc_id not in seen:
            dcg += _discount(rank)
        seen.add(doc_id)
    ideal = sum(_discount(rank) for rank in range(1, min(len(gold_set), k) + 1))
    return dcg / ideal


def overlap_at_k(retrieved: Sequence[str], reference: Sequence[str], k: int) -> float:
    """Share of the reference's top ``k`` that the retrieval recovered: the federation gap.

    ``overlap@k = |top_k(retrieved) ∩ top_k(reference)| / min(k, |top_k(reference)|)``.
    ``reference`` is the exact top-``k`` of one central index over all silos' chunks; the
    federated search (routing, per-silo ANN, merging, DP noise) should recover it.

    An empty reference leaves nothing to recover, so the overlap is vacuously 1.0 whatever
    was retrieved. (An empty central result is a legitimate outcome, e.g. every chunk was
    filtered out; an empty gold set for recall is a defect in the data and raises.)

    Args:
        retrieved: Ids returned by the federated search, best first.
        reference: Ids returned by the central exact search, best first.
        k: How many leading results of each list count.

    Returns:
        The overlap, in ``[0, 1]``.

    Raises:
        ValueError: If ``k < 1``.
    """
    _check_k(k)
    reference_top = _top_k(reference, k)
    if not reference_top:
        return 1.0
    return len(_top_k(retrieved, k) & reference_top) / len(reference_top)


def silo_recall(asked: Collection[str], relevant: Collection[str]) -> float | None:
    """Share of the relevant silos that the router asked.

    ``silo_recall = |asked ∩ relevant| / |relevant|``.

    Args:
        asked: Names of the silos the query was sent to.
        relevant: Names of the silos holding at least one gold chunk.

    Returns:
        The recall in ``[0, 1]``, or ``None`` when no silo is relevant (routing cannot
        miss anything, so the query should not enter the average).
    """
    relevant_set = set(relevant)
    if not relevant_set:
        return None
    return len(set(asked) & relevant_set) / len(relevant_set)


@dataclass(frozen=True, slots=True)
class MultipleChoiceTally:
    """Counts of a multiple-choice run.

    Attributes:
        correct: Predictions equal to the answer.
        wrong: Every other prediction, *including* the unparseable ones.
        unparseable: Answers from which no choice could be read (``None``); a subset of
            ``wrong``.
        total: Number of questions, ``correct + wrong``.
    """

    correct: int
    wrong: int
    unparseable: int
    total: int

    @property
    def accuracy(self) -> float:
        """``correct / total``."""
        return self.correct / self.total


def accuracy(predictions: Sequence[int | None], answers: Sequence[int]) -> MultipleChoiceTally:
    """Tally multiple-choice predictions against the answer key.

    ``accuracy = correct / total``; an unparseable prediction (``None``) counts as wrong.

    Args:
        predictions: The chosen option index per question, or ``None`` when the model's
            answer named no option.
        answers: The correct option index per question.

    Returns:
        The tally; its ``accuracy`` property is the share answered correctly.

    Raises:
        ValueError: If the two sequences differ in length or are empty.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("accuracy is undefined without questions")
    correct = sum(1 for predicted, answer in zip(predictions, answers, strict=True) if predicted == answer)
    unparseable = sum(1 for predicted in predictions if predicted is None)
    total = len(answers)
    return MultipleChoiceTally(correct=correct, wrong=total - correct, unparseable=unparseable, total=total)


def citation_validity(cited: Collection[int], retrieved: Collection[int]) -> float | None:
    """Share of the cited source numbers that exist among the retrieved sources.

    ``validity = |cited ∩ retrieved| / |cited|`` (a source cited twice counts once).

    Args:
        cited: Source numbers the answer cites, e.g. ``[2]`` → 2.
        retrieved: Source numbers the prompt actually offered.

    Returns:
        The validity in ``[0, 1]``, or ``None`` when the answer cites nothing.
    """
    cited_set = set(cited)
    if not cited_set:
        return None
    return len(cited_set & set(retrieved)) / len(cited_set)


def _mean(sample: FloatArray) -> float:
    return float(np.mean(sample))


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Statistic = _mean,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of a statistic.

    Draws ``resamples`` samples of size ``n`` with replacement from ``values`` (numpy
    ``Generator`` seeded with ``seed``, so the interval is reproducible), computes the
    statistic of each, and takes the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of those statistics (linear interpolation) as the bounds.

    Args:
        values: The per-item scores, e.g. 0/1 correctness or per-query recall.
        statistic: Maps a 1-D float array to a number; the mean by default.
        resamples: Number of bootstrap samples.
        confidence: Coverage of the interval, strictly between 0 and 1.
        seed: Seed of the random generator.

    Returns:
        ``(point, low, high)``: the statistic of ``values`` and the interval bounds. A
        single value gives ``(v, v, v)``.

    Raises:
        ValueError: If ``values`` is empty or holds a non-finite number, ``resamples < 1``
            or ``confidence`` is outside ``(0, 1)``.
    """
    if not values:
        raise ValueError("a confidence interval needs at least one value")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    sample = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(sample)):
        raise ValueError("values must be finite numbers")
    point = float(statistic(sample))
    if sample.size == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    draws = sample[rng.integers(0, sample.size, size=(resamples, sample.size))]
    if statistic is _mean:
        stats = draws.mean(axis=1)
    else:
        stats = np.fromiter((statistic(row) for row in draws), dtype=np.float64, count=resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return point, float(low), float(high)


def bootstrap_ratio_ci(
    successes: Sequence[float], totals: Sequence[float], *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Pooled share ``Σ successes / Σ totals`` with a percentile bootstrap interval over the items.

    Item ``i`` (an answer) holds ``totals[i]`` units (its claims), ``successes[i]`` of them good
    (supported). The items are resampled with replacement, as :func:`bootstrap_ci` does, so units
    of one item stay together (a cluster bootstrap). Items with no units are left out.

    Returns:
        ``(share, low, high)``.

    Raises:
        ValueError: if the sequences differ in length, no item has units, or a success count
            exceeds its total.
    """
    if len(successes) != len(totals):
        raise ValueError(f"{len(successes)} success counts for {len(totals)} totals")
    pairs = [(float(s), float(t)) for s, t in zip(successes, totals, strict=True) if t > 0]
    if not pairs:
        raise ValueError("a pooled share needs at least one item with units")
    if any(not 0 <= s <= t for s, t in pairs):
        raise ValueError("each success count must lie between 0 and its total")
    good = np.array([s for s, _ in pairs])
    units = np.array([t for _, t in pairs])

    def share(indices: FloatArray) -> float:
        picked = indices.astype(np.int64)
        return float(good[picked].sum() / units[picked].sum())

    return bootstrap_ci([float(i) for i in range(len(pairs))], statistic=share, resamples=resamples, seed=seed)


def interval(values: Sequence[float], seed: int = 0) -> dict[str, float] | None:
    """``{"mean", "low", "high", "n"}``: the mean of ``values`` with its 95% bootstrap interval (None if empty)."""
    if not values:
        return None
    point, low, high = bootstrap_ci(values, seed=seed)
    return {"mean": point, "low": low, "high": high, "n": len(values)}


def percentiles(samples_ms: Sequence[float], qs: Sequence[float] = (50, 95)) -> dict[str, float]:
    """Percentiles of latency samples, keyed ``"p<q>"``.

    Uses numpy's default (linear interpolation between closest ranks): for ``n`` sorted
    samples ``x_0..x_{n-1}``, percentile ``q`` is read at position ``(n - 1) * q / 100``.

    Args:
        samples_ms: Latencies in milliseconds.
        qs: Percentiles wanted, each in ``[0, 100]``.

    Returns:
        E.g. ``{"p50": 12.0, "p95": 40.5}``; ``99.9`` gives key ``"p99.9"``.

    Raises:
        ValueError: If ``samples_ms`` is empty or a percentile is outside ``[0, 100]``.
    """
    if not samples_ms:
        raise ValueError("percentiles need at least one sample")
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentiles lie in [0, 100], got {q}")
    values = np.percentile(np.asarray(samples_ms, dtype=np.float64), list(qs))
    return {f"p{q:g}": float(value) for q, value in zip(qs, values, strict=True)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from ``n`` samples of which ``c`` passed.

    ``pass@k = 1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code"), computed as ``1 - Π_{i=n-c+1..n} (1 - k / i)`` to stay
    numerically stable; it is 1 when ``n - c < k`` (every draw of ``k`` holds a pass).

    Args:
        n: Samples generated for the problem.
        c: Samples that passed the tests.
        k: The ``k`` of pass@k.

    Returns:
        The estimated probability that at least one of ``k`` samples passes.

    Raises:
        ValueError: Unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))
