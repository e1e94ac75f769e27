from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from federation.config import RetrievalSettings
from federation.identity import Identity
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry
from federation.signing import RequestSigner
from gateway.fanout import CircuitBreaker, SiloPool

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_and_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    breaker.record_failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow() and "retry in 30 s" in breaker.reason()
    clock.now += 31
    assert breaker.state == "half_open" and breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 31
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.reason() == ""


async def test_a_hanging_card_costs_the_deadline_once_not_on_every_question() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(503)

    gateway = Identity.generate()
    membership = Membership(
        name="f",
        embedding=EmbeddingSpec(model="m", dimension=4, fingerprint="sha256:0123456789"),
        silos=(SiloEntry(name="stuck", url="http://stuck", public_key=Identity.generate().public.b64),),
        gateways=(GatewayEntry(name="gw", public_key=gateway.public.b64),),
    )
    pool = SiloPool(
        membership,
        RequestSigner(gateway),
        RetrievalSettings(deadline_s=0.3),
        transports={"stuck": httpx.MockTransport(hang)},
    )
    try:
        started = time.perf_counter()
        await pool.refresh_cards()
        first = time.perf_counter() - started
        started = time.perf_counter()
        await pool.refresh_cards()
        second = time.perf_counter() - started
    finally:
        await pool.aclose()
    assert pool.card("stuck") is None and 0.25 < first < 2
    assert second < 0.05
