"""Routing: choose which silos to ask for one question.

A :class:`Router` turns the query embedding and the silos' published cards
(:class:`SiloView`) into a :class:`RoutingPlan`: every silo ranked, with a score and the
reason it was asked or skipped. Strategies: ``all`` (:class:`AllRouter`, the baseline),
``centroid`` (:class:`CentroidRouter`, best centroid similarity with a threshold) and
``learned`` (:class:`LearnedRouter`, a per-silo relevance or share model trained from
:class:`TrainingExample` questions, selecting by threshold or by predicted coverage of the
all-silo top-k; :func:`calibrate` picks the setting for a target recall). Every strategy
skips unhealthy silos, respects the caller's budget and never routes a question nowhere
while a healthy silo exists.

This package is a pure library: it depends on :mod:`federation` and numpy only.
"""

from __future__ import annotations

from router.base import RouteDecision, Router, RoutingPlan, SiloView
from router.calibration import Calibration, calibrate
from router.evaluate import evaluate_routing
from router.factory import ROUTER_NAMES, make_router
from router.learned import LearnedRouter
from router.strategies import AllRouter, CentroidRouter
from router.training import TrainingExample

__all__ = [
    "ROUTER_NAMES",
    "AllRouter",
    "Calibration",
    "CentroidRouter",
    "LearnedRouter",
    "RouteDecision",
    "Router",
    "RoutingPlan",
    "SiloView",
    "TrainingExample",
    "calibrate",
    "evaluate_routing",
    "make_router",
]
