"""Routing: choose which silos to ask for one question.

A :class:`Router` turns the query embedding and the silos' published cards
(:class:`SiloView`) into a :class:`RoutingPlan`: every silo ranked, with a score and the
reason it was asked or skipped. Strategies: ``all`` (:class:`AllRouter`, the baseline),
``centroid`` (:class:`CentroidRouter`, best centroid similarity with a threshold) and
``learned`` (:class:`LearnedRouter`, a per-silo relevance model trained from
:class:`TrainingExample` questions). Every strategy skips unhealthy silos, respects the
caller's budget and never routes a question nowhere while a healthy silo exists.

This package is a pure library: it depends on :mod:`federation` and numpy only.
"""

from __future__ import annotations

from router.base import RouteDecision, Router, RoutingPlan, SiloView
from router.evaluate import evaluate_routing
from router.factory import ROUTER_NAMES, make_router
from router.learned import LearnedRouter, TrainingExample
from router.strategies import AllRouter, CentroidRouter

__all__ = [
    "ROUTER_NAMES",
    "AllRouter",
    "CentroidRouter",
    "LearnedRouter",
    "RouteDecision",
    "Router",
    "RoutingPlan",
    "SiloView",
    "TrainingExample",
    "evaluate_routing",
    "make_router",
]
