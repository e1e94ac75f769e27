"""End-user API keys (stored as SHA-256 hashes) and per-key rate limits.

A rate limit is a token bucket per key: ``per_minute`` requests a minute, bursts up to the
same number. :class:`RateLimiter` keeps the buckets in this process;
:class:`gateway.redis_stores.RedisRateLimiter` keeps them in Redis, shared by every gateway
process given the same ``state_url`` (the :class:`RequestLimiter` contract).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from federation.errors import AuthenticationFailed, BudgetExhausted, ConfigError

KEY_PREFIX = "fr-"


@dataclass(frozen=True)
class ApiKeyEntry:
    """One stored key: a name and the hash of the key (the key itself is never stored)."""

    name: str
    sha256: str
    created: float


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """The hashed keys of a gateway, in a JSON file (mode 0600)."""

    def __init__(self, entries: list[ApiKeyEntry]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> ApiKeyStore:
        """Read the key file; a missing or malformed file is a :class:`ConfigError`."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            entries = [
                ApiKeyEntry(name=str(e["name"]), sha256=str(e["sha256"]), created=float(e["created"])) for e in raw
            ]
        except FileNotFoundError as exc:
            raise ConfigError(f"API key file {path} not found: create one with 'fedrag gateway keys add'") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"API key file {path} is not valid: {exc}") from exc
        return cls(entries)

    @staticmethod
    def add(path: Path, name: str) -> str:
        """Create a key named ``name`` in the file at ``path``; return the key (shown once)."""
        path = Path(path)
        entries = ApiKeyStore.load(path)._entries if path.exists() else []
        if any(e.name == name for e in entries):
            raise ConfigError(f"an API key named '{name}' already exists in {path}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entries.append(ApiKeyEntry(name=name, sha256=_hash(key), created=time.time()))
        data = json.dumps([vars(e) for e in entries], indent=2).encode()
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return key

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization: str | None) -> str:
        """Return the key's name for ``Authorization: Bearer <key>``, or raise 401."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationFailed("send 'Authorization: Bearer <API key>'", code="api_key_missing")
        presented = _hash(key.strip())
        match = None
        for entry in self._entries:  # compare with every entry, in constant time each
            if hmac.compare_digest(entry.sha256, presented):
                match = entry
        if match is None:
            raise AuthenticationFailed("API key is not valid", code="api_key_invalid")
        return match.name


class RequestLimiter(Protocol):
    """Per-key request limits.

    :meth:`take` spends one request of the key's allowance, or raises
    :class:`~federation.errors.BudgetExhausted` (429, code ``rate_limited``, with
    ``retry_after_s``) and spends nothing; when the limits cannot be checked it raises
    :class:`~federation.errors.Unavailable` (503), never lets the request through.
    """

    def take(self, key_name: str) -> None:
        """Spend one request of ``key_name``'s allowance or raise."""
        ...


def rate_limited(per_minute: int, tokens: float) -> BudgetExhausted:
    """The 429 for a key whose bucket holds ``tokens`` (< 1) of ``per_minute``."""
    wait = (1.0 - tokens) / (per_minute / 60.0)
    return BudgetExhausted(
        f"rate limit of {per_minute} requests per minute reached; retry in {math.ceil(wait)} s",
        retry_after_s=wait,
        code="rate_limited",
    )


class RateLimiter:
    """A token bucket per key, in this process: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_name: str) -> None:
        """Spend one request of ``key_name``'s allowance or raise 429 with Retry-After."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key_name, (self._capacity, now))
            tokens = min(self._capacity, tokens + (now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[key_name] = (tokens, now)
                raise rate_limited(self._per_minute, tokens)
            self._buckets[key_name] = (tokens - 1.0, now)
