"""Prometheus metrics of one gateway (a registry per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class GatewayMetrics:
    """Questions, per-step latency, silo outcomes, how answers ended."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "fedrag_gateway_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "fedrag_gateway_step_seconds",
            "Time per pipeline step",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.silo_outcomes = Counter(
            "fedrag_gateway_silo_outcomes_total", "Silo search outcomes", ["silo", "outcome"], registry=self.registry
        )
        self.partial_answers = Counter(
            "fedrag_gateway_partial_answers_total", "Answers missing a routed silo", registry=self.registry
        )
        self.answers = Counter(
            "fedrag_gateway_answers_total",
            "Answers by outcome: grounded, not_grounded, abstained, no_sources; and loops the guard stopped",
            ["outcome"],
            registry=self.registry,
        )
