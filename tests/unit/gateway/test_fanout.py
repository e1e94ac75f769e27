from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest

from federation.config import RetrievalSettings
from federation.identity import Identity
from federation.membership import EmbeddingSpec, GatewayEntry, Membership, SiloEntry
from federation.signing import RequestSigner, RequestVerifier
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


def _membership(gateway: Identity, names: list[str], url: str) -> Membership:
    return Membership(
        name="f",
        embedding=EmbeddingSpec(model="m", dimension=4, fingerprint="sha256:0123456789"),
        silos=tuple(SiloEntry(name=n, url=f"{url}/{n}", public_key=Identity.generate().public.b64) for n in names),
        gateways=(GatewayEntry(name="gw", public_key=gateway.public.b64),),
    )


def _reply(silo: str) -> dict[str, object]:
    hits = [{"chunk_id": f"{silo}:1", "doc_id": "d", "title": "T", "text": f"text of {silo}", "score": 0.5}]
    return {"silo": silo, "hits": hits, "k_effective": 1}


async def test_one_body_for_every_silo_each_signed_for_its_own_audience() -> None:
    gateway = Identity.generate()
    names = [f"s{i}" for i in range(4)]
    verifiers = {n: RequestVerifier({gateway.key_id: ("gw", gateway.public)}, n) for n in names}
    seen: dict[str, tuple[bytes, str]] = {}

    def transport(name: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            body = request.read()
            verifiers[name].verify(request.method, "/v1/search", "", request.headers, body)
            seen[name] = (body, request.headers["signature"])
            return httpx.Response(200, json=_reply(name))

        return httpx.MockTransport(handle)

    pool = SiloPool(
        _membership(gateway, names, "http://silo"),
        RequestSigner(gateway),
        RetrievalSettings(deadline_s=5),
        transports={n: transport(n) for n in names},
    )
    try:
        outcomes = await pool.search(names, np.full(4, 0.5, dtype=np.float32), 3, request_id="q-1")
    finally:
        await pool.aclose()
    assert [o.status for o in outcomes] == ["ok"] * 4 and [o.silo for o in outcomes] == names
    assert all(o.passages[0].text == f"text of {o.silo}" for o in outcomes)
    assert len({body for body, _ in seen.values()}) == 1 and b'"q-1"' in seen["s0"][0]
    assert len({signature for _, signature in seen.values()}) == 4


async def test_fan_out_over_loopback_is_concurrent_and_keeps_connections_alive() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = next(
                    int(x.split(":")[1]) for x in head.split("\r\n") if x.lower().startswith("content-length")
                )
                await reader.readexactly(length)
                silo = head.split(" ")[1].split("/")[1]
                await asyncio.sleep(0.2)
                body = json.dumps(_reply(silo)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    gateway = Identity.generate()
    names = [f"s{i}" for i in range(8)]
    pool = SiloPool(_membership(gateway, names, url), RequestSigner(gateway), RetrievalSettings(deadline_s=5))
    try:
        for _ in range(2):
            started = time.perf_counter()
            outcomes = await pool.search(names, np.full(4, 0.5, dtype=np.float32), 3)
            elapsed = time.perf_counter() - started
            assert [o.status for o in outcomes] == ["ok"] * 8
            assert elapsed < 0.2 * 3  # a serial fan-out would take 8 x 0.2 s
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
    assert connections == 8  # one per silo, reused by the second question
