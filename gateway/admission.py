"""Admission control: a bounded number of requests at work, a bounded queue, and 429 beyond.

Generations are bounded by the LLM server's parallel slots (``llm.parallel``): more at once
would only queue inside the LLM server, where every one of them runs into its timeout
together (a 504 storm). Retrieval-only requests have their own, larger bound. A request that
finds the queue full, or waits longer than ``admission.queue_wait_s`` for a slot, gets 429
with a ``Retry-After`` of about how long the work ahead of it takes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from federation.errors import Overloaded


class Admission:
    """At most ``slots`` requests at work and ``queue`` more waiting, each at most ``wait_s``."""

    def __init__(self, what: str, *, slots: int, queue: int, wait_s: float) -> None:
        if slots < 1 or queue < 0 or wait_s <= 0:
            raise ValueError("admission needs slots >= 1, queue >= 0 and wait_s > 0")
        self.what, self.slots, self.queue, self.wait_s = what, slots, queue, wait_s
        self._free = asyncio.Semaphore(slots)
        self._busy = 0
        self._waiting = 0
        self._service_s = 1.0  # running mean of how long a slot is held
        self.refused = 0

    @property
    def busy(self) -> int:
        """Requests at work now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return self._waiting

    def _retry_after_s(self) -> float:
        ahead = self._waiting + self._busy
        return max(1.0, math.ceil(self._service_s * ahead / self.slots))

    def _refuse(self, why: str) -> Overloaded:
        self.refused += 1
        return Overloaded(f"{self.what}: {why}; retry later", retry_after_s=self._retry_after_s())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block (429 ``overloaded`` when none frees up in time)."""
        if self._free.locked() and self._waiting >= self.queue:
            raise self._refuse(f"all {self.slots} slots are busy and {self._waiting} requests are waiting")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), timeout=self.wait_s)
        except TimeoutError:
            raise self._refuse(f"no slot freed up within {self.wait_s:g} s") from None
        finally:
            self._waiting -= 1
        self._busy += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._busy -= 1
            self._service_s = 0.8 * self._service_s + 0.2 * (time.monotonic() - started)
            self._free.release()
