"""An async, signed client for a silo's API, used by the gateway, the CLI and tests.

Transport failures are translated where they enter: a timeout becomes
:class:`UpstreamTimeout`, an unreachable silo :class:`Unavailable`, an error reply or a
reply that is not valid protocol :class:`UpstreamError` carrying the silo's status and code.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from federation.errors import FedragError, Unavailable, UpstreamError, UpstreamTimeout
from federation.protocol import Matrix, Problem, SearchRequest, SearchResponse, SiloCard
from federation.signing import RequestSigner

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_ModelT = TypeVar("_ModelT", bound=BaseModel)


@dataclass(frozen=True)
class SearchExchange:
    """A silo's search reply with the size of what crossed the wire."""

    response: SearchResponse
    bytes_sent: int
    bytes_received: int


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
        if isinstance(verify, (str, Path)):
            verify = ssl.create_default_context(cafile=str(verify))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout), transport=transport, verify=verify
        )

    @property
    def audience(self) -> str:
        """The silo this client is bound to."""
        return self._audience

    async def search(
        self, vector: np.ndarray, k: int, fingerprint: str, *, request_id: str | None = None
    ) -> SearchResponse:
        """Search the silo with one query vector."""
        return (await self.search_exchange(vector, k, fingerprint, request_id=request_id)).response

    async def search_exchange(
        self, vector: np.ndarray, k: int, fingerprint: str, *, request_id: str | None = None
    ) -> SearchExchange:
        """Search, and report the bytes sent and received (for traces and cost accounting)."""
        request = SearchRequest(vector=Matrix.from_numpy(vector), k=k, fingerprint=fingerprint, request_id=request_id)
        body = request.model_dump_json().encode()
        response, received = await self._call_sized("POST", "/v1/search", body, SearchResponse)
        return SearchExchange(response=response, bytes_sent=len(body), bytes_received=received)

    async def card(self) -> SiloCard:
        """Fetch the silo's card."""
        return (await self._call_sized("GET", "/v1/card", b"", SiloCard))[0]

    async def _call_sized(self, method: str, path: str, body: bytes, model: type[_ModelT]) -> tuple[_ModelT, int]:
        headers = self._signer.sign(method, path, "", body, self._audience)
        if body:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http.stream(method, path, content=body, headers=headers) as response:
                raw = await self._read_limited(response)
                status = response.status_code
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"silo '{self._audience}' did not answer in time") from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"silo '{self._audience}' is unreachable: {type(exc).__name__}", code="silo_unreachable"
            ) from exc
        if status >= 400:
            raise self._error_from(status, raw)
        try:
            return model.model_validate_json(raw), len(raw)
        except ValidationError as exc:
            raise UpstreamError(
                f"silo '{self._audience}' sent an invalid reply: {exc.error_count()} schema errors",
                code="invalid_reply",
            ) from exc

    async def _read_limited(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise UpstreamError(
                    f"silo '{self._audience}' reply is over {self._max_bytes} bytes", code="reply_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _error_from(self, status: int, raw: bytes) -> FedragError:
        try:
            problem = Problem.model_validate(json.loads(raw))
            code, detail = problem.code, problem.detail
        except (ValueError, ValidationError):
            code, detail = "invalid_reply", f"HTTP {status} without a problem body"
        return UpstreamError(f"silo '{self._audience}' refused: {detail}", code=code, upstream_status=status)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> SiloClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SiloClient(audience={self._audience!r}, key_id={self._signer.key_id!r})"
