"""A lean HTTP/1.1 client for the gateway's hot path: keep-alive connections on asyncio and h11.

The gateway asks many silos per question from one event loop, so the client's CPU per
request is what a concurrent fan-out cannot overlap. httpx spends about 1.3 ms of CPU
per request on this path (request and URL models, cookies, auth and redirect hooks, anyio
checkpoints); this pool sends pre-built requests over kept-alive connections and parses
replies with h11 (the HTTP/1.1 parser httpx itself uses) in about 0.3 ms.

What it does and does not do: HTTP/1.1 over TCP or TLS; one request per connection at a
time; idle connections are reused, and dropped once the server closed them, after
``keepalive_s`` idle, or when the server sent anything it was not asked for. No proxies,
redirects, cookies, compression or HTTP/2: :class:`federation.client.SiloClient` uses
httpx when a URL or environment needs any of them. Reply bodies are capped while they
arrive (a larger body aborts the connection). Deadlines are the caller's: cancelling a
request aborts its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import cast
from urllib.parse import SplitResult

import h11

MAX_HEAD_BYTES = 64 * 1024
"""Largest status line plus headers accepted from a server."""


class TransportError(Exception):
    """The exchange failed below HTTP: connect, TLS, reset, or a reply that is not HTTP/1.1."""


class ConnectError(TransportError):
    """No connection could be opened (refused, unreachable, DNS, TLS handshake)."""


class ReadError(TransportError):
    """The connection failed or closed before the reply was complete."""


class RemoteProtocolError(TransportError):
    """The server's reply is not valid HTTP/1.1."""


class ReplyTooLarge(Exception):
    """The reply body is larger than the caller's limit (announced or received)."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; parses the reply as it arrives, in the event loop's callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._limit = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self.status = 0
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's (which uvicorn picks when installed) is not an asyncio.Transport subclass.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # bytes nobody asked for: never read them as the next reply
            return
        self._h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if self._waiter is not None and not self._waiter.done():
            self._h11.receive_data(b"")
            self._pump()
        self.closed = True
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ReadError(f"connection lost: {type(exc).__name__}" if exc else "connection closed by the server"))

    # -- the exchange

    def _pump(self) -> None:
        """Take every complete event out of h11; finish the waiter at the end of the reply."""
        connection = self._h11
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Data):
                    self._size += len(event.data)
                    if self._size > self._limit:
                        self._fail(ReplyTooLarge(f"reply is over {self._limit} bytes"))
                        return
                    self._chunks.append(event.data)
                elif isinstance(event, h11.Response):
                    self.status = event.status_code
                    for name, value in event.headers:
                        if name == b"content-length" and int(value) > self._limit:
                            self._fail(ReplyTooLarge(f"reply announces {int(value)} bytes, over {self._limit}"))
                            return
                elif isinstance(event, h11.EndOfMessage):
                    if self._waiter is not None and not self._waiter.done():
                        self._waiter.set_result(None)
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self._fail(ReadError("connection closed before the reply was complete"))
                    return
                # h11.InformationalResponse (1xx): wait for the final reply
        except (h11.RemoteProtocolError, ValueError) as exc:  # ValueError: a Content-Length too long for int()
            self._fail(RemoteProtocolError(f"invalid HTTP/1.1 reply: {exc}"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.abort()

    async def exchange(self, request: bytes, limit: int) -> tuple[int, bytes]:
        """Send one serialised request; return the status and the whole body."""
        assert self._transport is not None
        if self.closed:  # the server closed it between connect and now
            raise ReadError("connection closed by the server")
        self._limit, self._chunks, self._size, self.status = limit, [], 0, 0
        self._waiter = self._loop.create_future()
        self._transport.write(request)
        await self._waiter
        return self.status, b"".join(self._chunks)

    def serialise(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The request's bytes (h11 checks the headers and tracks the connection's state)."""
        connection = self._h11
        out = connection.send(h11.Request(method=method, target=target, headers=headers))
        assert out is not None
        if body:
            data = connection.send(h11.Data(data=body))
            assert data is not None
            out += data
        end = connection.send(h11.EndOfMessage())
        assert end is not None
        return out + end

    def finish(self) -> bool:
        """After a complete reply: ready the connection for the next request; False when it cannot be reused."""
        self._waiter, self._chunks = None, []
        connection = self._h11
        if self.closed or connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            return False
        if connection.trailing_data[0]:
            return False  # the server sent more than the reply
        connection.start_next_cycle()
        self.idle_since = time.monotonic()
        return True

    def abort(self) -> None:
        """Drop the connection at once."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class ConnectionPool:
    """Kept-alive HTTP/1.1 connections to one origin (scheme, host, port).

    Args:
        url: the origin's URL, already split (``http`` or ``https``; path and query are ignored).
        ssl_context: TLS settings, required for ``https``.
        max_connections: connections open at once; further requests wait for one.
        max_idle: idle connections kept for reuse.
        keepalive_s: idle connections older than this are closed rather than reused (below
            common server keep-alive timeouts, uvicorn's 5 s among them).
    """

    def __init__(
        self,
        url: SplitResult,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_idle: int = 20,
        keepalive_s: float = 4.0,
    ) -> None:
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url.geturl()!r}")
        if url.scheme == "https" and ssl_context is None:
            raise ValueError("an https URL needs an SSL context")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl_context if url.scheme == "https" else None
        self.host_header = url.netloc.rpartition("@")[2].encode("ascii")
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._keepalive_s = keepalive_s
        self._closed = False

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, *, max_body: int
    ) -> tuple[int, bytes]:
        """Send one request and return ``(status, body)``.

        Raises:
            TransportError: a subclass saying what failed below HTTP.
            ReplyTooLarge: the body is over ``max_body`` bytes.
        """
        async with self._slots:
            connection = await self._checkout()
            reusable = False
            try:
                request = connection.serialise(method, target, headers, body)
                status, data = await connection.exchange(request, max_body)
                reusable = connection.finish()
                return status, data
            except h11.LocalProtocolError as exc:
                raise ValueError(f"request cannot be sent as HTTP/1.1: {exc}") from exc
            finally:
                if reusable and not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(connection)
                else:
                    connection.abort()

    async def _checkout(self) -> _Connection:
        """The most recently used live idle connection, or a new one."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.abort()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(loop),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
