"""HTTP plumbing every fedrag app shares: one error shape, body limits, serving.

Imported only by the FastAPI apps (silo node, gateway), so ``federation``'s core stays
free of web-framework dependencies.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.errors import BudgetExhausted, FedragError, PayloadTooLarge, Unavailable
from federation.protocol import Problem

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem-details response."""
    body = Problem(title=title, status=status, code=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def error_response(exc: FedragError) -> JSONResponse:
    """Render one of our errors; server errors hide their internals."""
    headers = None
    if isinstance(exc, BudgetExhausted) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))}
    return problem_response(exc.status, exc.code, exc.title, exc.detail, headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def started_state(request: Request, name: str, what: str) -> Any:
    """The app-state object ``name`` that the app's lifespan opens (503 ``not_ready`` until it has)."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise Unavailable(f"{what} is starting", code="not_ready")
    return value


def register_error_handlers(app: FastAPI) -> None:
    """Map every error an app can raise to the one problem shape (never a bare 500 with a trace)."""

    async def on_fedrag(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FedragError)
        if exc.status >= 500:
            logger.error("request failed: %s", exc.detail, extra={"code": exc.code, "path": request.url.path})
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, "validation_failed", "Invalid request", _validation_detail(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(exc.status_code, code, str(exc.detail), str(exc.detail), dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(500, "internal_error", "Internal error", "the server failed to handle this request")

    app.add_exception_handler(FedragError, on_fedrag)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, by declared length or by counting."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on unless its body is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = PayloadTooLarge(f"request body is over the {self.max_bytes}-byte limit")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await error_response(too_large)(scope, receive, send)
                    return
            except ValueError:
                pass
        # No trustworthy length: read the body here (bounded), then replay it to the app.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await error_response(too_large)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def problem_schema() -> dict[str, Any]:
    """OpenAPI ``responses`` entry for error statuses."""
    return {"model": Problem, "description": "Problem details with a stable code"}


class RequestCounter:
    """Counts HTTP requests by route template and status (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, counter: Any) -> None:
        self.app = app
        self.counter = counter  # a prometheus Counter labelled (route, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on and count its response status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.counter.labels(route=route, status=str(status)).inc()


METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}},
    }
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PUBLIC_TAGS = {"health"}


def describe_api(app: FastAPI, *, schemes: dict[str, dict[str, Any]], by_tag: dict[str, str] | None = None) -> None:
    """Make ``app``'s OpenAPI describe what it sends and asks for.

    Error responses are ``application/problem+json`` with the :class:`Problem` schema (FastAPI
    would say ``application/json`` and its own validation shape); every route taking a body
    documents the 400 for a body that is not UTF-8 JSON. The security ``schemes`` are declared;
    every route except the health ones requires the scheme its tag maps to in ``by_tag`` (the
    first scheme when its tag is not there).
    """
    default = next(iter(schemes))
    tag_schemes = by_tag or {}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        components["securitySchemes"] = schemes
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "The body is not UTF-8 JSON"})
                for status, response in responses.items():
                    if status[0] in "45":
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
                tags = operation.get("tags", [])
                if not _PUBLIC_TAGS & set(tags):
                    scheme = next((tag_schemes[t] for t in tags if t in tag_schemes), default)
                    operation["security"] = [{scheme: []}]
                    responses.setdefault("401", {"description": "Missing or wrong credential"})
                    responses["401"]["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
        for name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


STARTUP_FAILURE = 3
"""Exit status of a server whose app failed to start (uvicorn's)."""


def serve(app: FastAPI, *, host: str, port: int, reuse_port: bool = False, **options: Any) -> None:
    """Serve ``app`` with uvicorn until stopped; exit with :data:`STARTUP_FAILURE` if it cannot start.

    Args:
        app: the app.
        host: address to listen on.
        port: port to listen on.
        reuse_port: open the socket with ``SO_REUSEPORT`` (Linux), so that several processes of
            one service (sharing their state through a ``state_url``) listen on one port and the
            kernel spreads connections among them.
        options: more ``uvicorn.Config`` options (log level, TLS files).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    if not reuse_port:
        server.run()
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
