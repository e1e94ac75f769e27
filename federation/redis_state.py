"""State that several processes share through Redis: the connection, key names, error translation.

Several workers of a gateway or of a silo keep one rate limit per API key, one nonce replay
cache and one privacy ledger when they are given the same ``state_url``
(``redis://[:PASSWORD@]HOST:PORT/DB``). Without one, each process keeps its own in memory
(or SQLite), which is right for a single process and wrong for several.

Every call has short socket timeouts and no retries: when Redis is down, unreachable or
failing, the request that needs the state is refused with 503 ``state_store_unavailable``
(:class:`~federation.errors.StateStoreUnavailable`) at once, never let through unchecked and
never left hanging. Keys are namespaced ``fedrag:<kind>:<federation>:...``; they hold names
(API key names, silo and document names, key ids, nonces), never a key or a secret. The URL's
password appears in no log, error or repr (:func:`redacted_url`).

This module needs the ``redis`` package (the ``silo`` and ``gateway`` extras); import it only
where a ``state_url`` is set.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from federation.errors import ConfigError, StateStoreUnavailable
from federation.secrets import Secret

__all__ = ["TIMEOUT_S", "RedisReplayCache", "RedisState", "redacted_url"]

logger = logging.getLogger(__name__)

TIMEOUT_S = 0.5
"""Seconds to connect, and to wait for one reply, before the request is refused (503)."""


def redacted_url(url: str) -> str:
    """``url`` without its user name, password and query (``redis://***@HOST:PORT/DB``): safe for logs and messages."""
    parts = urlsplit(url)
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rsplit("@", 1)[1]
    return f"{parts.scheme}://{netloc}{parts.path}"


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


class RedisState:
    """One Redis connection pool shared by a process's stores; thread-safe.

    Args:
        url: the Redis URL (``redis://``, ``rediss://`` or ``unix://``), a secret since it may
            carry a password.
        namespace: the federation's name; every key of every store lives under it.
        timeout_s: connect and reply timeout of each call.

    Raises:
        ConfigError: ``url`` is not a Redis URL redis-py can use.
    """

    def __init__(self, url: Secret, *, namespace: str, timeout_s: float = TIMEOUT_S) -> None:
        self.location = redacted_url(url.reveal())
        self.namespace = namespace
        try:
            self.client = redis.Redis.from_url(
                url.reveal(),
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        except ValueError as exc:  # its message never holds the URL
            raise ConfigError(f"state_url {self.location} is not a valid Redis URL: {exc}") from exc

    def key(self, kind: str, *parts: str) -> str:
        """The Redis key ``fedrag:<kind>:<namespace>:<parts...>`` (``:`` inside a part is escaped)."""
        return ":".join(("fedrag", kind, _escape(self.namespace), *(_escape(p) for p in parts)))

    def script(self, source: str) -> Callable[..., Any]:
        """A Lua script run atomically by Redis (``EVALSHA``, loaded again after a Redis restart)."""
        return self.client.register_script(source)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate any Redis failure inside the block into :class:`StateStoreUnavailable` (503)."""
        try:
            yield
        except redis.RedisError as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.error(
                "state store %s failed (%s): %s", self.location, what, error, extra={"state_url": self.location}
            )
            raise StateStoreUnavailable(
                f"the shared state store is unavailable ({what}); the request was refused, retry shortly"
            ) from exc

    def warn_unless_durable(self, what: str) -> None:
        """Log a warning when Redis says it does not fsync every write (``appendonly yes``, ``appendfsync always``)."""
        try:
            config = self.client.config_get("append*")
        except redis.RedisError as exc:  # CONFIG may be disabled (managed Redis) or Redis down at start
            logger.info("cannot check the state store's durability: %s", type(exc).__name__)
            return
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            logger.warning(
                "%s: the state store at %s does not write every change to disk before it answers "
                "(run redis-server with --appendonly yes --appendfsync always): a Redis restart may lose it",
                what,
                self.location,
            )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisState({self.location!r}, namespace={self.namespace!r})"


# KEYS: the epoch key, the nonce key; ARGV: now (s), the nonce's time to live (ms).
# Returns {epoch, 1 when the nonce is new}. The epoch is when this silo's nonces started to be
# kept: a Redis that lost its data (restarted without persistence, flushed) starts a new one.
_REMEMBER = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return {epoch, 1}
end
return {epoch, 0}
"""


class RedisReplayCache:
    """The nonce replay cache of one silo in Redis, shared by all its workers (``SET NX PX``).

    Each accepted (key id, nonce) is kept ``ttl_s`` seconds, past the clock-skew window in which
    it could be replayed. :attr:`started_at` is the epoch Redis holds for the silo (when it started
    keeping its nonces), so a new worker accepts signatures made before it started, and a Redis that
    lost its data makes every worker refuse signatures made before the loss.

    Args:
        state: the shared Redis connection.
        audience: the silo's name.
        ttl_s: how long a nonce is remembered.
        clock: time source (seconds since the epoch).
    """

    remote = True

    def __init__(
        self, state: RedisState, audience: str, ttl_s: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._state = state
        self._audience = audience
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._clock = clock
        self._epoch_key = state.key("nonce-epoch", audience)
        self._remember = state.script(_REMEMBER)
        self.started_at = 0

    def remember(self, key_id: str, nonce: str) -> bool:
        """Record the nonce; return False if any worker of the silo saw it before (a replay)."""
        keys = [self._epoch_key, self._state.key("nonce", self._audience, key_id, nonce)]
        with self._state.errors("nonce replay check"):
            epoch, fresh = self._remember(keys=keys, args=[math.floor(self._clock()), self._ttl_ms])
        self.started_at = max(self.started_at, int(epoch))
        return bool(fresh)

    def __repr__(self) -> str:
        return f"RedisReplayCache({self._state!r}, audience={self._audience!r})"
