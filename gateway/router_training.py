"""Training the learned router from questions: label them by asking every silo, then fit.

For each training question the gateway asks every silo (as the ``all`` router would),
merges the replies by score, and records which silos hold passages of the merged top-k
and what fraction of it each holds (its share). :func:`train_router` fits the router on
these examples and, unless a setting is given, calibrates its threshold or coverage by
cross-validation to reach a target recall@k (see :func:`router.calibrate`).

Questions should cover every silo, or the router learns never to ask the ones they miss.
:func:`silo_questions` draws them from each silo itself: the titles of the passages its
card's centroids retrieve, through its release policy like any search.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from aggregation import ScoreMerger
from federation.encoder import Encoder
from gateway.fanout import SiloPool
from router import Calibration, LearnedRouter, SiloView, TrainingExample, calibrate

MIN_EXAMPLES = 4
"""Fewest labelled questions :func:`train_router` accepts (two folds of two)."""


async def silo_questions(pool: SiloPool, per_silo: int) -> dict[str, list[str]]:
    """Up to ``per_silo`` distinct passage titles from each silo, found by searching it with its card's centroids.

    The centroids spread over what the silo holds, so the titles do too; titles are taken
    round-robin over the centroids. A silo whose card or passages are unavailable gets none.
    """
    await pool.refresh_cards(force=True)
    found: dict[str, list[str]] = {}
    for name in pool.names:
        card = pool.card(name)
        centroids = card.centroids.to_numpy() if card is not None else np.zeros((0, 1), dtype=np.float32)
        per_centroid = [
            [p.title for p in outcome.passages if p.title.strip()]
            for centroid in centroids
            for outcome in await pool.search([name], centroid, min(per_silo, 50))
            if outcome.status == "ok"
        ]
        titles: dict[str, None] = {}
        for rank in range(max((len(t) for t in per_centroid), default=0)):
            for candidates in per_centroid:
                if rank < len(candidates) and len(titles) < per_silo:
                    titles.setdefault(" ".join(candidates[rank].split()))
        found[name] = list(titles)
    return found


async def label_questions(
    questions: Sequence[str],
    *,
    encoder: Encoder,
    pool: SiloPool,
    k: int = 10,
    on_question: Callable[[], None] | None = None,
) -> list[TrainingExample]:
    """Ask every silo each question; return one labelled example per question that found anything."""
    await pool.refresh_cards(force=True)
    cards = {name: card for name in pool.names if (card := pool.card(name)) is not None}
    # The same features as at serving time (the pipeline embeds each card's description too).
    descriptions = encoder.encode([card.description or name for name, card in cards.items()])
    views = tuple(
        SiloView(name=name, card=card, description_vector=vector)
        for (name, card), vector in zip(cards.items(), descriptions, strict=True)
    )
    names = [v.name for v in views]
    vectors: np.ndarray = encoder.encode(list(questions))
    merger = ScoreMerger()
    examples = []
    for vector in vectors:
        outcomes = await pool.search(names, vector, k)
        merged = merger.merge({o.silo: o.passages for o in outcomes if o.status == "ok"}, k)
        counts = Counter(p.silo for p in merged)
        if counts:
            shares = {silo: n / len(merged) for silo, n in counts.items()}
            examples.append(TrainingExample(query=vector, silos=views, relevant=frozenset(counts), shares=shares))
        if on_question is not None:
            on_question()
    return examples


def train_router(
    examples: Sequence[TrainingExample],
    *,
    model: Literal["relevance", "share"] = "share",
    selection: Literal["threshold", "coverage"] = "coverage",
    threshold: float | None = None,
    coverage: float | None = None,
    target_recall: float = 0.95,
    folds: int = 5,
    groups: Sequence[str] | None = None,
) -> tuple[LearnedRouter, Calibration | None]:
    """Fit the learned router; calibrate its setting unless one is given.

    Args:
        examples: labelled questions (from :func:`label_questions`).
        model: ``"share"`` or ``"relevance"``.
        selection: ``"coverage"`` (share model only) or ``"threshold"``.
        threshold: use this threshold (threshold selection) instead of calibrating.
        coverage: use this coverage (coverage selection) instead of calibrating.
        target_recall: the recall@k the calibration aims at.
        folds: cross-validation folds (fewer when there are fewer examples).
        groups: a kind per example; with two kinds or more the calibration holds out each kind
            in turn (see :func:`router.calibrate`).

    Returns:
        The router, and the calibration that chose its setting (None when given).

    Raises:
        ValueError: with fewer than :data:`MIN_EXAMPLES` examples, a setting that does not
            match ``selection``, or when the model cannot be fitted.
    """
    if len(examples) < MIN_EXAMPLES:
        raise ValueError(f"{len(examples)} labelled questions; at least {MIN_EXAMPLES} are needed to train")
    if (threshold is not None and selection != "threshold") or (coverage is not None and selection != "coverage"):
        raise ValueError(f"a {'threshold' if threshold is not None else 'coverage'} needs that selection rule")
    router = LearnedRouter.train(examples, model=model, selection=selection)
    if threshold is not None or coverage is not None:
        return router.with_selection(selection, threshold=threshold, coverage=coverage), None
    found = calibrate(
        examples,
        target_recall=target_recall,
        model=model,
        selection=selection,
        folds=max(2, min(folds, len(examples) // 2)),
        groups=groups,
    )
    calibrated = router.with_selection(
        selection,
        threshold=found.value if selection == "threshold" else None,
        coverage=found.value if selection == "coverage" else None,
        calibration=found.record(),
    )
    return calibrated, found
