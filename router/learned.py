"""The ``learned`` strategy: a per-silo model over card features, in the spirit of RAGRoute.

For each (query, silo) pair the router computes card features (see
:mod:`router.features`) plus a bias for silos seen in training, and scores the silo with
one of two models (see :mod:`router.training`):

- ``relevance``: the probability that the silo contributes to the top-k when all silos
  are asked (a logistic regression);
- ``share``: the silo's expected fraction of that top-k (a softmax over the silos routed
  together, so the scores sum to one).

Then it selects with one of two rules:

- ``threshold``: every silo scoring at least ``threshold``;
- ``coverage`` (share model only): the fewest silos, best first, whose predicted shares
  add up to at least ``coverage`` of what the healthy silos hold together. Recall@k of
  the merged result loses exactly the shares of the silos skipped, so this spends silo
  calls where the passages are expected, question by question.

The model is stored as plain JSON by :mod:`router.model_file` (data only, no code objects).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
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
from router.features import FEATURE_NAMES, centroid_similarities, feature_matrix, usable
from router.logistic import sigmoid, softmax
from router.model_file import MODEL_KINDS, SELECTIONS, ModelKind, ModelParams, Selection, load_model, save_model
from router.training import TrainingExample, fit_model

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: Mapping[str, float] = {"relevance": 0.5, "share": 0.1}
"""Threshold when none is given: probability 0.5, or a share of 0.1 (one passage in ten)."""
DEFAULT_COVERAGE = 0.95


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float; raise ValueError unless it is a number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    return float(threshold)


def check_coverage(coverage: float) -> float:
    """Return ``coverage`` as a float; raise ValueError unless it is a number in (0, 1]."""
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be a fraction in (0, 1], got {coverage!r}")
    return float(coverage)


def covering(ranked: Sequence[tuple[str, float]], coverage: float) -> dict[str, float]:
    """The fewest leading silos whose shares reach ``coverage`` of the total, never none.

    Args:
        ranked: (silo, predicted share) of the silos that may be asked, best first.
        coverage: the fraction of the silos' total share to reach, in (0, 1].

    Returns:
        The chosen silos, each with the fraction of the total covered once it is added.
    """
    total = sum(share for _, share in ranked)
    chosen: dict[str, float] = {}
    covered = 0.0
    for name, share in ranked:
        if chosen and covered >= coverage * total:
            break
        covered += share
        chosen[name] = covered / total if total > 0 else 1.0
    return chosen


class LearnedRouter:
    """Route with a relevance or share model over card features (see the module docstring)."""

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
        model: ModelKind = "relevance",
        selection: Selection = "threshold",
        threshold: float | None = None,
        coverage: float = DEFAULT_COVERAGE,
        training: Mapping[str, int] | None = None,
        calibration: Mapping[str, float] | None = None,
    ) -> None:
        """Create a router from fitted parameters (use :meth:`train` or :meth:`load`).

        Args:
            intercept: the relevance model's intercept (unused by the share model).
            weights: one weight per entry of :data:`router.features.FEATURE_NAMES`.
            feature_mean: training mean of each feature (for standardisation).
            feature_std: training standard deviation of each feature (positive).
            silo_names: silos seen in training, one bias each.
            silo_bias: the per-silo bias, aligned with ``silo_names``.
            model: ``"relevance"`` or ``"share"``: what the scores are.
            selection: ``"threshold"`` or ``"coverage"`` (share model only).
            threshold: minimum score for a silo to be asked under threshold selection;
                None for the model's default (:data:`DEFAULT_THRESHOLDS`).
            coverage: fraction of the healthy silos' predicted share to reach under
                coverage selection.
            training: counts describing the training data, kept in the model file.
            calibration: how the selection setting was chosen (see
                :func:`router.calibration.calibrate`), kept in the model file.

        Raises:
            ValueError: when shapes disagree, values are not finite, or a setting is invalid.
        """
        n = len(FEATURE_NAMES)
        if model not in MODEL_KINDS or selection not in SELECTIONS:
            raise ValueError(f"model must be one of {MODEL_KINDS} and selection one of {SELECTIONS}")
        if selection == "coverage" and model != "share":
            raise ValueError("coverage selection needs a share model (train with model='share')")
        self.model: ModelKind = model
        self.selection: Selection = selection
        self.intercept = float(intercept)
        self.weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float64).reshape(-1)
        self.feature_std = np.asarray(feature_std, dtype=np.float64).reshape(-1)
        self.silo_names: tuple[str, ...] = tuple(silo_names)
        self.silo_bias = np.asarray(silo_bias, dtype=np.float64).reshape(-1)
        self.threshold = check_threshold(DEFAULT_THRESHOLDS[model] if threshold is None else threshold)
        self.coverage = check_coverage(coverage)
        self.training: dict[str, int] = dict(training or {})
        self.calibration: dict[str, float] = dict(calibration or {})
        if not (self.weights.size == self.feature_mean.size == self.feature_std.size == n):
            raise ValueError(f"weights, feature_mean and feature_std must each hold {n} values")
        if self.silo_bias.size != len(self.silo_names) or len(set(self.silo_names)) != len(self.silo_names):
            raise ValueError("silo_names must be unique and aligned with silo_bias")
        values = np.concatenate([[self.intercept], self.weights, self.feature_mean, self.feature_std, self.silo_bias])
        if not np.isfinite(values).all() or (self.feature_std <= 0).any():
            raise ValueError("parameters must be finite and feature_std positive")
        self._bias = dict(zip(self.silo_names, self.silo_bias.tolist(), strict=True))
        self.guard = False

    def __repr__(self) -> str:
        setting = f"threshold={self.threshold}" if self.selection == "threshold" else f"coverage={self.coverage}"
        return f"LearnedRouter(model={self.model!r}, {setting}, silos={len(self.silo_names)})"

    def with_selection(
        self,
        selection: Selection,
        *,
        threshold: float | None = None,
        coverage: float | None = None,
        calibration: Mapping[str, float] | None = None,
    ) -> LearnedRouter:
        """Return a copy of this router with another selection rule or setting.

        Args:
            selection: ``"threshold"`` or ``"coverage"``.
            threshold: the new threshold; None keeps this router's.
            coverage: the new coverage; None keeps this router's.
            calibration: the new calibration record; None keeps this router's.

        Raises:
            ValueError: for an invalid setting, or coverage selection on a relevance model.
        """
        changed = LearnedRouter(
            intercept=self.intercept,
            weights=self.weights,
            feature_mean=self.feature_mean,
            feature_std=self.feature_std,
            silo_names=self.silo_names,
            silo_bias=self.silo_bias,
            model=self.model,
            selection=selection,
            threshold=self.threshold if threshold is None else threshold,
            coverage=self.coverage if coverage is None else coverage,
            training=self.training,
            calibration=self.calibration if calibration is None else calibration,
        )
        return changed.with_guard(self.guard)

    def with_guard(self, enabled: bool = True) -> LearnedRouter:
        """Return a copy that also asks the silo whose card best matches the question (see :meth:`route`)."""
        guarded = copy.copy(self)
        guarded.guard = enabled
        return guarded

    def with_threshold(self, threshold: float) -> LearnedRouter:
        """Return a copy that asks every silo scoring at least ``threshold``."""
        return self.with_selection("threshold", threshold=threshold)

    def with_coverage(self, coverage: float) -> LearnedRouter:
        """Return a copy that asks the fewest silos reaching ``coverage`` (share model only)."""
        return self.with_selection("coverage", coverage=coverage)

    def scores(self, query: np.ndarray, silos: Sequence[SiloView]) -> dict[str, float]:
        """The model's score of each silo with a usable card (others are absent).

        Args:
            query: the question's embedding.
            silos: the silos known to the gateway.

        Returns:
            Silo name to score, for silos whose card is present, non-empty and of the
            query's dimension: the relevance probability, or the predicted share (the
            shares sum to one over these silos, healthy or not).
        """
        unit = check_query(query)
        views = [s for s in silos if usable(s, unit.size)]
        if not views:
            return {}
        features = (feature_matrix(unit, views) - self.feature_mean) / self.feature_std
        bias = np.array([self._bias.get(v.name, 0.0) for v in views])
        z = features @ self.weights + bias
        values = sigmoid(self.intercept + z) if self.model == "relevance" else softmax(z)
        return {v.name: float(p) for v, p in zip(views, values, strict=True)}

    def route(self, query: np.ndarray, silos: Sequence[SiloView], *, max_silos: int | None = None) -> RoutingPlan:
        """Select silos by the router's rule (threshold or coverage).

        Args:
            query: the question's embedding.
            silos: the silos known to the gateway.
            max_silos: the cost budget; None for no budget.

        With the guard on (:meth:`with_guard`), the healthy silo whose card has the centroid
        closest to the question is asked too when the model's rule leaves it out: the model
        learned its training questions' distribution, the centroids describe the silos
        themselves, so a question unlike the training questions still reaches the silo that
        plainly holds its topic.

        Returns:
            The ranked plan; scores are the model's (probabilities or shares).
        """
        unit = check_query(query)
        check_silos(silos, max_silos)
        scores = self.scores(unit, silos)
        guarded = self._closest_by_centroid(unit, silos, scores) if self.guard else None
        chosen: dict[str, float] | None = None
        if self.selection == "coverage":
            order = sorted(
                (i for i, s in enumerate(silos) if s.healthy and s.name in scores),
                key=lambda i: (-scores[silos[i].name], i),
            )
            chosen = covering([(silos[i].name, scores[silos[i].name]) for i in order], self.coverage)
        limit, limit_reason = effective_limit(max_silos, None)
        assessments = [self._assess(s, scores, unit.size, chosen) for s in silos]
        if guarded is not None:
            i = next(i for i, s in enumerate(silos) if s.name == guarded[0])
            if not assessments[i].passes:
                p, label = assessments[i].score, "p" if self.model == "relevance" else "share"
                reason = f"closest centroid {guarded[1]:.2f} (guard), {label} {p:.2f}"
                assessments[i] = Assessment(p, True, reason)
        return assemble_plan(self.name, silos, assessments, limit=limit, limit_reason=limit_reason)

    @staticmethod
    def _closest_by_centroid(
        unit: np.ndarray, silos: Sequence[SiloView], scores: dict[str, float]
    ) -> tuple[str, float] | None:
        """The healthy scored silo with the centroid most similar to the question, and that similarity."""
        best: tuple[str, float] | None = None
        for view in silos:
            if view.healthy and view.card is not None and view.name in scores:
                similarity = float(centroid_similarities(unit, view.card).max())
                if best is None or similarity > best[1]:
                    best = (view.name, similarity)
        return best

    def _assess(
        self, view: SiloView, scores: dict[str, float], dimension: int, chosen: dict[str, float] | None
    ) -> Assessment:
        if view.card is None:
            return Assessment(math.nan, False, "no card yet", TIER_NO_CARD, "no card yet; asked as fallback")
        p = scores.get(view.name)
        if p is None:
            problem = card_problem(view.card, dimension) or "not scored"
            return Assessment(math.nan, False, problem, TIER_UNUSABLE, f"{problem}; asked as fallback")
        label = "p" if self.model == "relevance" else "share"
        if chosen is not None:
            c = self.coverage
            if view.name in chosen:
                return Assessment(p, True, f"{label} {p:.2f}, covering {chosen[view.name]:.2f} (target {c:.2f})")
            return Assessment(
                p, False, f"coverage {c:.2f} reached without it ({label} {p:.2f})", fallback_reason="best available"
            )
        t = self.threshold
        if p >= t:
            return Assessment(p, True, f"{label} {p:.2f} >= {t:.2f}")
        return Assessment(
            p,
            False,
            f"below threshold {label} {p:.2f} < {t:.2f}",
            fallback_reason=f"best available {label} {p:.2f} below {t:.2f}",
        )

    @classmethod
    def train(
        cls,
        examples: Sequence[TrainingExample],
        *,
        model: ModelKind = "share",
        selection: Selection | None = None,
        threshold: float | None = None,
        coverage: float = DEFAULT_COVERAGE,
        l2: float = 1e-2,
    ) -> LearnedRouter:
        """Fit a model on labelled questions (see :func:`router.training.fit_model`).

        To choose the threshold or coverage for a target recall instead of giving it,
        use :func:`router.calibration.calibrate`.

        Args:
            examples: labelled questions.
            model: ``"share"`` (default) or ``"relevance"``.
            selection: the rule of the returned router; None for ``"coverage"`` with a
                share model and ``"threshold"`` with a relevance model.
            threshold: the threshold of threshold selection; None for the model's default.
            coverage: the coverage of coverage selection.
            l2: L2 penalty on the weights (must be positive).

        Returns:
            The fitted router.

        Raises:
            ValueError: without both relevant and irrelevant rows, for ``l2 <= 0`` or an
                invalid setting.
        """
        if selection is None:
            selection = "coverage" if model == "share" else "threshold"
        if threshold is not None:
            check_threshold(threshold)
        check_coverage(coverage)
        if selection == "coverage" and model != "share":
            raise ValueError("coverage selection needs a share model (train with model='share')")
        fitted = fit_model(examples, model=model, l2=l2)
        return cls(
            intercept=fitted.intercept,
            weights=fitted.weights,
            feature_mean=fitted.feature_mean,
            feature_std=fitted.feature_std,
            silo_names=fitted.silo_names,
            silo_bias=fitted.silo_bias,
            model=model,
            selection=selection,
            threshold=threshold,
            coverage=coverage,
            training=fitted.training,
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
            model=self.model,
            selection=self.selection,
            coverage=self.coverage,
            calibration=dict(self.calibration),
        )
        save_model(Path(path), params)

    @classmethod
    def load(cls, path: Path) -> LearnedRouter:
        """Read a model written by :meth:`save` (this version or version 1).

        Args:
            path: the model file.

        Returns:
            The router, with the selection rule and setting stored in the file.

        Raises:
            federation.errors.ConfigError: when the file is missing, not a model, written
                for another feature set or an unknown format version, or holds invalid values.
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
                model=params.model,
                selection=params.selection,
                threshold=params.threshold,
                coverage=params.coverage,
                training=params.training,
                calibration=params.calibration,
            )
        except ValueError as exc:
            raise ConfigError(f"router model {path}: {exc}") from exc
