"""Fan-out: concurrent signed searches to the routed silos under one deadline.

A silo that is slow, down, refuses or answers garbage is data, not an exception: every
silo asked gets a :class:`SiloOutcome`. Each silo has a circuit breaker; after
``breaker_failures`` consecutive failures it is skipped for ``breaker_open_s`` seconds,
then one trial request decides whether it closes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np

from aggregation import InvalidReply, Passage, ReplyLimits, validate_reply
from federation.client import EncodedSearch, SiloClient
from federation.config import RetrievalSettings
from federation.errors import FedragError, Unavailable, UpstreamError, UpstreamTimeout
from federation.membership import Membership
from federation.protocol import MAX_QUERY_TEXT_CHARS, Shard, SiloCard
from federation.signing import RequestSigner

logger = logging.getLogger(__name__)

OutcomeStatus = Literal["ok", "timeout", "unavailable", "refused", "invalid", "circuit_open"]


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a pause → closed on success."""

    def __init__(self, failures_to_open: int, open_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures_to_open
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """The breaker's state now."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self._open_s else "open"

    def allow(self) -> bool:
        """Whether a request may go to the silo now (one trial at a time when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def reason(self) -> str:
        """Why requests are being skipped."""
        if self._opened_at is None:
            return ""
        retry_in = max(0.0, self._open_s - (self._clock() - self._opened_at))
        return f"circuit open after {self._failures} failures (retry in {retry_in:.0f} s)"

    def record_success(self) -> None:
        """A request succeeded: close."""
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        """A request failed: count it; open (again) at the threshold or after a failed trial."""
        self._failures += 1
        self._trial_running = False
        if self._failures >= self._threshold:
            self._opened_at = self._clock()


@dataclass
class SiloOutcome:
    """What happened when one silo was asked."""

    silo: str
    status: OutcomeStatus
    detail: str = ""
    latency_ms: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    passages: list[Passage] = field(default_factory=list)


@dataclass
class _SiloState:
    client: SiloClient
    breaker: CircuitBreaker
    card: SiloCard | None = None
    card_fetched_at: float = 0.0
    card_error: str = ""
    card_failed_at: float | None = None
    last_latency_ms: float | None = None
    last_status: str = "never asked"


class SiloPool:
    """Signed clients, circuit breakers and cached cards for every silo of the federation."""

    def __init__(
        self,
        membership: Membership,
        signer: RequestSigner,
        settings: RetrievalSettings,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        verify: Any = True,
        limits: ReplyLimits | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits or ReplyLimits()
        self._fingerprint = membership.embedding.fingerprint
        transports = transports or {}
        self._silos: dict[str, _SiloState] = {
            silo.name: _SiloState(
                client=SiloClient(
                    silo.url,
                    silo.name,
                    signer,
                    timeout=settings.deadline_s,
                    transport=transports.get(silo.name),
                    verify=verify,
                ),
                breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_open_s),
            )
            for silo in membership.silos
        }

    @property
    def names(self) -> list[str]:
        """Silo names, in membership order."""
        return list(self._silos)

    def card(self, name: str) -> SiloCard | None:
        """The cached card of a silo."""
        return self._silos[name].card

    def breaker(self, name: str) -> CircuitBreaker:
        """The circuit breaker of a silo."""
        return self._silos[name].breaker

    async def refresh_cards(self, *, force: bool = False) -> None:
        """Fetch cards that are missing or older than ``card_refresh_s`` (concurrently, under the deadline)."""
        now = time.monotonic()
        backoff = self._settings.breaker_open_s
        due = [
            name
            for name, state in self._silos.items()
            if force
            or (state.card is None and (state.card_failed_at is None or now - state.card_failed_at > backoff))
            or (state.card is not None and now - state.card_fetched_at > self._settings.card_refresh_s)
        ]
        if due:
            await asyncio.gather(*(self._refresh_card(name) for name in due))

    async def _refresh_card(self, name: str) -> None:
        state = self._silos[name]
        try:
            card = await asyncio.wait_for(state.client.card(), timeout=self._settings.deadline_s)
        except (FedragError, TimeoutError) as exc:
            # A failed card is retried after breaker_open_s, not on every question's path.
            state.card_failed_at = time.monotonic()
            state.card_error = getattr(exc, "detail", "") or "card request timed out"
            logger.info("card of silo '%s' unavailable: %s", name, state.card_error)
            return
        if card.name != name or card.embedding.fingerprint != self._fingerprint:
            state.card_error = "card does not match the membership file (name or embedding fingerprint)"
            return
        state.card, state.card_fetched_at, state.card_error = card, time.monotonic(), ""
        state.card_failed_at = None

    async def search(
        self,
        silos: Sequence[str],
        vector: np.ndarray,
        k: int,
        *,
        request_id: str | None = None,
        text: str | None = None,
        shard: Shard | None = None,
        exclude_doc_ids: Sequence[str] | None = None,
    ) -> list[SiloOutcome]:
        """Ask ``silos`` concurrently; return one outcome per silo, all within the deadline.

        ``text`` (the question) goes only to silos whose card says they search with it; ``shard``
        limits every silo's search to that shard of its documents, ``exclude_doc_ids`` leaves
        those documents out.
        """
        if not silos:
            return []
        # One body per kind of silo (signed per silo): encoded, validated and hashed once per question.
        dense = EncodedSearch.build(
            vector, k, self._fingerprint, request_id=request_id, shard=shard, exclude_doc_ids=exclude_doc_ids
        )
        wants_text = {name for name in silos if self._searches_text(name)}
        with_text = dense
        if text and wants_text:  # joined conversation turns end with the question: keep the end
            clipped = text[-MAX_QUERY_TEXT_CHARS:]
            with_text = EncodedSearch.build(
                vector,
                k,
                self._fingerprint,
                request_id=request_id,
                text=clipped,
                shard=shard,
                exclude_doc_ids=exclude_doc_ids,
            )
        tasks = {
            name: asyncio.create_task(self._search_one(name, with_text if name in wants_text else dense))
            for name in silos
        }
        started = time.perf_counter()
        done, pending = await asyncio.wait(tasks.values(), timeout=self._settings.deadline_s)
        for task in pending:
            task.cancel()
        outcomes = []
        for name, task in tasks.items():
            if task in done:
                outcomes.append(task.result())
            else:
                self._silos[name].breaker.record_failure()
                latency = (time.perf_counter() - started) * 1000
                outcome = SiloOutcome(name, "timeout", f"no answer within {self._settings.deadline_s:.2f} s", latency)
                self._note(name, outcome)
                outcomes.append(outcome)
        return outcomes

    def _searches_text(self, name: str) -> bool:
        card = self._silos[name].card
        return self._settings.send_question_text and card is not None and card.search != "dense"

    async def _search_one(self, name: str, search: EncodedSearch) -> SiloOutcome:
        state = self._silos[name]
        if not state.breaker.allow():
            return SiloOutcome(name, "circuit_open", state.breaker.reason())
        started = time.perf_counter()
        try:
            exchange = await state.client.search_encoded(search)
            passages = validate_reply(name, exchange.response, k_requested=search.k, limits=self._limits)
        except asyncio.CancelledError:
            raise
        except InvalidReply as exc:
            outcome = SiloOutcome(name, "invalid", exc.detail)
        except UpstreamTimeout as exc:
            outcome = SiloOutcome(name, "timeout", exc.detail)
        except Unavailable as exc:
            outcome = SiloOutcome(name, "unavailable", exc.detail)
        except UpstreamError as exc:
            status: OutcomeStatus = "invalid"
            if exc.upstream_status is not None:
                status = "refused" if exc.upstream_status < 500 else "unavailable"
            outcome = SiloOutcome(name, status, f"{exc.code}: {exc.detail}")
        else:
            outcome = SiloOutcome(
                name,
                "ok",
                latency_ms=(time.perf_counter() - started) * 1000,
                bytes_sent=exchange.bytes_sent,
                bytes_received=exchange.bytes_received,
                passages=passages,
            )
            state.breaker.record_success()
            self._note(name, outcome)
            return outcome
        outcome.latency_ms = (time.perf_counter() - started) * 1000
        if outcome.status == "refused":
            state.breaker.record_success()  # the silo is up; it said no (auth, budget, validation)
        else:
            state.breaker.record_failure()
        self._note(name, outcome)
        return outcome

    def _note(self, name: str, outcome: SiloOutcome) -> None:
        state = self._silos[name]
        state.last_latency_ms = outcome.latency_ms
        state.last_status = outcome.status if not outcome.detail else f"{outcome.status}: {outcome.detail}"

    def status(self) -> list[dict[str, Any]]:
        """Health and routing view of every silo (for ``GET /v1/silos``)."""
        return [
            {
                "name": name,
                "breaker": state.breaker.state,
                "breaker_reason": state.breaker.reason(),
                "last_status": state.last_status,
                "last_latency_ms": state.last_latency_ms,
                "card": None
                if state.card is None
                else {
                    "description": state.card.description,
                    "chunk_count": state.card.chunk_count,
                    "centroids": state.card.centroids.rows,
                    "noisy_selection": state.card.policy.noisy_selection,
                    "search": state.card.search,
                },
                "card_error": state.card_error,
            }
            for name, state in self._silos.items()
        ]

    async def aclose(self) -> None:
        """Close every client."""
        await asyncio.gather(*(state.client.aclose() for state in self._silos.values()))
