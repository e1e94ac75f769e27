"""Choose the learned router's threshold or coverage for a target recall, by cross-validation.

The recall@k of the merged result, against asking every silo, is the share of the
all-silo top-k held by the silos asked (exact for score merging: a passage in the
all-silo top-k stays in the top-k of any subset of silos that holds it). So for a
candidate setting, a question's recall is the sum of the true shares of the silos the
rule selects, and its cost is the number of silos asked.

:func:`calibrate` splits the training questions into folds, fits the model on all but
one fold and scores the held-out one, so every question is scored by a model that did
not see it. It then returns the cheapest setting (the smallest coverage, or the largest
threshold) whose mean out-of-fold recall reaches the target, with that recall and the
fraction of silos it asks: what to expect on new questions like these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.learned import LearnedRouter, check_coverage, covering
from router.model_file import ModelKind, Selection
from router.training import TrainingExample

COVERAGE_GRID: tuple[float, ...] = tuple(round(0.5 + i / 400, 4) for i in range(201))
"""Coverages tried, ascending: 0.5 to 1 in steps of 0.0025."""
THRESHOLD_GRID: tuple[float, ...] = tuple(round(i / 400, 4) for i in range(400))
"""Thresholds tried (descending by :func:`calibrate`): 0 to 0.9975 in steps of 0.0025."""


@dataclass(frozen=True)
class Calibration:
    """The chosen setting and what it achieved out of fold.

    Attributes:
        selection: ``"threshold"`` or ``"coverage"``.
        value: the chosen threshold or coverage.
        target_recall: the recall asked for.
        recall: mean out-of-fold recall@k against all silos at ``value``.
        fraction_asked: mean out-of-fold fraction of silos asked at ``value``.
        folds: the number of folds.
    """

    selection: Selection
    value: float
    target_recall: float
    recall: float
    fraction_asked: float
    folds: int

    def record(self) -> dict[str, float]:
        """The figures kept in the model file."""
        return {
            "target_recall": self.target_recall,
            "cv_recall": self.recall,
            "cv_fraction_asked": self.fraction_asked,
            "folds": float(self.folds),
        }


def calibrate(
    examples: Sequence[TrainingExample],
    *,
    target_recall: float = 0.95,
    model: ModelKind = "share",
    selection: Selection = "coverage",
    folds: int = 5,
    l2: float = 1e-2,
    groups: Sequence[str] | None = None,
) -> Calibration:
    """Choose the cheapest threshold or coverage whose cross-validated recall reaches the target.

    Args:
        examples: labelled questions (with ``shares``, as :func:`gateway.router_training.label_questions`
            gives them; without, each relevant silo counts as an equal share). Example ``i``
            is held out in fold ``i % folds``.
        target_recall: the mean recall@k against all silos to reach, in (0, 1].
        model: the model to fit, ``"share"`` or ``"relevance"``.
        selection: the rule to calibrate, ``"coverage"`` (share model only) or ``"threshold"``.
        folds: number of folds, at least 2 and at most the number of examples.
        l2: the model's L2 penalty.
        groups: a kind per example (e.g. ``supplied`` / ``drawn`` questions). With two kinds or
            more, each kind is held out in turn instead of ``folds`` (leave-one-kind-out): the
            setting must reach the target on a kind of question the model was not fitted on.

    Returns:
        The chosen setting. When no setting reaches the target, the one with the highest
        recall (coverage 1 or threshold 0), whose figures show the shortfall.

    Raises:
        ValueError: for an invalid argument, or when a fold's training part cannot be fitted.
    """
    check_coverage(target_recall)
    if groups is not None and len(groups) != len(examples):
        raise ValueError(f"{len(groups)} groups for {len(examples)} examples")
    kinds = sorted(set(groups)) if groups is not None else []
    if len(kinds) >= 2:
        assert groups is not None
        fold_of = [kinds.index(g) for g in groups]
        folds = len(kinds)
    elif isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(examples):
        raise ValueError(f"folds must be an integer from 2 to the number of examples ({len(examples)}), got {folds!r}")
    else:
        fold_of = [i % folds for i in range(len(examples))]
    if selection == "coverage" and model != "share":
        raise ValueError("coverage selection needs a share model")
    scored: list[tuple[list[tuple[str, float]], dict[str, float], int]] = []
    for fold in range(folds):
        held_out = [e for i, e in enumerate(examples) if fold_of[i] == fold]
        router = LearnedRouter.train(
            [e for i, e in enumerate(examples) if fold_of[i] != fold], model=model, selection=selection, l2=l2
        )
        for example in held_out:
            scores = router.scores(example.query, example.silos)
            ranked = [
                (s.name, scores[s.name])
                for s in sorted(
                    (s for s in example.silos if s.healthy and s.name in scores), key=lambda s: -scores[s.name]
                )
            ]
            scored.append((ranked, example.share_map(), len(example.silos)))
    grid = COVERAGE_GRID if selection == "coverage" else THRESHOLD_GRID[::-1]
    best: Calibration | None = None
    for value in grid:
        recall, fraction = _figures(scored, selection, value)
        candidate = Calibration(selection, value, target_recall, recall, fraction, folds)
        if recall >= target_recall:
            return candidate
        if best is None or recall > best.recall:
            best = candidate
    assert best is not None  # the grids are not empty
    return best


def _figures(
    scored: Sequence[tuple[list[tuple[str, float]], dict[str, float], int]], selection: Selection, value: float
) -> tuple[float, float]:
    recalls, fractions = [], []
    for ranked, shares, silos in scored:
        if selection == "coverage":
            chosen = list(covering(ranked, value))
        else:
            chosen = [name for name, score in ranked if score >= value] or [name for name, _ in ranked[:1]]
        recalls.append(sum(shares.get(name, 0.0) for name in chosen))
        fractions.append(len(chosen) / silos if silos else 0.0)
    return float(np.mean(recalls)), float(np.mean(fractions))
