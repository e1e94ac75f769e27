"""The routing contract: what the gateway knows about silos, and what a router decides.

A router picks which silos to ask for one question. It sees the query embedding and a
:class:`SiloView` per silo (the silo's published card, the gateway's health view of it),
and returns a :class:`RoutingPlan` with one :class:`RouteDecision` per silo, each with a
score and a short reason that ends up in the answer's routing trace.

:func:`assemble_plan` holds the selection logic every strategy shares (health, budget,
ranking, the never-zero fallback), so each strategy only scores silos.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from federation.protocol import SiloCard

logger = logging.getLogger(__name__)

# Fallback preference among healthy silos that did not pass a strategy's criterion:
# a scored silo first, then one whose card is missing, then an empty or incompatible one.
TIER_SCORED = 0
TIER_NO_CARD = 1
TIER_UNUSABLE = 2


@dataclass(frozen=True)
class SiloView:
    """What the gateway knows about one silo when it routes.

    Attributes:
        name: the silo's name in the membership file.
        card: the silo's published card; None when it could not be fetched yet.
        healthy: False when the gateway's circuit breaker for this silo is open.
        health_reason: why the silo is unhealthy, e.g. "circuit open after 5 failures".
        description_vector: embedding of the silo's description (unit length), if known.
    """

    name: str
    card: SiloCard | None
    healthy: bool = True
    health_reason: str = ""
    description_vector: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.description_vector is not None:
            vector = np.asarray(self.description_vector, dtype=np.float32).reshape(-1)
            if vector.size == 0 or not np.isfinite(vector).all():
                raise ValueError(f"silo {self.name!r}: description_vector must be a non-empty finite vector")
            object.__setattr__(self, "description_vector", vector)


@dataclass(frozen=True)
class RouteDecision:
    """The router's verdict on one silo.

    Attributes:
        silo: the silo's name.
        score: the strategy's relevance score (higher is more relevant); nan when not scored.
        selected: whether the gateway should ask this silo.
        reason: why it was chosen or skipped, one short phrase.
        degraded: skipped although the strategy chose it: its circuit is open or the cost
            budget was reached (an answer without it is partial).
    """

    silo: str
    score: float
    selected: bool
    reason: str
    degraded: bool = False


@dataclass(frozen=True)
class RoutingPlan:
    """Every silo's decision for one question, ranked.

    Attributes:
        strategy: name of the router that made the plan.
        decisions: one per silo; selected first by score descending, then skipped by
            score descending (unscored silos last within each group).
    """

    strategy: str
    decisions: tuple[RouteDecision, ...]

    @property
    def selected(self) -> list[str]:
        """Names of the silos to ask, most relevant first."""
        return [d.silo for d in self.decisions if d.selected]

    @property
    def skipped(self) -> list[RouteDecision]:
        """Decisions for the silos not asked, with their reasons."""
        return [d for d in self.decisions if not d.selected]


@runtime_checkable
class Router(Protocol):
    """Picks which silos to ask for one question.

    Contract (every implementation passes the same conformance tests):

    - ``route`` returns exactly one decision per given silo, ranked as described in
      :class:`RoutingPlan`.
    - It never selects an unhealthy silo; an unhealthy silo is reported as skipped with
      its ``health_reason``.
    - It never selects more than ``max_silos`` silos (``None`` means no budget).
    - It never returns zero selected silos while any healthy silo exists.
    - It is deterministic: the same inputs give the same plan.

    Raises ValueError for a malformed query (not a finite, non-zero 1-D vector),
    duplicate silo names or ``max_silos < 1``.
    """

    name: str

    def route(self, query: np.ndarray, silos: Sequence[SiloView], *, max_silos: int | None = None) -> RoutingPlan:
        """Rank the silos for one query and choose which to ask."""
        ...


@dataclass(frozen=True)
class Assessment:
    """A strategy's view of one silo, before the shared selection logic runs.

    Attributes:
        score: relevance score; nan when not scored.
        passes: whether the silo meets the strategy's criterion (e.g. the threshold).
        reason: the reason shown when it is selected (if ``passes``) or skipped.
        tier: fallback preference (``TIER_*``) when no silo passes.
        fallback_reason: the reason shown when it is selected as the fallback.
    """

    score: float
    passes: bool
    reason: str
    tier: int = TIER_SCORED
    fallback_reason: str = ""


def check_query(query: np.ndarray) -> np.ndarray:
    """Return the query as a unit-length float64 1-D vector; raise ValueError if unusable."""
    vector = np.asarray(query, dtype=np.float64)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"query must be a 1-D vector, got shape {np.shape(query)}")
    if not np.isfinite(vector).all():
        raise ValueError("query must be finite (no NaN or infinity)")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise ValueError("query must not be the zero vector")
    return vector / norm


def check_silos(silos: Sequence[SiloView], max_silos: int | None) -> None:
    """Raise ValueError for duplicate silo names or a budget below one."""
    if max_silos is not None and max_silos < 1:
        raise ValueError(f"max_silos must be at least 1 (or None for no budget), got {max_silos}")
    names = [s.name for s in silos]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate silo names: {', '.join(duplicates)}")


def card_problem(card: SiloCard, dimension: int) -> str | None:
    """Why a card cannot be scored against a query of ``dimension``, or None if it can."""
    if card.embedding.dimension != dimension or card.centroids.dimension != dimension:
        return f"incompatible card (dimension {card.centroids.dimension} != query {dimension})"
    if card.centroids.rows == 0:
        return "empty silo"
    return None


_OVER_BUDGET = "over budget"


def unhealthy_reason(view: SiloView) -> str:
    """The reason an unhealthy silo is skipped."""
    return view.health_reason or "unhealthy (circuit open)"


def _rank_key(item: tuple[RouteDecision, int]) -> tuple[bool, int, float, int]:
    decision, position = item
    score = decision.score
    return (not decision.selected, 1 if math.isnan(score) else 0, 0.0 if math.isnan(score) else -score, position)


def assemble_plan(
    strategy: str,
    silos: Sequence[SiloView],
    assessments: Sequence[Assessment],
    *,
    limit: int | None,
    limit_reason: str,
) -> RoutingPlan:
    """Apply health, budget and the never-zero rule to per-silo assessments.

    Args:
        strategy: the router's name, recorded in the plan.
        silos: the silos, in the order the caller gave them (the tie-breaker).
        assessments: one per silo, in the same order.
        limit: at most this many silos are selected (None: no limit).
        limit_reason: the reason given to passing silos cut by ``limit``.

    Returns:
        The ranked plan.
    """
    order = sorted(
        range(len(silos)),
        key=lambda i: (
            math.isnan(assessments[i].score),
            0.0 if math.isnan(assessments[i].score) else -assessments[i].score,
            i,
        ),
    )
    decisions: dict[int, RouteDecision] = {}
    chosen = 0
    for i in order:
        view, assessment = silos[i], assessments[i]
        if not view.healthy:
            decisions[i] = RouteDecision(
                view.name, assessment.score, False, unhealthy_reason(view), degraded=assessment.passes
            )
        elif not assessment.passes:
            decisions[i] = RouteDecision(view.name, assessment.score, False, assessment.reason)
        elif limit is not None and chosen >= limit:
            budget_cut = limit_reason.startswith(_OVER_BUDGET)
            decisions[i] = RouteDecision(view.name, assessment.score, False, limit_reason, degraded=budget_cut)
        else:
            decisions[i] = RouteDecision(view.name, assessment.score, True, assessment.reason)
            chosen += 1
    if chosen == 0:
        rank = {i: position for position, i in enumerate(order)}
        healthy = [i for i in order if silos[i].healthy]
        if healthy:
            best = min(healthy, key=lambda i: (assessments[i].tier, rank[i]))
            old = decisions[best]
            reason = assessments[best].fallback_reason or f"best available ({old.reason})"
            decisions[best] = RouteDecision(old.silo, old.score, True, reason)
    ranked = sorted(((decisions[i], i) for i in range(len(silos))), key=_rank_key)
    plan = RoutingPlan(strategy=strategy, decisions=tuple(d for d, _ in ranked))
    logger.debug(
        "routed query",
        extra={"strategy": strategy, "selected": plan.selected, "silos": len(silos), "limit": limit},
    )
    return plan


def effective_limit(max_silos: int | None, top_m: int | None) -> tuple[int | None, str]:
    """Combine a strategy's top-m with the caller's budget into one limit and its reason."""
    if max_silos is not None and (top_m is None or max_silos <= top_m):
        return max_silos, f"{_OVER_BUDGET} (max {max_silos} silos)"
    if top_m is not None:
        return top_m, f"over top-m ({top_m})"
    return None, ""
