"""A silo's release policy: what may leave the silo, and the record of what did.

:class:`ReleasePolicy` caps and filters search hits, optionally selects them with noise
under per-client epsilon budgets (:class:`EpsilonAccountant`; no document-level guarantee),
refuses searches that reach a client's crawl limits (:class:`CrawlGuard`), redacts PII
(:class:`Redactor`), and appends every decision to a hash-chained
:class:`AuditLog`.
"""

from __future__ import annotations

from silo_node.policy.accounting import EpsilonAccountant
from silo_node.policy.audit import AuditLog
from silo_node.policy.crawl import CrawlGuard, CrawlUsage, alerts_in_window
from silo_node.policy.dp import gumbel_top_k, laplace_scores
from silo_node.policy.redaction import BUILTIN_KINDS, Redactor
from silo_node.policy.release import Candidate, Release, ReleasedHit, ReleasePolicy

__all__ = [
    "BUILTIN_KINDS",
    "AuditLog",
    "Candidate",
    "CrawlGuard",
    "CrawlUsage",
    "EpsilonAccountant",
    "Redactor",
    "Release",
    "ReleasePolicy",
    "ReleasedHit",
    "alerts_in_window",
    "gumbel_top_k",
    "laplace_scores",
]
