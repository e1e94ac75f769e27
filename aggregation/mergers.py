"""Mergers: the passages of several silos for one question, as one ranked list.

Every merger returns at most ``k`` passages, best first, without repeating a passage
(identity ``(silo, chunk_id)``), and breaks ties deterministically: by the merger's own
key, then original score descending, silo name, rank and chunk id. Passages come out
unchanged: ``Passage.score`` is always the silo's original score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from aggregation.validation import Passage
from federation.errors import ConfigError

__all__ = ["CalibratedMerger", "Merger", "RRFMerger", "ScoreMerger", "make_merger"]

_MIN_STD = 1e-6
_Z_DECIMALS = 9


@runtime_checkable
class Merger(Protocol):
    """Merges the validated passages of several silos into one top-``k`` list.

    Contract:
        * ``merge`` returns at most ``k`` passages, best first, each one of the inputs,
          none twice (a passage is identified by ``(silo, chunk_id)``).
        * It is deterministic: the same input gives the same output, whatever the
          mapping's iteration order; ties are broken by score descending, silo name,
          then rank.
        * It does not change the passages (``score`` stays the silo's score).
        * ``k < 1`` gives an empty list.

    Attributes:
        name: The name the gateway's configuration uses for this merger.
    """

    name: str

    def merge(self, per_silo: Mapping[str, Sequence[Passage]], k: int) -> list[Passage]:
        """Return the best ``k`` passages of ``per_silo`` (silo name -> its passages in rank order)."""
        ...


def _unique(per_silo: Mapping[str, Sequence[Passage]]) -> list[Passage]:
    """All passages, each ``(silo, chunk_id)`` once (its best-ranked copy)."""
    best: dict[tuple[str, str], Passage] = {}
    for silo in sorted(per_silo):
        for passage in per_silo[silo]:
            known = best.get(passage.key)
            if known is None or _tie_key(passage) < _tie_key(known):
                best[passage.key] = passage
    return list(best.values())


def _tie_key(passage: Passage) -> tuple[float, str, int, str]:
    return (-passage.score, passage.silo, passage.rank, passage.chunk_id)


def _top(passages: Iterable[Passage], k: int, primary: Callable[[Passage], float]) -> list[Passage]:
    """The ``k`` passages with the highest ``primary`` value, ties broken by :func:`_tie_key`."""
    if k < 1:
        return []
    ordered = sorted(passages, key=lambda p: (-primary(p), *_tie_key(p)))
    return ordered[:k]


class ScoreMerger:
    """Global top-``k`` by the silos' raw scores.

    Valid because every silo embeds with the federation's one encoder, so inner products
    from different silos are on the same scale.
    """

    name = "score"

    def merge(self, per_silo: Mapping[str, Sequence[Passage]], k: int) -> list[Passage]:
        """Return the ``k`` passages with the highest scores.

        Args:
            per_silo: Silo name -> its validated passages in rank order.
            k: How many passages to return at most.

        Returns:
            The best passages, best first.
        """
        return _top(_unique(per_silo), k, lambda p: p.score)


class RRFMerger:
    """Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    A passage's fused score is ``sum(1 / (k0 + rank))`` over the lists it appears in;
    ``rank`` is its 1-based ``Passage.rank``. Silos hold different chunks, so in practice
    each passage sits in one list and the result interleaves the silos rank by rank,
    silos' scores deciding the order within a rank. The output is ordered by fused score;
    each passage keeps its original ``score``.
    """

    name = "rrf"

    def __init__(self, k0: int = 60) -> None:
        """Create the merger.

        Args:
            k0: The constant that damps the weight of top ranks (60 in the paper).

        Raises:
            ValueError: ``k0`` is negative.
        """
        if k0 < 0:
            raise ValueError(f"k0 must not be negative, got {k0}")
        self.k0 = k0

    def fused_scores(self, per_silo: Mapping[str, Sequence[Passage]]) -> dict[tuple[str, str], float]:
        """Fused score of every passage, by ``(silo, chunk_id)``.

        Args:
            per_silo: Silo name -> its validated passages in rank order.

        Returns:
            ``(silo, chunk_id)`` -> ``sum(1 / (k0 + rank))``.
        """
        fused: dict[tuple[str, str], float] = {}
        for silo in sorted(per_silo):
            seen: set[tuple[str, str]] = set()
            for passage in per_silo[silo]:
                if passage.key in seen:
                    continue
                seen.add(passage.key)
                fused[passage.key] = fused.get(passage.key, 0.0) + 1.0 / (self.k0 + passage.rank)
        return fused

    def merge(self, per_silo: Mapping[str, Sequence[Passage]], k: int) -> list[Passage]:
        """Return the ``k`` passages with the highest fused scores.

        Args:
            per_silo: Silo name -> its validated passages in rank order.
            k: How many passages to return at most.

        Returns:
            The best passages, best first, with their original scores.
        """
        fused = self.fused_scores(per_silo)
        return _top(_unique(per_silo), k, lambda p: fused[p.key])


class CalibratedMerger:
    """Per-silo score normalisation, then global top-``k``.

    Each passage's score becomes a z-score against the scores its silo returned for this
    question, so a silo whose scores are all low (another domain's vocabulary, a noisier
    index) still contributes its relatively best passages. A silo whose scores cannot be
    normalised (one passage, or all scores equal) is normalised against the pooled scores
    of all silos instead; when those are all equal too, its z-score is 0.
    """

    name = "calibrated"

    def calibrated_scores(self, per_silo: Mapping[str, Sequence[Passage]]) -> dict[tuple[str, str], float]:
        """Normalised score of every passage, by ``(silo, chunk_id)``.

        Args:
            per_silo: Silo name -> its validated passages in rank order.

        Returns:
            ``(silo, chunk_id)`` -> z-score.
        """
        return _calibrate(_unique(per_silo))

    def merge(self, per_silo: Mapping[str, Sequence[Passage]], k: int) -> list[Passage]:
        """Return the ``k`` passages with the highest normalised scores.

        Args:
            per_silo: Silo name -> its validated passages in rank order.
            k: How many passages to return at most.

        Returns:
            The best passages, best first, with their original scores.
        """
        passages = _unique(per_silo)
        calibrated = _calibrate(passages)
        return _top(passages, k, lambda p: calibrated[p.key])


def _calibrate(passages: Sequence[Passage]) -> dict[tuple[str, str], float]:
    """Z-score of each passage against its silo's scores, or the pooled scores as a fallback."""
    by_silo: dict[str, list[Passage]] = {}
    for passage in passages:
        by_silo.setdefault(passage.silo, []).append(passage)
    pooled = _mean_std([p.score for p in passages])
    calibrated: dict[tuple[str, str], float] = {}
    for group in by_silo.values():
        mean, std = _mean_std([p.score for p in group])
        if len(group) < 2 or std < _MIN_STD:
            mean, std = pooled
        for passage in group:
            z = 0.0 if std < _MIN_STD else (passage.score - mean) / std
            # Rounded so that float noise does not decide what are ties in exact arithmetic.
            calibrated[passage.key] = round(z, _Z_DECIMALS)
    return calibrated


def _mean_std(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (``(0, 0)`` for no scores)."""
    if not scores:
        return 0.0, 0.0
    mean = math.fsum(scores) / len(scores)
    variance = math.fsum((s - mean) ** 2 for s in scores) / len(scores)
    return mean, math.sqrt(variance)


_MERGERS: dict[str, Callable[[], Merger]] = {
    CalibratedMerger.name: CalibratedMerger,
    RRFMerger.name: RRFMerger,
    ScoreMerger.name: ScoreMerger,
}


def make_merger(name: str) -> Merger:
    """Create the merger called ``name`` with its default parameters.

    Args:
        name: ``"score"``, ``"rrf"`` or ``"calibrated"``.

    Returns:
        A new merger.

    Raises:
        ConfigError: ``name`` is not a known merger; the message lists the choices.
    """
    factory = _MERGERS.get(name)
    if factory is None:
        raise ConfigError(f"unknown merger {name!r}; choose one of: {', '.join(sorted(_MERGERS))}")
    return factory()
