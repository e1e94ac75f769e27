"""Dependencies shared by the silo's routes: the service, signed callers, operators."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from federation.errors import AuthenticationFailed, Forbidden, UnsupportedMediaType
from federation.http import started_state
from federation.signing import Caller, RequestVerifier
from silo_node.metrics import SiloMetrics
from silo_node.service import SiloService


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain ``def``
# dependency in a worker thread, a hop that costs more than the dependency itself.
async def get_service(request: Request) -> SiloService:
    """The app's open silo service."""
    service: SiloService = started_state(request, "service", "silo")
    return service


async def get_metrics(request: Request) -> SiloMetrics:
    """The app's metrics."""
    metrics: SiloMetrics = request.app.state.metrics
    return metrics


async def signed_caller(request: Request, metrics: SiloMetrics = Depends(get_metrics)) -> Caller:  # noqa: B008
    """Verify the request's signature (401 with a reason; 503 when a shared replay cache is down) before anything else.

    With a shared replay cache (Redis) the check waits on the network, so it runs in a worker thread.
    """
    verifier: RequestVerifier = request.app.state.verifier
    body = await request.body()
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType("request body must be application/json")
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"").decode("latin-1")
    signed = (request.method, raw_path.decode("latin-1"), query, request.headers, body)
    try:
        if verifier.remote:
            return await run_in_threadpool(verifier.verify, *signed)
        return verifier.verify(*signed)
    except AuthenticationFailed as exc:
        metrics.auth_failures.labels(code=exc.code).inc()
        raise


async def operator(request: Request) -> None:
    """Require ``Authorization: Bearer <operator token>`` (401 without, 403 when wrong)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "operator routes need 'Authorization: Bearer <operator token>'", code="operator_token_missing"
        )
    expected: str = request.app.state.operator_token_sha256
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    if not hmac.compare_digest(presented, expected):
        raise Forbidden("operator token is not valid for this silo", code="operator_token_invalid")
