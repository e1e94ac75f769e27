"""Crawl resistance per gateway key (threat model T2): limits and detection over a sliding window.

A gateway key that holds the federation's signing key can ask a silo anything, as often as
it likes; differential privacy does not stop it from collecting the silo's passages one
search at a time. :class:`CrawlGuard` bounds and detects that, per key and per window of
``window_s`` seconds (:class:`~federation.config.CrawlSettings`), each control named in ``controls``:

- ``crawl_limit`` (distinct cap): the key may receive at most ``cap`` distinct chunk ids per window, where
  ``cap = min(max_distinct_chunks, max(min_cap, floor(max_distinct_share * chunks in the silo)))``
  (``min_cap`` is the policy's ``max_k``, so a small silo still answers one full search).
  A chunk the key already received within the window is free (and its window restarts); a
  search whose *new* chunks would take the key over the cap is refused before any text leaves.
- ``self_query``: a search whose best cosine to a stored chunk reaches
  ``self_query_similarity`` sits on top of a chunk (the query is that chunk's embedding, the
  step of a snowball crawl that re-embeds what it received). The key may make
  ``max_self_queries`` of them per window.
- ``sweep``: over the key's last ``sweep_queries`` searches in the window (this one
  included), the share of released chunks that were new to the key is at least
  ``sweep_new_share`` while the median best score is below ``sweep_max_score``: the queries
  find nothing they are close to, yet every one of them uncovers new passages, which is what
  random or space-filling query vectors do and real questions (which land near what they ask
  about, and overlap each other) do not.

This is rate limiting and detection, not a privacy guarantee: a patient crawler that stays
under every limit collects ``cap`` chunks per window. State lives in memory; after a restart
:meth:`CrawlGuard.replay` is fed the searches the audit log recorded within the window.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.config import CrawlSettings
from federation.errors import CrawlLimited

__all__ = ["ALERT_EVENT", "CrawlGuard", "CrawlUsage", "alerts_in_window"]

ALERT_EVENT = "crawl_alert"
"""The ``event`` of the audit record written for each refusal."""


@dataclass(frozen=True)
class CrawlUsage:
    """What one key used of its limits within the current window (no chunk ids, no text)."""

    distinct_released: int
    self_queries: int
    recent_searches: int


@dataclass(frozen=True)
class _Search:
    at: float
    best_score: float
    new: int
    released: int


@dataclass
class _KeyState:
    released: OrderedDict[int, float] = field(default_factory=OrderedDict)  # chunk id -> last release, oldest first
    self_queries: deque[float] = field(default_factory=deque)
    recent: deque[_Search] = field(default_factory=deque)

    def empty(self) -> bool:
        return not (self.released or self.self_queries or self.recent)


class CrawlGuard:
    """Thread-safe per-key crawl limits over a sliding window.

    Args:
        settings: The operator's crawl settings (used whether or not ``enabled`` is set).
        min_cap: Floor of the share cap (the release policy gives its ``max_k``).
        clock: Wall-clock source in seconds (inject a fake one in tests).
    """

    def __init__(self, settings: CrawlSettings, *, min_cap: int = 1, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._min_cap = max(1, int(min_cap))
        self._window_s = float(settings.window_s)
        self._clock = clock
        self._cap_on = "crawl_limit" in settings.controls
        self._self_on = "self_query" in settings.controls
        self._sweep_on = "sweep" in settings.controls
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._last_prune = clock()

    @property
    def settings(self) -> CrawlSettings:
        """The guard's settings."""
        return self._settings

    def cap(self, corpus_size: int | None) -> int | None:
        """Distinct chunks a key may receive per window from a silo of ``corpus_size`` chunks (``None``: no cap).

        ``corpus_size`` ``None`` (unknown) applies ``max_distinct_chunks`` alone.
        """
        if not self._cap_on:
            return None
        cap = self._settings.max_distinct_chunks
        if corpus_size is not None:
            cap = min(cap, max(self._min_cap, math.floor(self._settings.max_distinct_share * corpus_size)))
        return cap

    def admit(
        self, client_id: str, best_score: float, chunk_ids: Sequence[int], *, corpus_size: int | None = None
    ) -> None:
        """Let one search release ``chunk_ids`` to ``client_id``, or refuse it; on success record it.

        Check and record happen under one lock, so concurrent searches of a key cannot
        together pass a limit that each alone would reach.

        Args:
            client_id: The caller's key id.
            best_score: The search's best cosine to any stored chunk (before ``min_score``).
            chunk_ids: The chunks the search would release.
            corpus_size: Chunks in the silo, for ``max_distinct_share``.

        Raises:
            CrawlLimited: The search breaks a rule; ``code`` names it (``self_query``,
                ``sweep`` or ``crawl_limit``) and ``retry_after_s`` says when the key may
                try again (``None`` when this search could never be served).
        """
        settings = self._settings
        ids = list(dict.fromkeys(int(i) for i in chunk_ids))
        with self._lock:
            now = self._clock()
            state = self._live(client_id, now)
            new = [i for i in ids if i not in state.released]
            search = _Search(now, best_score, len(new), len(ids))
            is_self_query = self._self_on and best_score >= settings.self_query_similarity
            if is_self_query:
                self._check_self_queries(state, settings.max_self_queries, now)
            if self._sweep_on:
                self._check_sweep(state, search, now)
            self._check_cap(state, len(new), self.cap(corpus_size), now)
            self._add(client_id, state, search, ids, is_self_query)
            self._maybe_prune(now)

    def replay(self, client_id: str, at: float, best_score: float | None, chunk_ids: Sequence[int]) -> None:
        """Record a past search (from the audit log after a restart), without checking any limit.

        Searches must be replayed oldest first; those outside the window are ignored.

        Args:
            client_id: The caller's key id.
            at: Wall-clock time of the search in seconds.
            best_score: Its best score as recorded (``None`` when the record has none: it then
                counts for the distinct cap only).
            chunk_ids: The chunks it released.
        """
        if not math.isfinite(at):
            raise ValueError(f"at must be finite, got {at!r}")
        with self._lock:
            now = self._clock()
            if at + self._window_s <= now:
                return
            state = self._live(client_id, now)
            ids = list(dict.fromkeys(int(i) for i in chunk_ids))
            new = sum(1 for i in ids if i not in state.released)
            is_self = self._self_on and best_score is not None and best_score >= self._settings.self_query_similarity
            search = _Search(at, best_score if best_score is not None else math.inf, new, len(ids))
            self._add(client_id, state, search, ids, is_self)

    def usage(self, client_id: str) -> CrawlUsage:
        """What ``client_id`` used of its limits within the current window."""
        with self._lock:
            state = self._live(client_id, self._clock())
            return CrawlUsage(len(state.released), len(state.self_queries), len(state.recent))

    # rules (lock held) ------------------------------------------------------------------
    def _check_self_queries(self, state: _KeyState, limit: int, now: float) -> None:
        if len(state.self_queries) < limit:
            return
        retry = None if limit == 0 else self._expiry(state.self_queries[len(state.self_queries) - limit], now)
        raise CrawlLimited(
            f"self-query limit reached: {len(state.self_queries)} searches in the last {self._window_s:g} s sat on "
            f"a stored passage (similarity >= {self._settings.self_query_similarity:g}); at most {limit} are allowed",
            code="self_query",
            retry_after_s=retry,
        )

    def _check_sweep(self, state: _KeyState, current: _Search, now: float) -> None:
        size = self._settings.sweep_queries
        if len(state.recent) < size - 1:
            return
        window = [*list(state.recent)[len(state.recent) - (size - 1) :], current]
        released = sum(s.released for s in window)
        if released == 0:
            return
        new_share = sum(s.new for s in window) / released
        median_best = statistics.median(s.best_score for s in window)
        if new_share < self._settings.sweep_new_share or median_best >= self._settings.sweep_max_score:
            return
        raise CrawlLimited(
            f"sweep detected: over the last {size} searches {new_share:.0%} of the released passages were new to "
            f"this key while the median best similarity was {median_best:.2f} (below "
            f"{self._settings.sweep_max_score:g})",
            code="sweep",
            retry_after_s=self._expiry(window[0].at, now),
        )

    def _check_cap(self, state: _KeyState, new: int, cap: int | None, now: float) -> None:
        if cap is None or len(state.released) + new <= cap:
            return
        retry: float | None = None
        if new <= cap:
            # Oldest first until enough of the key's chunks have left the window.
            must_expire = len(state.released) + new - cap
            for n, at in enumerate(state.released.values(), start=1):
                if n == must_expire:
                    retry = self._expiry(at, now)
                    break
        raise CrawlLimited(
            f"crawl limit reached: this key received {len(state.released)} distinct passages in the last "
            f"{self._window_s:g} s; this search would add {new} more, over the cap of {cap}",
            code="crawl_limit",
            retry_after_s=retry,
        )

    # bookkeeping (lock held) --------------------------------------------------------------
    def _add(self, client_id: str, state: _KeyState, search: _Search, ids: list[int], is_self: bool) -> None:
        for chunk_id in ids:
            previous = state.released.pop(chunk_id, None)
            state.released[chunk_id] = search.at if previous is None else max(previous, search.at)
        if is_self:
            state.self_queries.append(search.at)
        if self._sweep_on:
            state.recent.append(search)
            while len(state.recent) > self._settings.sweep_queries:
                state.recent.popleft()
        if not state.empty():
            self._keys[client_id] = state

    def _live(self, client_id: str, now: float) -> _KeyState:
        """``client_id``'s state with what left the window pruned (a fresh one when it has none)."""
        state = self._keys.get(client_id)
        if state is None:
            return _KeyState()
        cutoff = now - self._window_s
        released = state.released
        while released:
            chunk_id, at = next(iter(released.items()))
            if at > cutoff:
                break
            del released[chunk_id]
        while state.self_queries and state.self_queries[0] <= cutoff:
            state.self_queries.popleft()
        while state.recent and state.recent[0].at <= cutoff:
            state.recent.popleft()
        if state.empty():
            del self._keys[client_id]
        return state

    def _expiry(self, at: float, now: float) -> float:
        return min(self._window_s, max(0.0, at + self._window_s - now))

    def _maybe_prune(self, now: float) -> None:
        """Forget keys whose whole state left the window, once per window."""
        if now - self._last_prune < self._window_s:
            return
        self._last_prune = now
        for client_id in list(self._keys):
            self._live(client_id, now)


def alerts_in_window(records: Iterable[Mapping[str, Any]], *, since: float) -> dict[str, dict[str, int]]:
    """Crawl alerts of audit ``records`` at or after ``since``: key id -> reason -> count."""
    alerts: dict[str, dict[str, int]] = {}
    for record in records:
        if record.get("event") != ALERT_EVENT:
            continue
        at, client_id, reason = record.get("time"), record.get("client_id"), record.get("reason")
        if (
            not isinstance(at, int | float)
            or at < since
            or not isinstance(client_id, str)
            or not isinstance(reason, str)
        ):
            continue
        per_key = alerts.setdefault(client_id, {})
        per_key[reason] = per_key.get(reason, 0) + 1
    return alerts
