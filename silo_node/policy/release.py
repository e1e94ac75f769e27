"""The release policy: the only way a silo's passages leave it.

For each search the policy caps ``k`` at ``max_k``, drops passages below ``min_score``,
optionally selects and scores them with noise (noisy selection, charging the client's
epsilon budget first; it gives no document-level guarantee, see
:class:`~federation.config.NoisySelectionSettings`), refuses searches that reach the client's
crawl limits (:class:`~silo_node.policy.crawl.CrawlGuard`), withholds or redacts text, and
writes one audit record whether anything was released or the request was refused.

Redaction is the costly step (regular expressions over every released string), and a
chunk's text, title and metadata never change under its id (a re-ingested document gets new
chunk ids), so each chunk's redacted form is kept in a bounded cache. The silo calls
:meth:`ReleasePolicy.forget` with the ids of deleted chunks, so a deleted document's text does
not stay in memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from federation.config import ReleasePolicySettings
from federation.errors import BudgetExhausted, ConfigError, CrawlLimited, ValidationFailed
from silo_node.policy.accounting import EpsilonAccountant
from silo_node.policy.audit import AuditLog
from silo_node.policy.crawl import ALERT_EVENT, CrawlGuard
from silo_node.policy.dp import SCORE_SENSITIVITY, clip_score, gumbel_top_k, laplace_scores
from silo_node.policy.redaction import Redactor

__all__ = ["Candidate", "Release", "ReleasePolicy", "ReleasedHit"]

logger = logging.getLogger(__name__)

REDACTED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Candidate:
    """One exact search hit, before the policy."""

    chunk_id: int
    doc_id: str
    title: str
    text: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ReleasedHit:
    """One passage as it may leave the silo (text ``None`` when text is withheld)."""

    chunk_id: int
    doc_id: str
    title: str
    text: str | None
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Release:
    """What one search releases, and what it cost."""

    hits: list[ReleasedHit]
    epsilon_spent: float
    redactions: int
    k_effective: int


class ReleasePolicy:
    """Applies a silo's :class:`~federation.config.ReleasePolicySettings` to search hits.

    Args:
        settings: The operator's release policy.
        audit: Where every request is recorded; ``None`` records nothing.
        accountant: Per-client epsilon budgets. With noisy selection enabled and none given,
            one is built from ``settings.noisy_selection`` and restored from ``audit``'s records
            within the window, so a restart does not reset anyone's budget.
        crawl: Per-client crawl limits. With ``settings.crawl`` enabled and none given, one is
            built and restored from ``audit``'s searches within its window.
        rng: Noise source for the noisy selection; defaults to a generator seeded from the OS.
        clock: Wall-clock source, shared with the accountant and crawl guard built here.

    Raises:
        ConfigError: A redaction pattern is invalid, or one query's epsilon exceeds the
            budget per window (no query could ever be answered).
        ServerError: The audit log's hash chain is broken (code ``audit_corrupt``);
            budgets cannot be restored from it.
    """

    def __init__(
        self,
        settings: ReleasePolicySettings,
        *,
        audit: AuditLog | None,
        accountant: EpsilonAccountant | None = None,
        crawl: CrawlGuard | None = None,
        rng: np.random.Generator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._audit = audit
        self._clock = clock
        self._rng = rng if rng is not None else np.random.default_rng()
        self._rng_lock = threading.Lock()
        self._redactor = Redactor(settings.redaction_patterns)
        self._redacted: OrderedDict[int, tuple[str, str | None, dict[str, Any], int]] = OrderedDict()
        self._redacted_lock = threading.Lock()
        if settings.redaction_patterns and not settings.redact_pii:
            logger.warning("redaction_patterns are set but redact_pii is false: they are not applied")
        noisy = settings.noisy_selection
        built_accountant: EpsilonAccountant | None = None
        if noisy.enabled:
            if noisy.epsilon_per_query > noisy.budget_per_window:
                raise ConfigError(
                    f"policy.noisy_selection.epsilon_per_query ({noisy.epsilon_per_query:g}) exceeds "
                    f"policy.noisy_selection.budget_per_window ({noisy.budget_per_window:g})"
                )
            if accountant is None:
                accountant = built_accountant = EpsilonAccountant(noisy.budget_per_window, noisy.window_s, clock=clock)
        built_crawl: CrawlGuard | None = None
        if settings.crawl.enabled and crawl is None:
            crawl = built_crawl = CrawlGuard(settings.crawl, min_cap=settings.max_k, clock=clock)
        if audit is not None and (built_accountant is not None or built_crawl is not None):
            self._restore(audit, built_accountant, built_crawl)
        elif built_accountant is not None or built_crawl is not None:
            logger.warning("budgets and crawl limits are enforced without an audit log: they reset on restart")
        self._accountant = accountant
        self._crawl = crawl

    @property
    def settings(self) -> ReleasePolicySettings:
        """The policy's settings."""
        return self._settings

    @property
    def accountant(self) -> EpsilonAccountant | None:
        """The epsilon accountant (``None`` without noisy selection and none given)."""
        return self._accountant

    @property
    def crawl(self) -> CrawlGuard | None:
        """The crawl guard (``None`` without crawl limits and none given)."""
        return self._crawl

    def candidates_needed(self, k: int) -> int:
        """How many exact candidates the search must fetch for a request of ``k``.

        Raises:
            ValidationFailed: ``k`` is smaller than 1.
        """
        k_eff = self._k_effective(k)
        noisy = self._settings.noisy_selection
        return max(noisy.max_candidates, k_eff) if noisy.enabled else k_eff

    def check_budget(self, client_id: str, *, requested_k: int = 0, request_id: str = "") -> None:
        """Refuse early, before any search, when ``client_id`` cannot afford a query.

        The refusal is audited like any other request.

        Raises:
            BudgetExhausted: The client's budget for the window is spent.
        """
        noisy = self._settings.noisy_selection
        if noisy.enabled and self._accountant is not None:
            try:
                self._accountant.check(client_id, noisy.epsilon_per_query)
            except BudgetExhausted:
                k_eff = min(max(requested_k, 0), self._settings.max_k)
                self._record(client_id, request_id, requested_k, k_eff, 0.0, [], 0, outcome="budget_exhausted")
                raise

    def apply(
        self,
        client_id: str,
        requested_k: int,
        candidates: Sequence[Candidate],
        *,
        request_id: str,
        corpus_size: int | None = None,
    ) -> Release:
        """Decide what of ``candidates`` leaves the silo, and audit the decision.

        Args:
            client_id: Key id of the caller (the gateway).
            requested_k: Passages the caller asked for.
            candidates: Exact search hits, as many as :meth:`candidates_needed` said.
            request_id: The caller's request id, for the audit log.
            corpus_size: Chunks in the silo, for the crawl guard's share cap.

        Returns:
            The released hits, best released score first.

        Raises:
            ValidationFailed: ``requested_k`` is smaller than 1.
            BudgetExhausted: Noisy selection is on and the client's budget is spent (the
                refusal is audited; nothing is selected).
            CrawlLimited: The release would break one of the client's crawl limits: nothing is
                released, one ``crawl_alert`` record is audited (an epsilon charged for the
                selection stays charged).
            ServerError: The audit record could not be written; nothing is released.
        """
        k_eff = self._k_effective(requested_k)
        finite = [c.score for c in candidates if math.isfinite(c.score)]
        best_score = max(finite) if finite else None
        eligible = [c for c in candidates if math.isfinite(c.score) and c.score >= self._settings.min_score]
        eligible.sort(key=lambda c: (-c.score, c.chunk_id))
        noisy = self._settings.noisy_selection
        if noisy.enabled and self._accountant is not None:
            try:
                self._accountant.charge(client_id, noisy.epsilon_per_query)
            except BudgetExhausted:
                self._record(client_id, request_id, requested_k, k_eff, 0.0, [], 0, outcome="budget_exhausted")
                raise
            chosen, scores = self._select_noisy(self._noisy_pool(eligible, len(candidates)), k_eff)
            epsilon_spent = noisy.epsilon_per_query
        else:
            chosen = eligible[:k_eff]
            scores = [c.score for c in chosen]
            epsilon_spent = 0.0
        if self._crawl is not None:
            best = best_score if best_score is not None else -1.0
            try:
                self._crawl.admit(client_id, best, [c.chunk_id for c in chosen], corpus_size=corpus_size)
            except CrawlLimited as refusal:
                self._record_alert(
                    refusal, client_id, request_id, requested_k, k_eff, epsilon_spent, best_score, corpus_size
                )
                raise
        hits, redactions = self._render(chosen, scores)
        self._record(
            client_id,
            request_id,
            requested_k,
            k_eff,
            epsilon_spent,
            [hit.chunk_id for hit in hits],
            redactions,
            outcome="released",
            best_score=best_score,
        )
        logger.debug(
            "release",
            extra={"client_id": client_id, "request_id": request_id, "k_eff": k_eff, "released": len(hits)},
        )
        return Release(hits=hits, epsilon_spent=epsilon_spent, redactions=redactions, k_effective=k_eff)

    def _record_alert(
        self,
        refusal: CrawlLimited,
        client_id: str,
        request_id: str,
        requested_k: int,
        k_eff: int,
        epsilon_spent: float,
        best_score: float | None,
        corpus_size: int | None,
    ) -> None:
        """Log and audit one crawl alert: the reason and the key's counts, never chunk ids or text."""
        assert self._crawl is not None  # only called after the guard refused
        usage = self._crawl.usage(client_id)
        logger.warning(
            "crawl alert",
            extra={"client_id": client_id, "reason": refusal.code, "distinct_released": usage.distinct_released},
        )
        self._record(
            client_id,
            request_id,
            requested_k,
            k_eff,
            epsilon_spent,
            [],
            0,
            outcome=refusal.code,
            best_score=best_score,
            event=ALERT_EVENT,
            reason=refusal.code,
            distinct_released=usage.distinct_released,
            distinct_cap=self._crawl.cap(corpus_size),
            self_queries=usage.self_queries,
            window_s=self._crawl.settings.window_s,
        )

    def _k_effective(self, requested_k: int) -> int:
        if requested_k < 1:
            raise ValidationFailed(f"k must be at least 1, got {requested_k}")
        return min(requested_k, self._settings.max_k)

    def _noisy_pool(self, eligible: list[Candidate], fetched: int) -> list[Candidate]:
        """The candidates whose score, clipped to [0, 1], reaches the public relevance threshold.

        Whether a passage is a candidate then depends on it and the query alone, not on the
        other passages' ranks, except when more than ``max_candidates`` reach the threshold
        and the index's cut by rank decides (logged).
        """
        noisy = self._settings.noisy_selection
        pool = [c for c in eligible if clip_score(c.score) >= noisy.relevance_threshold]
        if fetched >= noisy.max_candidates and len(pool) >= noisy.max_candidates:
            logger.warning(
                "more than policy.noisy_selection.max_candidates passages reach the relevance threshold: "
                "the candidates are cut by rank",
                extra={"max_candidates": noisy.max_candidates, "threshold": noisy.relevance_threshold},
            )
        return pool

    def _select_noisy(self, pool: list[Candidate], k_eff: int) -> tuple[list[Candidate], list[float]]:
        """Noisy top-``k_eff`` of ``pool`` on scores clipped to [0, 1]: half the epsilon selects, half releases scores.

        Each of the ``k_eff`` picks spends ``epsilon / 2 / k_eff`` and so does each released
        score, also when the pool holds fewer than ``k_eff`` passages. Clipped scores move by at
        most 1, the sensitivity both mechanisms assume.
        """
        picks = min(k_eff, len(pool))
        if picks == 0:
            return [], []
        per_pick = self._settings.noisy_selection.epsilon_per_query / 2.0 / k_eff
        true_scores = np.array([clip_score(c.score) for c in pool], dtype=np.float64)
        with self._rng_lock:
            index = gumbel_top_k(true_scores, picks, per_pick * picks, SCORE_SENSITIVITY, self._rng)
            released = laplace_scores(true_scores[index], per_pick, SCORE_SENSITIVITY, self._rng, low=0.0, high=1.0)
        order = np.argsort(-released, kind="stable")
        return [pool[int(index[i])] for i in order], [float(released[i]) for i in order]

    def _render(self, chosen: Sequence[Candidate], scores: Sequence[float]) -> tuple[list[ReleasedHit], int]:
        """Withhold or redact each chosen passage's text, title and metadata strings."""
        hits: list[ReleasedHit] = []
        total = 0
        for candidate, score in zip(chosen, scores, strict=True):
            title, text, metadata, count = self._released_fields(candidate)
            total += count
            hits.append(
                ReleasedHit(
                    chunk_id=candidate.chunk_id,
                    doc_id=candidate.doc_id,
                    title=title,
                    text=text,
                    score=float(score),
                    metadata=metadata,
                )
            )
        return hits, total

    def forget(self, chunk_ids: Sequence[int]) -> None:
        """Drop the cached redacted forms of these chunks (deleted or replaced: never asked for again)."""
        with self._redacted_lock:
            for chunk_id in chunk_ids:
                self._redacted.pop(int(chunk_id), None)

    def cached_chunk_ids(self) -> frozenset[int]:
        """Ids of the chunks whose redacted form is held in memory."""
        with self._redacted_lock:
            return frozenset(self._redacted)

    def _released_fields(self, candidate: Candidate) -> tuple[str, str | None, dict[str, Any], int]:
        """(title, text or None, metadata, redactions) of a chunk as it may leave, cached by chunk id."""
        settings = self._settings
        if not settings.redact_pii:
            text = candidate.text if settings.release_text else None
            return candidate.title, text, dict(candidate.metadata), 0
        with self._redacted_lock:
            cached = self._redacted.get(candidate.chunk_id)
            if cached is not None:
                self._redacted.move_to_end(candidate.chunk_id)
        if cached is None:
            title, in_title = self._redactor.redact(candidate.title)
            text, in_text = self._redactor.redact(candidate.text) if settings.release_text else (None, 0)
            metadata, in_metadata = self._redactor.redact_strings(dict(candidate.metadata))
            cached = (title, text, metadata, in_title + in_text + in_metadata)
            with self._redacted_lock:
                self._redacted[candidate.chunk_id] = cached
                while len(self._redacted) > REDACTED_CACHE_SIZE:
                    self._redacted.popitem(last=False)
        title, text, metadata, count = cached
        return title, text, dict(metadata), count

    def _record(
        self,
        client_id: str,
        request_id: str,
        requested_k: int,
        k_eff: int,
        epsilon_spent: float,
        released: list[int],
        redactions: int,
        *,
        outcome: str,
        best_score: float | None = None,
        event: str = "search",
        **extra: Any,
    ) -> None:
        """Audit one decision; ``extra`` fields (counts, never chunk text) follow the common ones."""
        if self._audit is None:
            return
        self._audit.append(
            {
                "event": event,
                "outcome": outcome,
                "client_id": client_id,
                "request_id": request_id,
                "requested_k": requested_k,
                "k_eff": k_eff,
                "epsilon_spent": epsilon_spent,
                "released": released,
                "redactions": redactions,
                "best_score": _rounded(best_score),
                **extra,
            }
        )

    def _restore(self, audit: AuditLog, accountant: EpsilonAccountant | None, crawl: CrawlGuard | None) -> None:
        """Replay what ``audit`` recorded within the windows: epsilon charges, and released chunks."""
        audit.verify()
        now = self._clock()
        charges = searches = 0
        for record in audit.records():
            client_id = record.get("client_id")
            at = record.get("time")
            if not isinstance(client_id, str) or not _is_number(at):
                continue
            epsilon = record.get("epsilon_spent")
            if accountant is not None and _is_number(epsilon) and epsilon > 0 and at > now - accountant.window_s:
                accountant.restore(client_id, float(at), float(epsilon))
                charges += 1
            released = record.get("released")
            if (
                crawl is not None
                and record.get("outcome") == "released"
                and isinstance(released, list)
                and at > now - crawl.settings.window_s
            ):
                best = record.get("best_score")
                ids = [i for i in released if isinstance(i, int) and not isinstance(i, bool)]
                crawl.replay(client_id, float(at), float(best) if _is_number(best) else None, ids)
                searches += 1
        logger.info(
            "privacy budgets and crawl state restored from the audit log",
            extra={"charges": charges, "searches": searches},
        )


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _rounded(score: float | None) -> float | None:
    return None if score is None or not math.isfinite(score) else round(score, 6)
