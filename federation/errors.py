"""One error hierarchy for every part, with stable machine-readable codes.

Client errors (4xx) carry a reason the caller can act on; server errors (5xx) never
carry internals. Every HTTP app renders them with the same problem-details shape
(:class:`federation.protocol.Problem`).
"""

from __future__ import annotations


class FedragError(Exception):
    """Base of all fedrag-serve errors.

    Attributes:
        status: HTTP status the error maps to.
        code: stable, machine-readable error code (snake_case).
        detail: human-readable reason; never contains secrets.
    """

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code


class ClientError(FedragError):
    """The request was wrong; retrying it unchanged will fail again."""

    status = 400
    code = "bad_request"
    title = "Bad request"


class ValidationFailed(ClientError):
    """The payload is well-formed JSON but its values are invalid."""

    status = 422
    code = "validation_failed"
    title = "Invalid request"


class AuthenticationFailed(ClientError):
    """Missing, malformed, unknown, expired, replayed or tampered credentials."""

    status = 401
    code = "unauthenticated"
    title = "Authentication failed"


class Forbidden(ClientError):
    """The caller is known but not allowed to do this."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ClientError):
    """The named resource does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(ClientError):
    """The request contradicts the federation contract (e.g. another embedding model)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ClientError):
    """The request body is over the configured size limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(ClientError):
    """The request body is not JSON."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class BudgetExhausted(ClientError):
    """The caller's privacy budget (or rate) for the current window is spent."""

    status = 429
    code = "budget_exhausted"
    title = "Budget exhausted"

    def __init__(self, detail: str = "", *, retry_after_s: float | None = None, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after_s = retry_after_s


class CrawlLimited(BudgetExhausted):
    """A gateway key's searches look like a crawl of the silo, or reach its crawl limits (T2).

    The code says which rule refused: ``crawl_limit`` (distinct chunks per window),
    ``self_query`` (queries sitting on a stored chunk) or ``sweep`` (systematic coverage).
    """

    code = "crawl_limit"
    title = "Crawl limit reached"


class Overloaded(BudgetExhausted):
    """Every slot for this kind of work is busy and the queue is full (or the wait ran out)."""

    code = "overloaded"
    title = "Too busy"


class ConfigError(FedragError):
    """A configuration or membership file is invalid."""

    code = "config_error"
    title = "Configuration error"


class ServerError(FedragError):
    """Something failed on our side; the detail says what without leaking internals."""

    status = 500
    code = "internal_error"
    title = "Internal error"


class Unavailable(ServerError):
    """A dependency (index, peer) is not ready or not reachable."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"


class StateStoreUnavailable(Unavailable):
    """The store that several processes share state through (Redis) is down, unreachable or failing.

    A request that needs the shared state (a rate limit, a nonce, a privacy budget) is refused,
    never let through unchecked.
    """

    code = "state_store_unavailable"
    title = "State store unavailable"


class UpstreamError(ServerError):
    """A peer answered with an error or with something that is not valid protocol."""

    status = 502
    code = "upstream_error"
    title = "Upstream error"

    def __init__(self, detail: str = "", *, code: str | None = None, upstream_status: int | None = None) -> None:
        super().__init__(detail, code=code)
        self.upstream_status = upstream_status


class UpstreamTimeout(ServerError):
    """A peer did not answer before the deadline."""

    status = 504
    code = "upstream_timeout"
    title = "Upstream timeout"
