"""SiloClient over its kept-alive HTTP/1.1 pool, against scripted servers in this process (loopback only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from federation.client import SiloClient
from federation.errors import Unavailable, UpstreamError, UpstreamTimeout
from federation.identity import Identity
from federation.services import free_port
from federation.signing import RequestSigner, RequestVerifier

pytestmark = pytest.mark.unit

FINGERPRINT = "sha256:0123456789"
VECTOR = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    url: str
    connections: int = 0
    requests: list[Received] = field(default_factory=list)


def reply_body(silo: str = "alpha", hits: int = 1) -> bytes:
    payload = {
        "silo": silo,
        "hits": [
            {"chunk_id": f"c{i}", "doc_id": f"d{i}", "title": "T", "text": "text", "score": 0.5} for i in range(hits)
        ],
        "k_effective": hits,
    }
    return json.dumps(payload).encode()


def plain(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


async def ok(request: Received, writer: asyncio.StreamWriter) -> None:
    writer.write(plain(reply_body()))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Respond], Awaitable[Server]]]:
    """Start a scripted HTTP/1.1 server on a free loopback port: ``server = await serve(respond)``."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(respond: Respond) -> Server:
        state = Server(url="")

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            writers.append(writer)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ")
                    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                    received = Received(method, target, headers, body)
                    state.requests.append(received)
                    await respond(received, writer)
                    await writer.drain()
                    if writer.is_closing():
                        return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return state

    yield start
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


def client(url: str, signer: RequestSigner | None = None, **kwargs: object) -> SiloClient:
    return SiloClient(url, "alpha", signer or RequestSigner(Identity.generate()), **kwargs)  # type: ignore[arg-type]


async def test_requests_are_signed_for_the_silo_and_reuse_one_connection(serve) -> None:
    gateway = Identity.generate()
    verifier = RequestVerifier({gateway.key_id: ("gw", gateway.public)}, "alpha")
    callers = []

    async def verify_then_answer(request: Received, writer: asyncio.StreamWriter) -> None:
        callers.append(verifier.verify(request.method, request.target, "", request.headers, request.body).name)
        writer.write(plain(reply_body()))

    server = await serve(verify_then_answer)
    async with client(server.url, RequestSigner(gateway)) as c:
        for _ in range(3):
            exchange = await c.search_exchange(VECTOR, 3, FINGERPRINT)
            assert exchange.response.silo == "alpha" and len(exchange.response.hits) == 1
            assert exchange.bytes_sent == len(server.requests[-1].body) and exchange.bytes_received > 0
    assert callers == ["gw", "gw", "gw"]  # digest, audience, fresh nonce each time: all verified
    assert server.connections == 1
    last = server.requests[-1]
    assert last.headers["content-type"] == "application/json"
    assert last.headers["host"] == server.url.removeprefix("http://")


async def test_a_path_prefix_in_the_silo_url_is_kept(serve) -> None:
    server = await serve(ok)
    async with client(server.url + "/tenant/a/") as c:
        await c.search(VECTOR, 1, FINGERPRINT)
    assert server.requests[0].target == "/tenant/a/v1/search"


async def test_chunked_replies_are_read_whole(serve) -> None:
    async def chunked(request: Received, writer: asyncio.StreamWriter) -> None:
        body = reply_body(hits=3)
        parts = [body[:10], body[10:50], body[50:]]
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    server = await serve(chunked)
    async with client(server.url) as c:
        assert len((await c.search(VECTOR, 3, FINGERPRINT)).hits) == 3
        assert len((await c.search(VECTOR, 3, FINGERPRINT)).hits) == 3
    assert server.connections == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_reply_over_the_size_limit_is_refused_and_its_connection_dropped(serve, framing: str) -> None:
    async def huge(request: Received, writer: asyncio.StreamWriter) -> None:
        body = b"x" * 5000
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        else:
            writer.write(plain(body))

    server = await serve(huge)
    async with client(server.url, max_response_bytes=4096) as c:
        for _ in range(2):
            with pytest.raises(UpstreamError) as info:
                await c.search(VECTOR, 1, FINGERPRINT)
            assert info.value.code == "reply_too_large"
    assert server.connections == 2


async def test_error_replies_carry_the_silos_status_and_code(serve) -> None:
    async def refuse(request: Received, writer: asyncio.StreamWriter) -> None:
        problem = {"title": "Unauthorized", "status": 401, "code": "nonce_replayed", "detail": "nonce already used"}
        writer.write(plain(json.dumps(problem).encode(), "401 Unauthorized"))

    server = await serve(refuse)
    async with client(server.url) as c:
        with pytest.raises(UpstreamError) as info:
            await c.search(VECTOR, 1, FINGERPRINT)
    assert info.value.upstream_status == 401 and info.value.code == "nonce_replayed"


@pytest.mark.parametrize(
    "reply",
    [
        b"this is not HTTP at all\r\n\r\n",
        b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"silo": ',  # then the server closes
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: " + b"9" * 5000 + b"\r\n\r\n",
    ],
    ids=["not-http", "cut-short", "two-lengths", "absurd-length"],
)
async def test_broken_replies_make_the_silo_unavailable(serve, reply: bytes) -> None:
    async def broken(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await serve(broken)
    async with client(server.url) as c:
        with pytest.raises((Unavailable, UpstreamError)) as info:
            await c.search(VECTOR, 1, FINGERPRINT)
    assert info.value.code in ("silo_unreachable", "reply_too_large")


async def test_refused_connections_and_slow_silos(serve) -> None:
    async with client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(Unavailable) as info:
            await c.search(VECTOR, 1, FINGERPRINT)
    assert info.value.code == "silo_unreachable" and "ConnectError" in info.value.detail

    async def slow(request: Received, writer: asyncio.StreamWriter) -> None:
        if len(slow_calls) == 0:
            slow_calls.append(1)
            await asyncio.sleep(2)
        writer.write(plain(reply_body()))

    slow_calls: list[int] = []
    server = await serve(slow)
    async with client(server.url, timeout=0.2) as c:
        started = time.perf_counter()
        with pytest.raises(UpstreamTimeout):
            await c.search(VECTOR, 1, FINGERPRINT)
        assert time.perf_counter() - started < 1.0
        # the timed-out connection is dropped, never reused for the next request
        assert (await c.search(VECTOR, 1, FINGERPRINT)).silo == "alpha"
    assert server.connections == 2


async def test_connection_close_and_idle_closes_by_the_server_open_a_new_connection(serve) -> None:
    async def close_after(request: Received, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 1:
            writer.write(plain(reply_body(), extra=b"connection: close\r\n"))
            writer.close()
        elif len(server.requests) == 2:
            writer.write(plain(reply_body()))
            await writer.drain()
            writer.close()  # an idle keep-alive connection the server times out
        else:
            writer.write(plain(reply_body()))

    server = await serve(close_after)
    async with client(server.url) as c:
        for _ in range(3):
            assert (await c.search(VECTOR, 1, FINGERPRINT)).silo == "alpha"
            await asyncio.sleep(0.05)
    assert server.connections == 3


async def test_bytes_sent_while_idle_are_never_read_as_the_next_reply(serve) -> None:
    async def extra(request: Received, writer: asyncio.StreamWriter) -> None:
        other = reply_body(silo="mallory")
        writer.write(plain(reply_body()) + plain(other))  # a second, unrequested reply

    server = await serve(extra)
    async with client(server.url) as c:
        assert (await c.search(VECTOR, 1, FINGERPRINT)).silo == "alpha"
        await asyncio.sleep(0.05)
        assert (await c.search(VECTOR, 1, FINGERPRINT)).silo == "alpha"
    assert server.connections == 2


async def test_concurrent_requests_to_one_silo_each_get_their_own_reply(serve) -> None:
    async def answer_with_k(request: Received, writer: asyncio.StreamWriter) -> None:
        k = json.loads(request.body)["k"]
        await asyncio.sleep(0.05 * (5 - k))
        writer.write(plain(reply_body(hits=k)))

    server = await serve(answer_with_k)
    async with client(server.url) as c:
        replies = await asyncio.gather(*(c.search(VECTOR, k, FINGERPRINT) for k in range(1, 5)))
        assert [len(r.hits) for r in replies] == [1, 2, 3, 4]
        await c.search(VECTOR, 1, FINGERPRINT)
    assert server.connections == 4  # one per request in flight, then reused


async def test_a_proxy_in_the_environment_is_still_honoured(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = await serve(ok)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with client("http://silo.invalid:8080") as c:
        assert (await c.search(VECTOR, 1, FINGERPRINT)).silo == "alpha"
    assert proxy.requests[0].target == "http://silo.invalid:8080/v1/search"  # sent to the proxy, absolute-form
