"""Per-client privacy budgets over a sliding time window.

Every charge is remembered with its time and forgotten ``window_s`` seconds later; a
client may hold at most ``budget`` epsilon of unexpired charges. State lives in memory;
after a restart :meth:`EpsilonAccountant.restore` replays the charges the audit log
recorded.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable

from federation.errors import BudgetExhausted

__all__ = ["EpsilonAccountant"]

logger = logging.getLogger(__name__)

# Slack for float sums: 20 charges of 0.05 must fit a budget of 1.0.
_TOLERANCE = 1e-9


class EpsilonAccountant:
    """Thread-safe sliding-window epsilon accounting per client.

    Args:
        budget: Epsilon a client may spend within any window.
        window_s: Seconds after which a charge no longer counts.
        clock: Wall-clock source in seconds (inject a fake one in tests).

    Raises:
        ValueError: ``budget`` or ``window_s`` is not positive.
    """

    def __init__(self, budget: float, window_s: float, clock: Callable[[], float] = time.time) -> None:
        if not (math.isfinite(budget) and budget > 0):
            raise ValueError(f"budget must be a positive finite number, got {budget!r}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive finite number, got {window_s!r}")
        self._budget = float(budget)
        self._window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        # client -> charges sorted by time, as (time, epsilon)
        self._charges: dict[str, list[tuple[float, float]]] = {}
        self._last_sweep = clock()

    @property
    def budget(self) -> float:
        """Epsilon a client may spend per window."""
        return self._budget

    @property
    def window_s(self) -> float:
        """Length of the sliding window in seconds."""
        return self._window_s

    def charge(self, client_id: str, epsilon: float) -> None:
        """Spend ``epsilon`` of ``client_id``'s budget, or refuse and spend nothing.

        Args:
            client_id: The caller's key id.
            epsilon: Privacy loss of the request.

        Raises:
            BudgetExhausted: The charge would take the client over its budget; its
                ``retry_after_s`` says when enough of the spend expires (``None`` when
                ``epsilon`` alone exceeds the budget).
            ValueError: ``epsilon`` is negative or not finite.
        """
        _check_epsilon(epsilon)
        with self._lock:
            now = self._clock()
            charges = self._live(client_id, now)
            self._refuse_if_over(client_id, charges, epsilon, now)
            if epsilon > 0:
                charges.append((now, epsilon))
                self._charges[client_id] = charges
            self._maybe_sweep(now)

    def check(self, client_id: str, epsilon: float) -> None:
        """Raise as :meth:`charge` would, without spending anything.

        Args:
            client_id: The caller's key id.
            epsilon: Privacy loss the caller is about to incur.

        Raises:
            BudgetExhausted: ``client_id`` cannot afford ``epsilon`` now.
            ValueError: ``epsilon`` is negative or not finite.
        """
        _check_epsilon(epsilon)
        with self._lock:
            now = self._clock()
            self._refuse_if_over(client_id, self._live(client_id, now), epsilon, now)

    def spent(self, client_id: str) -> float:
        """Epsilon ``client_id`` has spent within the current window."""
        with self._lock:
            return math.fsum(eps for _, eps in self._live(client_id, self._clock()))

    def remaining(self, client_id: str) -> float:
        """Epsilon ``client_id`` may still spend within the current window."""
        return max(0.0, self._budget - self.spent(client_id))

    def restore(self, client_id: str, at: float, epsilon: float) -> None:
        """Record a past charge (replayed from the audit log after a restart).

        Charges already outside the window are ignored; the budget is not checked.

        Args:
            client_id: The caller's key id.
            at: Wall-clock time of the charge in seconds.
            epsilon: Privacy loss that was charged.

        Raises:
            ValueError: ``epsilon`` is negative or not finite, or ``at`` is not finite.
        """
        _check_epsilon(epsilon)
        if not math.isfinite(at):
            raise ValueError(f"at must be finite, got {at!r}")
        with self._lock:
            now = self._clock()
            if epsilon == 0 or at + self._window_s <= now:
                return
            charges = self._live(client_id, now)
            bisect.insort(charges, (float(at), float(epsilon)))
            self._charges[client_id] = charges

    def _live(self, client_id: str, now: float) -> list[tuple[float, float]]:
        """Unexpired charges of ``client_id``, pruning the expired ones (lock held)."""
        charges = self._charges.get(client_id)
        if not charges:
            return []
        cutoff = now - self._window_s
        first_live = bisect.bisect_right(charges, (cutoff, math.inf))
        if first_live:
            del charges[:first_live]
        if not charges:
            del self._charges[client_id]
        return charges

    def _refuse_if_over(self, client_id: str, charges: list[tuple[float, float]], epsilon: float, now: float) -> None:
        spent = math.fsum(eps for _, eps in charges)
        if spent + epsilon <= self._budget + _TOLERANCE:
            return
        retry_after: float | None = None
        if epsilon <= self._budget + _TOLERANCE:
            # Walk the charges oldest first until enough of them have expired.
            remaining = spent
            for at, eps in charges:
                remaining -= eps
                if remaining + epsilon <= self._budget + _TOLERANCE:
                    retry_after = min(self._window_s, max(0.0, at + self._window_s - now))  # float rounding
                    break
        logger.info(
            "privacy budget refused",
            extra={"client_id": client_id, "spent": spent, "epsilon": epsilon, "retry_after_s": retry_after},
        )
        if retry_after is None:
            detail = f"a request costs epsilon {epsilon:g}, more than the whole budget of {self._budget:g} per window"
        else:
            detail = (
                f"privacy budget spent: {spent:g} of {self._budget:g} epsilon used in the last "
                f"{self._window_s:g} s; this request needs {epsilon:g}; retry after {math.ceil(retry_after)} s"
            )
        raise BudgetExhausted(detail, retry_after_s=retry_after)

    def _maybe_sweep(self, now: float) -> None:
        """Forget clients whose charges all expired, once per window (lock held)."""
        if now - self._last_sweep < self._window_s:
            return
        self._last_sweep = now
        for client_id in list(self._charges):
            self._live(client_id, now)


def _check_epsilon(epsilon: float) -> None:
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a non-negative finite number, got {epsilon!r}")
