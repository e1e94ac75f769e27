"""The simple routing strategies: ``all`` (the baseline) and ``centroid``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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
from router.features import centroid_similarities


class AllRouter:
    """Ask every healthy silo: the baseline that every other strategy is measured against.

    Under a budget (``max_silos``) the largest silos by the card's ``chunk_count`` are
    kept; silos without a card come last, in the order given. Scores are nan: this
    strategy does not judge relevance.
    """

    name = "all"

    def route(self, query: np.ndarray, silos: Sequence[SiloView], *, max_silos: int | None = None) -> RoutingPlan:
        """Select every healthy silo, largest first, up to ``max_silos``.

        Args:
            query: the question's embedding (validated, otherwise unused).
            silos: the silos known to the gateway.
            max_silos: the cost budget; None for no budget.

        Returns:
            The plan, with reason "all strategy" for each selected silo.
        """
        check_query(query)
        check_silos(silos, max_silos)
        ordered = sorted(silos, key=lambda s: -1 if s.card is None else -s.card.chunk_count)
        limit, limit_reason = effective_limit(max_silos, None)
        assessments = [Assessment(score=math.nan, passes=True, reason="all strategy") for _ in ordered]
        return assemble_plan(self.name, ordered, assessments, limit=limit, limit_reason=limit_reason)


class CentroidRouter:
    """Score each silo by its best centroid similarity; select by threshold and top-m.

    The score is the largest cosine similarity between the query and the centroids on
    the silo's card. Silos scoring at least ``threshold`` are selected, at most ``top_m``
    and at most ``max_silos`` of them. When none passes, the single best healthy silo is
    asked anyway (a question is never routed nowhere while a silo is up).
    """

    name = "centroid"

    def __init__(self, threshold: float = 0.3, top_m: int = 3) -> None:
        """Create the router.

        Args:
            threshold: minimum best-centroid cosine similarity, in [-1, 1].
            top_m: at most this many silos are selected (before the caller's budget).

        Raises:
            ValueError: when ``threshold`` is not in [-1, 1] or ``top_m`` is below one.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [-1, 1], got {threshold!r}")
        if isinstance(top_m, bool) or not isinstance(top_m, int) or top_m < 1:
            raise ValueError(f"top_m must be an integer of at least 1, got {top_m!r}")
        self.threshold = float(threshold)
        self.top_m = top_m

    def __repr__(self) -> str:
        return f"CentroidRouter(threshold={self.threshold}, top_m={self.top_m})"

    def route(self, query: np.ndarray, silos: Sequence[SiloView], *, max_silos: int | None = None) -> RoutingPlan:
        """Rank silos by best centroid similarity and select those above the threshold.

        Args:
            query: the question's embedding.
            silos: the silos known to the gateway.
            max_silos: the cost budget; None for no budget.

        Returns:
            The ranked plan.
        """
        unit = check_query(query)
        check_silos(silos, max_silos)
        limit, limit_reason = effective_limit(max_silos, self.top_m)
        return assemble_plan(
            self.name, silos, [self._assess(unit, s) for s in silos], limit=limit, limit_reason=limit_reason
        )

    def _assess(self, unit: np.ndarray, view: SiloView) -> Assessment:
        if view.card is None:
            return Assessment(math.nan, False, "no card yet", TIER_NO_CARD, "no card yet; asked as fallback")
        problem = card_problem(view.card, unit.size)
        if problem == "empty silo":
            return Assessment(-math.inf, False, problem, TIER_UNUSABLE, "empty silo; asked as fallback")
        if problem is not None:
            return Assessment(math.nan, False, problem, TIER_UNUSABLE, f"{problem}; asked as fallback")
        score = float(centroid_similarities(unit, view.card).max())
        if score >= self.threshold:
            return Assessment(score, True, f"best centroid {score:.2f} >= {self.threshold:.2f}")
        return Assessment(
            score,
            False,
            f"below threshold {score:.2f} < {self.threshold:.2f}",
            fallback_reason=f"best available {score:.2f} below threshold {self.threshold:.2f}",
        )
