"""The gateway's shared state in Redis: per-key rate limits and the DP answers' privacy ledger.

Several gateway processes (workers on one port, replicas behind a load balancer) given the same
``state_url`` enforce one rate limit per API key and one lifetime budget per silo document. Each
check-and-update is one Lua script, so two processes never both spend the last token or the last
of a document's budget. A Redis that is down or failing refuses the request with 503
``state_store_unavailable`` (:meth:`federation.redis_state.RedisState.errors`).

The ledger is durable only if Redis is: run it with ``--appendonly yes --appendfsync always``, or
a Redis restart refills the budgets it lost (the gateway warns at start when Redis says otherwise).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence

from federation.redis_state import RedisState
from gateway.apikeys import rate_limited
from gateway.privacy_ledger import BUDGET_TOLERANCE, DocumentKey, affordable_keys, over_budget

__all__ = ["RedisPrivacyLedger", "RedisRateLimiter"]

# KEYS: the bucket (a hash of tokens and time); ARGV: capacity, refill per second, now (s).
# Returns {1 when a token was taken, the tokens left}. An idle bucket expires once it is full.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
  at = now
end
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {taken, tostring(tokens)}
"""


class RedisRateLimiter:
    """A token bucket per key in Redis (``fedrag:ratelimit:<federation>:<key name>``), shared by gateway processes.

    Args:
        state: the shared Redis connection.
        per_minute: requests a minute per key, bursts up to the same number.
        clock: time source (seconds since the epoch; the processes' clocks should agree).
    """

    def __init__(self, state: RedisState, per_minute: int, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._per_minute = per_minute
        self._take = state.script(_TAKE)
        self._clock = clock

    def take(self, key_name: str) -> None:
        """Spend one request of ``key_name``'s allowance, or raise 429 (503 when Redis fails)."""
        with self._state.errors("rate limit"):
            taken, tokens = self._take(
                keys=[self._state.key("ratelimit", key_name)],
                args=[self._per_minute, repr(self._per_minute / 60.0), repr(self._clock())],
            )
        if not taken:
            raise rate_limited(self._per_minute, float(tokens))


# KEYS: spent (sorted set: document -> epsilon), answers (hash: document -> answers that read it);
# ARGV: epsilon, the most a document may have spent, then the documents (each once).
# Returns {0} when all were charged, or {i, spent} for the first document (1-based) that cannot pay.
_CHARGE = """
local epsilon = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
for i = 3, #ARGV do
  local used = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) or 0
  if used + epsilon > limit then
    return {i - 2, tostring(used)}
  end
end
for i = 3, #ARGV do
  redis.call('ZINCRBY', KEYS[1], ARGV[1], ARGV[i])
  redis.call('HINCRBY', KEYS[2], ARGV[i], 1)
end
return {0}
"""


def _member(key: DocumentKey) -> str:
    return json.dumps(list(key), separators=(",", ":"))


class RedisPrivacyLedger:
    """Each document's lifetime epsilon spend in Redis, shared by gateway processes (a :class:`DocumentLedger`).

    Args:
        state: the shared Redis connection (closed by its owner, not by :meth:`close`).
        budget: lifetime epsilon of every document.
    """

    def __init__(self, state: RedisState, *, budget: float) -> None:
        if not budget > 0:
            raise ValueError(f"the document budget must be positive, got {budget!r}")
        self.budget = float(budget)
        self._state = state
        self._spent_key = state.key("ledger", "spent")
        self._answers_key = state.key("ledger", "answers")
        self._charge = state.script(_CHARGE)

    def spent(self, keys: Iterable[DocumentKey]) -> dict[DocumentKey, float]:
        """Epsilon spent so far by each of ``keys`` (0 for a document never charged)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._state.errors("privacy ledger"):
            scores = self._state.client.zmscore(self._spent_key, [_member(k) for k in wanted])
        return {key: float(score or 0.0) for key, score in zip(wanted, scores, strict=True)}

    def affordable(self, keys: Iterable[DocumentKey], epsilon: float) -> set[DocumentKey]:
        """Those of ``keys`` that can still pay ``epsilon`` within their lifetime budget."""
        return affordable_keys(self.spent(keys), epsilon, self.budget)

    def charge(self, keys: Sequence[DocumentKey], epsilon: float) -> None:
        """Charge ``epsilon`` to each of ``keys`` in one atomic script, or raise ``ValueError`` and charge none."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return
        limit = self.budget + BUDGET_TOLERANCE
        with self._state.errors("privacy ledger"):
            result = self._charge(
                keys=[self._spent_key, self._answers_key], args=[repr(epsilon), repr(limit), *map(_member, unique)]
            )
        if int(result[0]):
            raise over_budget(unique[int(result[0]) - 1], float(result[1]), self.budget)

    def summary(self) -> dict[str, float]:
        """Documents charged, exhausted, and the largest spend (for stats and metrics)."""
        with self._state.errors("privacy ledger"):
            pipe = self._state.client.pipeline(transaction=False)
            pipe.zcard(self._spent_key)
            pipe.zcount(self._spent_key, repr(self.budget - BUDGET_TOLERANCE), "+inf")
            pipe.zrange(self._spent_key, -1, -1, withscores=True)
            charged, exhausted, largest = pipe.execute()
        return {
            "documents_charged": int(charged),
            "documents_exhausted": int(exhausted),
            "largest_spend": float(largest[0][1]) if largest else 0.0,
        }

    def close(self) -> None:
        """Nothing to release: the connection belongs to the app."""

    def __repr__(self) -> str:
        return f"RedisPrivacyLedger({self._state!r}, budget={self.budget:g})"
