"""The ``learned`` strategy: a per-silo relevance classifier in the spirit of RAGRoute.

For each (query, silo) pair the router computes card features (see
:mod:`router.features`) plus a one-hot bias for silos seen in training, and a logistic
regression turns them into the probability that the silo contributes to the top-k
when all silos are asked. Silos with probability at least ``threshold`` are asked.

The model is trained with L2-regularised Newton iterations (deterministic, numpy only)
and stored as plain JSON by :mod:`router.model_file` (data only, no code objects).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.errors import ConfigError
from router.base import (
    TIER_NO_CARD,
    TIER_UNUSABLE,
    Assessment,
    RoutingPlan,
    SiloView,
    assemble_plan,
    card_problem,
    check_query,
    check_silos,
    effective_limit,
)
from router.features import FEATURE_NAMES, feature_matrix, usable
from router.logistic import fit_logistic, sigmoid
from router.model_file import ModelParams, load_model, save_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingExample:
    """One labelled question for training or evaluating a router.

    Attributes:
        query: the question's embedding.
        silos: the silos as the router saw them.
        relevant: silos that contributed to the top-k when all silos were asked.
    """

    query: np.ndarray
    silos: tuple[SiloView, ...]
    relevant: frozenset[str]


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float; raise ValueError unless it is a number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    return float(threshold)


class LearnedRouter:
    """Route with a logistic-regression relevance model over card features."""

    name = "learned"

    def __init__(
        self,
        *,
        intercept: float,
        weights: np.ndarray,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        silo_names: Sequence[str],
        silo_bias: np.ndarray,
        threshold: float = 0.5,
        training: Mapping[str, int] | None = None,
    ) -> None:
        """Create a router from fitted parameters (use :meth:`train` or :meth:`load`).

        Args:
            intercept: the model's intercept.
            weights: one weight per entry of :data:`router.features.FEATURE_NAMES`.
            feature_mean: training mean of each feature (for standardisation).
            feature_std: training standard deviation of each feature (positive).
            silo_names: silos seen in training, one bias each.
            silo_bias: the per-silo bias, aligned with ``silo_names``.
            threshold: minimum relevance probability for a silo to be asked.
            training: counts describing the training data, kept in the model file.

        Raises:
            ValueError: when shapes disagree, values are not finite, or the threshold is invalid.
        """
        n = len(FEATURE_NAMES)
        self.intercept = float(intercept)
        self.weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float64).reshape(-1)
        self.feature_std = np.asarray(feature_std, dtype=np.float64).reshape(-1)
        self.silo_names: tuple[str, ...] = tuple(silo_names)
        self.silo_bias = np.asarray(silo_bias, dtype=np.float64).reshape(-1)
        self.threshold = check_threshold(threshold)
        self.training: dict[str, int] = dict(training or {})
        if not (self.weights.size == self.feature_mean.size == self.feature_std.size == n):
            raise ValueError(f"weights, feature_mean and feature_std must each hold {n} values")
        if self.silo_bias.size != len(self.silo_names) or len(set(self.silo_names)) != len(self.silo_names):
            raise ValueError("silo_names must be unique and aligned with silo_bias")
        values = np.concatenate([[self.intercept], self.weights, self.feature_mean, self.feature_std, self.silo_bias])
        if not np.isfinite(values).all() or (self.feature_std <= 0).any():
            raise ValueError("parameters must be finite and feature_std positive")
        self._bias = dict(zip(self.silo_names, self.silo_bias.tolist(), strict=True))

    def __repr__(self) -> str:
        return f"LearnedRouter(threshold={self.threshold}, silos={len(self.silo_names)})"

    def with_threshold(self, threshold: float) -> LearnedRouter:
        """Return a copy of this router with another probability threshold."""
        return LearnedRouter(
            intercept=self.intercept,
            weights=self.weights,
            feature_mean=self.feature_mean,
            feature_std=self.feature_std,
            silo_names=self.silo_names,
            silo_bias=self.silo_bias,
            threshold=threshold,
            training=self.training,
        )

    def probabilities(self, query: np.ndarray, silos: Sequence[SiloView]) -> dict[str, float]:
        """Relevance probability of each silo with a usable card (others are absent).

        Args:
            query: the question's embedding.
            silos: the silos known to the gateway.

        Returns:
            Silo name to probability, for silos whose card is present, non-empty and of
            the query's dimension.
        """
        unit = check_query(query)
        views = [s for s in silos if usable(s, unit.size)]
        if not views:
            return {}
        features = (feature_matrix(unit, views) - self.feature_mean) / self.feature_std
        bias = np.array([self._bias.get(v.name, 0.0) for v in views])
        probs = sigmoid(self.intercept + features @ self.weights + bias)
        return {v.name: float(p) for v, p in zip(views, probs, strict=True)}

    def route(self, query: np.ndarray, silos: Sequence[SiloView], *, max_silos: int | None = None) -> RoutingPlan:
        """Select the silos whose relevance probability reaches the threshold.

        Args:
            query: the question's embedding.
            silos: the silos known to the gateway.
            max_silos: the cost budget; None for no budget.

        Returns:
            The ranked plan; scores are probabilities.
        """
        unit = check_query(query)
        check_silos(silos, max_silos)
        probs = self.probabilities(unit, silos)
        limit, limit_reason = effective_limit(max_silos, None)
        return assemble_plan(
            self.name, silos, [self._assess(s, probs, unit.size) for s in silos], limit=limit, limit_reason=limit_reason
        )

    def _assess(self, view: SiloView, probs: dict[str, float], dimension: int) -> Assessment:
        if view.card is None:
            return Assessment(math.nan, False, "no card yet", TIER_NO_CARD, "no card yet; asked as fallback")
        p = probs.get(view.name)
        if p is None:
            problem = card_problem(view.card, dimension) or "not scored"
            return Assessment(math.nan, False, problem, TIER_UNUSABLE, f"{problem}; asked as fallback")
        t = self.threshold
        if p >= t:
            return Assessment(p, True, f"p {p:.2f} >= {t:.2f}")
        return Assessment(
            p, False, f"below threshold p {p:.2f} < {t:.2f}", fallback_reason=f"best available p {p:.2f} below {t:.2f}"
        )

    @classmethod
    def train(cls, examples: Sequence[TrainingExample], *, l2: float = 1e-2, threshold: float = 0.5) -> LearnedRouter:
        """Fit the relevance model on labelled questions.

        Every silo with a usable card in an example gives one training row, labelled
        relevant when its name is in ``example.relevant``.

        Args:
            examples: labelled questions.
            l2: L2 penalty on every weight but the intercept (must be positive).
            threshold: probability threshold of the returned router.

        Returns:
            The fitted router.

        Raises:
            ValueError: without examples, without both relevant and irrelevant rows, or
                for ``l2 <= 0``.
        """
        if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 > 0):
            raise ValueError(f"l2 must be a positive number, got {l2!r}")
        threshold = check_threshold(threshold)
        blocks: list[np.ndarray] = []
        names: list[str] = []
        labels: list[float] = []
        for example in examples:
            unit = check_query(example.query)
            views = [s for s in example.silos if usable(s, unit.size)]
            if views:
                blocks.append(feature_matrix(unit, views))
                names.extend(v.name for v in views)
                labels.extend(1.0 if v.name in example.relevant else 0.0 for v in views)
        y = np.array(labels)
        if y.size == 0 or y.min() == y.max():
            raise ValueError("training needs examples with both relevant and irrelevant silos (with usable cards)")
        x = np.vstack(blocks)
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        silo_names = sorted(set(names))
        one_hot = np.zeros((y.size, len(silo_names)))
        column = {name: j for j, name in enumerate(silo_names)}
        one_hot[np.arange(y.size), [column[n] for n in names]] = 1.0
        design = np.hstack([np.ones((y.size, 1)), (x - mean) / std, one_hot])
        beta = fit_logistic(design, y, l2)
        n = len(FEATURE_NAMES)
        logger.info(
            "trained learned router",
            extra={"examples": len(examples), "rows": int(y.size), "positives": int(y.sum()), "silos": len(silo_names)},
        )
        return cls(
            intercept=float(beta[0]),
            weights=beta[1 : 1 + n],
            feature_mean=mean,
            feature_std=std,
            silo_names=silo_names,
            silo_bias=beta[1 + n :],
            threshold=threshold,
            training={"examples": len(examples), "rows": int(y.size), "positives": int(y.sum())},
        )

    def save(self, path: Path) -> None:
        """Write the model as JSON, atomically (format in :mod:`router.model_file`).

        Args:
            path: destination file; its directory must exist.
        """
        params = ModelParams(
            intercept=self.intercept,
            weights=tuple(self.weights.tolist()),
            feature_mean=tuple(self.feature_mean.tolist()),
            feature_std=tuple(self.feature_std.tolist()),
            silo_names=self.silo_names,
            silo_bias=tuple(self.silo_bias.tolist()),
            threshold=self.threshold,
            training=dict(self.training),
        )
        save_model(Path(path), params)

    @classmethod
    def load(cls, path: Path) -> LearnedRouter:
        """Read a model written by :meth:`save`.

        Args:
            path: the model file.

        Returns:
            The router, with the threshold stored in the file.

        Raises:
            federation.errors.ConfigError: when the file is missing, not a model, written
                for another feature set or format version, or holds invalid values.
        """
        params = load_model(Path(path))
        try:
            return cls(
                intercept=params.intercept,
                weights=np.array(params.weights),
                feature_mean=np.array(params.feature_mean),
                feature_std=np.array(params.feature_std),
                silo_names=params.silo_names,
                silo_bias=np.array(params.silo_bias),
                threshold=params.threshold,
                training=params.training,
            )
        except ValueError as exc:
            raise ConfigError(f"router model {path}: {exc}") from exc
