"""An async, signed client for a silo's API, used by the gateway, the CLI and tests.

Transport failures are translated where they enter: a timeout becomes
:class:`UpstreamTimeout`, an unreachable silo :class:`Unavailable`, an error reply or a
reply that is not valid protocol :class:`UpstreamError` carrying the silo's status and code.

Requests to a plain ``http(s)://host[:port][/prefix]`` URL go over kept-alive HTTP/1.1
connections of :class:`federation.transport.ConnectionPool`, which costs the gateway about a
quarter of httpx's CPU per request (that CPU is what a fan-out to many silos cannot
overlap). httpx carries the requests when a transport is given (``httpx.ASGITransport``
for an app in process, ``httpx.MockTransport`` in tests) and when the URL or the
environment needs what the pool does not do (credentials in the URL, a proxy).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from federation.errors import FedragError, Unavailable, UpstreamError, UpstreamTimeout
from federation.protocol import Matrix, Problem, SearchRequest, SearchResponse, Shard, SiloCard
from federation.signing import RequestSigner, content_digest
from federation.transport import ConnectionPool, ReplyTooLarge, TransportError

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
USER_AGENT = b"fedrag-serve"
_ModelT = TypeVar("_ModelT", bound=BaseModel)
_PLAIN_PATH_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$")


@dataclass(frozen=True)
class EncodedSearch:
    """A search request encoded once, to be signed and sent to many silos.

    The body is the same for every silo a question goes to; only the signature differs
    (audience, nonce). Encoding and hashing it once per question keeps that work off the
    per-silo path.
    """

    body: bytes
    digest: str
    k: int

    @classmethod
    def build(
        cls,
        vector: np.ndarray,
        k: int,
        fingerprint: str,
        *,
        request_id: str | None = None,
        text: str | None = None,
        shard: Shard | None = None,
        exclude_doc_ids: Sequence[str] | None = None,
    ) -> EncodedSearch:
        """Validate and encode one search request (raises ``pydantic.ValidationError`` when invalid)."""
        request = SearchRequest(
            vector=Matrix.from_numpy(vector),
            k=k,
            fingerprint=fingerprint,
            request_id=request_id,
            text=text,
            shard=shard,
            exclude_doc_ids=list(exclude_doc_ids) if exclude_doc_ids else None,
        )
        body = request.model_dump_json(exclude_none=True).encode()
        return cls(body=body, digest=content_digest(body), k=k)


@dataclass(frozen=True)
class SearchExchange:
    """A silo's search reply with the size of what crossed the wire."""

    response: SearchResponse
    bytes_sent: int
    bytes_received: int


def _pool_can_carry(url: SplitResult) -> bool:
    """Whether :class:`ConnectionPool` sends to ``url`` exactly as httpx would (else httpx is used)."""
    if url.scheme not in ("http", "https") or not url.hostname or url.username or url.password:
        return False
    if url.query or url.fragment or not _PLAIN_PATH_RE.match(url.path):
        return False
    proxies = urllib.request.getproxies()  # httpx honours HTTP(S)_PROXY / ALL_PROXY / NO_PROXY too
    proxy = proxies.get(url.scheme) or proxies.get("all")
    return not proxy or bool(urllib.request.proxy_bypass(url.hostname))


class SiloClient:
    """Talks to one silo as one gateway identity.

    Args:
        base_url: the silo's base URL (from the membership file).
        audience: the silo's name; requests are signed for it alone.
        signer: signs each request with the caller's key.
        timeout: seconds for connect and for the whole reply.
        transport: an httpx transport (``httpx.ASGITransport(app)`` to call an app in process).
        verify: TLS verification (``True``, a CA bundle path, or an ``ssl.SSLContext``).
        max_response_bytes: replies larger than this are refused as invalid.
    """

    def __init__(
        self,
        base_url: str,
        audience: str,
        signer: RequestSigner,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._audience = audience
        self._signer = signer
        self._max_bytes = max_response_bytes
        self._timeout = timeout
        if isinstance(verify, (str, Path)):
            verify = ssl.create_default_context(cafile=str(verify))
        base_url = base_url.rstrip("/")
        url = urlsplit(base_url)
        self._pool: ConnectionPool | None = None
        self._http: httpx.AsyncClient | None = None
        if transport is None and _pool_can_carry(url):
            context = httpx.create_ssl_context(verify=verify) if url.scheme == "https" else None
            self._pool = ConnectionPool(url, ssl_context=context)
            self._prefix = url.path
            self._fixed_headers = ((b"host", self._pool.host_header), (b"user-agent", USER_AGENT))
        else:
            self._http = httpx.AsyncClient(
                base_url=base_url, timeout=httpx.Timeout(timeout), transport=transport, verify=verify
            )

    @property
    def audience(self) -> str:
        """The silo this client is bound to."""
        return self._audience

    async def search(
        self,
        vector: np.ndarray,
        k: int,
        fingerprint: str,
        *,
        request_id: str | None = None,
        text: str | None = None,
        shard: Shard | None = None,
    ) -> SearchResponse:
        """Search the silo with one query vector (and the question's text, for a lexical or hybrid silo)."""
        exchange = await self.search_exchange(vector, k, fingerprint, request_id=request_id, text=text, shard=shard)
        return exchange.response

    async def search_exchange(
        self,
        vector: np.ndarray,
        k: int,
        fingerprint: str,
        *,
        request_id: str | None = None,
        text: str | None = None,
        shard: Shard | None = None,
    ) -> SearchExchange:
        """Search, and report the bytes sent and received (for traces and cost accounting)."""
        search = EncodedSearch.build(vector, k, fingerprint, request_id=request_id, text=text, shard=shard)
        return await self.search_encoded(search)

    async def search_encoded(self, search: EncodedSearch) -> SearchExchange:
        """Send a search encoded by :meth:`EncodedSearch.build`, signed for this silo."""
        response, received = await self._call_sized("POST", "/v1/search", search.body, SearchResponse, search.digest)
        return SearchExchange(response=response, bytes_sent=len(search.body), bytes_received=received)

    async def card(self) -> SiloCard:
        """Fetch the silo's card."""
        return (await self._call_sized("GET", "/v1/card", b"", SiloCard))[0]

    async def _call_sized(
        self, method: str, path: str, body: bytes, model: type[_ModelT], digest: str | None = None
    ) -> tuple[_ModelT, int]:
        headers = self._signer.sign_digest(method, path, "", digest or content_digest(body), self._audience)
        if self._pool is not None:
            status, raw = await self._send_pooled(self._pool, method, path, body, headers)
        else:
            status, raw = await self._send_httpx(method, path, body, headers)
        if status >= 400:
            raise self._error_from(status, raw)
        try:
            return model.model_validate_json(raw), len(raw)
        except ValidationError as exc:
            raise UpstreamError(
                f"silo '{self._audience}' sent an invalid reply: {exc.error_count()} schema errors",
                code="invalid_reply",
            ) from exc

    async def _send_pooled(
        self, pool: ConnectionPool, method: str, path: str, body: bytes, signature: dict[str, str]
    ) -> tuple[int, bytes]:
        headers = [*self._fixed_headers, *((name.encode(), value.encode()) for name, value in signature.items())]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        try:
            async with asyncio.timeout(self._timeout):
                return await pool.request(
                    method.encode(), (self._prefix + path).encode(), headers, body, max_body=self._max_bytes
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"silo '{self._audience}' did not answer in time") from exc
        except TransportError as exc:
            raise Unavailable(
                f"silo '{self._audience}' is unreachable: {type(exc).__name__}", code="silo_unreachable"
            ) from exc
        except ReplyTooLarge as exc:
            raise self._too_large() from exc

    async def _send_httpx(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        assert self._http is not None
        if body:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http.stream(method, path, content=body, headers=headers) as response:
                return response.status_code, await self._read_limited(response)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"silo '{self._audience}' did not answer in time") from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"silo '{self._audience}' is unreachable: {type(exc).__name__}", code="silo_unreachable"
            ) from exc

    async def _read_limited(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> UpstreamError:
        return UpstreamError(f"silo '{self._audience}' reply is over {self._max_bytes} bytes", code="reply_too_large")

    def _error_from(self, status: int, raw: bytes) -> FedragError:
        try:
            problem = Problem.model_validate(json.loads(raw))
            code, detail = problem.code, problem.detail
        except (ValueError, ValidationError):
            code, detail = "invalid_reply", f"HTTP {status} without a problem body"
        return UpstreamError(f"silo '{self._audience}' refused: {detail}", code=code, upstream_status=status)

    async def aclose(self) -> None:
        """Close the connections."""
        if self._pool is not None:
            await self._pool.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> SiloClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SiloClient(audience={self._audience!r}, key_id={self._signer.key_id!r})"
