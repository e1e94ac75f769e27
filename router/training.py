"""Training data for the learned router, and fitting its two kinds of model.

A :class:`TrainingExample` is one question with what asking every silo gave: which silos
contributed to the merged top-k (``relevant``) and what fraction of it each one held
(``shares``). :func:`fit_model` turns examples into the parameters of

- a ``relevance`` model: per silo, a logistic regression of "contributes at all"; or
- a ``share`` model: per question, a softmax over the silos (a conditional logit) fitted
  to the observed shares, so its scores estimate each silo's fraction of the all-silo
  top-k and sum to one over the silos routed together.

Both use the card features of :mod:`router.features` (standardised) plus a bias per silo
seen in training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.base import SiloView, check_query
from router.features import feature_matrix, usable
from router.logistic import fit_grouped_softmax, fit_logistic
from router.model_file import ModelKind

logger = logging.getLogger(__name__)

_SHARE_SLACK = 1e-6


@dataclass(frozen=True)
class TrainingExample:
    """One labelled question for training or evaluating a router.

    Attributes:
        query: the question's embedding.
        silos: the silos as the router saw them.
        relevant: silos that contributed to the top-k when all silos were asked.
        shares: the fraction of that top-k each silo held (silos absent hold none); the
            silos with a positive share must be exactly ``relevant``. None when unknown:
            each relevant silo then counts as an equal share (see :meth:`share_map`).
    """

    query: np.ndarray
    silos: tuple[SiloView, ...]
    relevant: frozenset[str]
    shares: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.shares is None:
            return
        values = list(self.shares.values())
        if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values):
            raise ValueError("shares must be finite, non-negative numbers")
        if sum(values) > 1 + _SHARE_SLACK:
            raise ValueError(f"shares must sum to at most 1, got {sum(values):.6f}")
        if {name for name, v in self.shares.items() if v > 0} != set(self.relevant):
            raise ValueError("the silos with a positive share must be exactly the relevant silos")

    def share_map(self) -> dict[str, float]:
        """Each relevant silo's share of the all-silo top-k (equal shares when ``shares`` is None)."""
        if self.shares is not None:
            return {name: float(v) for name, v in self.shares.items() if v > 0}
        return {name: 1.0 / len(self.relevant) for name in self.relevant}


@dataclass(frozen=True)
class FittedModel:
    """Parameters fitted by :func:`fit_model` (see :class:`router.LearnedRouter`)."""

    intercept: float
    weights: np.ndarray
    feature_mean: np.ndarray
    feature_std: np.ndarray
    silo_names: tuple[str, ...]
    silo_bias: np.ndarray
    training: dict[str, int]


def fit_model(examples: Sequence[TrainingExample], *, model: ModelKind, l2: float) -> FittedModel:
    """Fit a relevance or share model on labelled questions.

    Every silo with a usable card in an example gives one row: labelled 1 or 0 by
    ``relevant`` for the relevance model, or with its share for the share model (the
    shares of an example's usable silos renormalised to sum to one; an example whose
    usable silos hold no share is left out).

    Args:
        examples: labelled questions.
        model: ``"relevance"`` or ``"share"``.
        l2: L2 penalty on every weight but the relevance model's intercept (positive).

    Returns:
        The fitted parameters, with counts describing the training data.

    Raises:
        ValueError: for ``l2 <= 0``, an unknown model, or without both relevant and
            irrelevant rows.
    """
    if isinstance(l2, bool) or not (isinstance(l2, int | float) and math.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2 must be a positive number, got {l2!r}")
    if model not in ("relevance", "share"):
        raise ValueError(f"model must be 'relevance' or 'share', got {model!r}")
    blocks: list[np.ndarray] = []
    names: list[str] = []
    targets: list[float] = []
    groups: list[int] = []
    for example in examples:
        unit = check_query(example.query)
        views = [s for s in example.silos if usable(s, unit.size)]
        if model == "relevance":
            y = [1.0 if v.name in example.relevant else 0.0 for v in views]
        else:
            shares = example.share_map()
            y = [shares.get(v.name, 0.0) for v in views]
            total = sum(y)
            y = [v / total for v in y] if total > 0 else []
        if views and y:
            groups.extend([len(blocks)] * len(views))
            blocks.append(feature_matrix(unit, views))
            names.extend(v.name for v in views)
            targets.extend(y)
    target = np.array(targets)
    if target.size == 0 or not (target > 0).any() or (target > 0).all():
        raise ValueError("training needs examples with both relevant and irrelevant silos (with usable cards)")
    x = np.vstack(blocks)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    silo_names = tuple(sorted(set(names)))
    column = {name: j for j, name in enumerate(silo_names)}
    one_hot = np.zeros((target.size, len(silo_names)))
    one_hot[np.arange(target.size), [column[n] for n in names]] = 1.0
    features = np.hstack([(x - mean) / std, one_hot])
    n = x.shape[1]
    if model == "relevance":
        beta = fit_logistic(np.hstack([np.ones((target.size, 1)), features]), target, float(l2))
        intercept, coefficients = float(beta[0]), beta[1:]
    else:
        intercept, coefficients = 0.0, fit_grouped_softmax(features, np.array(groups), target, float(l2))
    training = {"examples": len(examples), "rows": int(target.size), "positives": int((target > 0).sum())}
    logger.info("trained learned router", extra={"model": model, "silos": len(silo_names), **training})
    return FittedModel(
        intercept=intercept,
        weights=coefficients[:n],
        feature_mean=mean,
        feature_std=std,
        silo_names=silo_names,
        silo_bias=coefficients[n:],
        training=training,
    )
