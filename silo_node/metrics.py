"""Prometheus metrics of one silo node (a registry per app, so apps in one process don't clash)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class SiloMetrics:
    """The silo's counters and histograms."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "fedrag_silo_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "fedrag_silo_auth_failures_total",
            "Rejected signed requests by reason code",
            ["code"],
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "fedrag_silo_search_seconds",
            "Time to serve one search (verify, search, policy)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.released_chunks = Counter(
            "fedrag_silo_released_chunks_total", "Passages released to gateways", registry=self.registry
        )
        self.epsilon_spent = Counter(
            "fedrag_silo_epsilon_spent_total", "Differential-privacy epsilon spent, all clients", registry=self.registry
        )
        self.crawl_refusals = Counter(
            "fedrag_silo_crawl_refusals_total",
            "Searches refused by the crawl controls, by reason (crawl_limit, self_query, sweep)",
            ["reason"],
            registry=self.registry,
        )
        self.index_vectors = Gauge("fedrag_silo_index_vectors", "Vectors in the live index", registry=self.registry)
