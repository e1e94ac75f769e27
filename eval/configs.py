"""The configurations one evaluation run compares, with the same questions, LLM and seeds.

- ``no-rag``: the LLM alone (no retrieval).
- ``central``: one silo holding every document with an exact index: the upper bound.
- ``fed-all``: every silo of the natural partition is asked, results merged by score.
- ``fed-routed-<router>``: the ``centroid`` and ``learned`` routers choose the silos;
  ``fed-routed-learned-guard`` adds the learned router's centroid guard (the silo with the
  closest centroid is always asked).
- ``fed-noisy-eps<e>``: every silo asked, each releasing its top-k by the release policy's
  noisy selection at epsilon ``e`` per search (no document-level guarantee).
- ``fed-merge-<merger>``: every silo asked, merged by ``rrf`` or ``calibrated``.
- ``fed-lexical`` / ``fed-hybrid``: every silo asked, each ranking by BM25 alone or by BM25
  and embeddings fused (the silos' ``search.mode``; ``fed-all`` is dense).
- ``<federated config>@topical`` / ``@iid``: the same on the other partitions (the routing
  study: routers are for non-IID silos).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from eval.partition import PARTITIONS, PartitionName
from federation.protocol import SearchMode

__all__ = ["DEFAULT_LLM_CONFIGS", "EvalConfig", "select_configs", "standard_configs"]

ConfigKind = Literal["no-rag", "central", "federated"]
ROUTERS = ("centroid", "learned")
MERGERS = ("rrf", "calibrated")
NOISY_EPSILONS = (1.0, 8.0)
SEARCH_MODES: tuple[SearchMode, ...] = ("lexical", "hybrid")
DEFAULT_LLM_CONFIGS = "no-rag,central,fed-all,fed-routed-learned"


@dataclass(frozen=True)
class EvalConfig:
    """One row of the report.

    Attributes:
        name: the row's name (``--configs`` selects by it; globs allowed).
        kind: ``no-rag``, ``central`` or ``federated``.
        partition: which partition's silos a federated configuration asks.
        router: the gateway's routing strategy.
        merger: the gateway's merger.
        noisy_epsilon: the silos' noisy-selection epsilon per search (None: off).
        search: how each silo ranks (``dense``, ``lexical`` or ``hybrid``).
        router_guard: the learned router also asks the silo with the closest centroid.
    """

    name: str
    kind: ConfigKind
    partition: PartitionName = "natural"
    router: Literal["all", "centroid", "learned"] = "all"
    merger: Literal["score", "rrf", "calibrated"] = "score"
    noisy_epsilon: float | None = None
    search: SearchMode = "dense"
    router_guard: bool = False

    @property
    def retrieves(self) -> bool:
        """Whether the configuration retrieves passages at all."""
        return self.kind != "no-rag"

    def describe(self) -> str:
        """What this row's configuration was, in words (for the report)."""
        if self.kind == "no-rag":
            return "the LLM alone, no retrieval"
        if self.kind == "central":
            return "one exact index over every document (upper bound)"
        routed = "every silo asked" if self.router == "all" else f"silos chosen by the {self.router} router"
        if self.router_guard:
            routed += " with its centroid guard"
        text = f"{self.partition} partition, {routed}, {self.merger} merger"
        if self.noisy_epsilon is not None:
            text += f", noisy top-k at epsilon {self.noisy_epsilon:g} per search"
        if self.search != "dense":
            text += ", silos rank by BM25" if self.search == "lexical" else ", silos rank by BM25 and embeddings fused"
        return text


def _federated(partition: PartitionName) -> list[EvalConfig]:
    suffix = "" if partition == "natural" else f"@{partition}"
    configs = [EvalConfig(f"fed-all{suffix}", "federated", partition)]
    configs += [
        EvalConfig(f"fed-routed-{router}{suffix}", "federated", partition, router=router)  # type: ignore[arg-type]
        for router in ROUTERS
    ]
    if partition != "natural":
        return configs
    configs.append(EvalConfig("fed-routed-learned-guard", "federated", partition, router="learned", router_guard=True))
    configs += [
        EvalConfig(f"fed-noisy-eps{eps:g}", "federated", partition, noisy_epsilon=eps) for eps in NOISY_EPSILONS
    ]
    configs += [
        EvalConfig(f"fed-merge-{merger}", "federated", partition, merger=merger)  # type: ignore[arg-type]
        for merger in MERGERS
    ]
    configs += [EvalConfig(f"fed-{mode}", "federated", partition, search=mode) for mode in SEARCH_MODES]
    return configs


def standard_configs() -> list[EvalConfig]:
    """Every configuration, baselines first."""
    configs = [EvalConfig("no-rag", "no-rag"), EvalConfig("central", "central")]
    for partition in PARTITIONS:
        configs += _federated(partition)
    return configs


def select_configs(spec: str | Sequence[str]) -> list[EvalConfig]:
    """The configurations named by ``spec`` (comma list of names or globs; ``all``), in standard order.

    Raises:
        ValueError: a name or glob that matches nothing (the message lists the names).
    """
    patterns = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    configs = standard_configs()
    if not patterns or patterns == ["all"]:
        return configs
    names = [c.name for c in configs]
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise ValueError(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(names)} (or 'all')")
    return [c for c in configs if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
