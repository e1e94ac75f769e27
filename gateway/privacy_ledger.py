"""Each silo document's lifetime privacy budget: what DP answers have spent of it, on disk.

An individual privacy filter (Feldman & Zrnic 2021): a document is charged only by the answers
whose voters read it (an answer that did not read it would have been the same without it),
each such answer costs the answer's epsilon, and a document whose spend would pass its
lifetime budget is no longer given to any voter. The spend is written to SQLite
(``synchronous=FULL``) before the answer that caused it is returned, so a crash or restart
never refills a budget. :class:`gateway.redis_stores.RedisPrivacyLedger` keeps the same
ledger in Redis, shared by several gateway processes (the :class:`DocumentLedger` contract).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["BUDGET_TOLERANCE", "DocumentKey", "DocumentLedger", "PrivacyLedger", "affordable_keys", "over_budget"]

DocumentKey = tuple[str, str]
"""(silo name, document id)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (
    silo TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    epsilon REAL NOT NULL,
    answers INTEGER NOT NULL,
    PRIMARY KEY (silo, doc_id)
);
"""
BUDGET_TOLERANCE = 1e-9
"""Slack for float sums: a spend within this of the budget still fits it."""


class DocumentLedger(Protocol):
    """Each document's lifetime epsilon spend against one ``budget``; durable, safe to share between threads.

    :meth:`charge` is all or nothing: it charges every document of an answer, or raises
    ``ValueError`` (one would pass the budget, possibly spent by another process since
    :meth:`affordable` was asked) and charges none. A charge is durable before it returns. When
    the ledger cannot be read or written every method raises
    :class:`~federation.errors.Unavailable` (503).
    """

    budget: float

    def spent(self, keys: Iterable[DocumentKey]) -> dict[DocumentKey, float]:
        """Epsilon spent so far by each of ``keys`` (0 for a document never charged)."""
        ...

    def affordable(self, keys: Iterable[DocumentKey], epsilon: float) -> set[DocumentKey]:
        """Those of ``keys`` that can still pay ``epsilon`` within their lifetime budget."""
        ...

    def charge(self, keys: Sequence[DocumentKey], epsilon: float) -> None:
        """Charge ``epsilon`` to each of ``keys`` (once each), all or none."""
        ...

    def summary(self) -> dict[str, float]:
        """``documents_charged``, ``documents_exhausted`` and ``largest_spend``."""
        ...

    def close(self) -> None:
        """Release what the ledger holds."""
        ...


def affordable_keys(spent: dict[DocumentKey, float], epsilon: float, budget: float) -> set[DocumentKey]:
    """The documents whose ``spent`` leaves room for ``epsilon`` more within ``budget``."""
    return {key for key, used in spent.items() if used + epsilon <= budget + BUDGET_TOLERANCE}


def over_budget(key: DocumentKey, used: float, budget: float) -> ValueError:
    """The refusal of a charge that would take ``key`` past ``budget``."""
    silo, doc_id = key
    return ValueError(f"document {doc_id!r} of silo {silo!r} has {budget - used:.3g} left")


class PrivacyLedger:
    """Per-document epsilon spent, with a lifetime budget; safe to share between threads.

    Args:
        path: the SQLite file (created with its directory).
        budget: lifetime epsilon of every document.
    """

    def __init__(self, path: Path, *, budget: float) -> None:
        if not budget > 0:
            raise ValueError(f"the document budget must be positive, got {budget!r}")
        self.budget = float(budget)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def spent(self, keys: Iterable[DocumentKey]) -> dict[DocumentKey, float]:
        """Epsilon spent so far by each of ``keys`` (0 for a document never charged)."""
        wanted = list(dict.fromkeys(keys))
        out = dict.fromkeys(wanted, 0.0)
        with self._lock:
            for silo, doc_id in wanted:
                row = self._db.execute(
                    "SELECT epsilon FROM spent WHERE silo = ? AND doc_id = ?", (silo, doc_id)
                ).fetchone()
                if row is not None:
                    out[(silo, doc_id)] = float(row[0])
        return out

    def affordable(self, keys: Iterable[DocumentKey], epsilon: float) -> set[DocumentKey]:
        """Those of ``keys`` that can still pay ``epsilon`` within their lifetime budget."""
        return affordable_keys(self.spent(keys), epsilon, self.budget)

    def charge(self, keys: Sequence[DocumentKey], epsilon: float) -> None:
        """Charge ``epsilon`` to each of ``keys`` in one durable transaction.

        Raises:
            ValueError: a document would pass its budget (nothing is charged); callers charge
                only what :meth:`affordable` returned.
        """
        unique = list(dict.fromkeys(keys))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for silo, doc_id in unique:
                    row = self._db.execute(
                        "SELECT epsilon FROM spent WHERE silo = ? AND doc_id = ?", (silo, doc_id)
                    ).fetchone()
                    used = float(row[0]) if row is not None else 0.0
                    if used + epsilon > self.budget + BUDGET_TOLERANCE:
                        raise over_budget((silo, doc_id), used, self.budget)
                    self._db.execute(
                        "INSERT INTO spent (silo, doc_id, epsilon, answers) VALUES (?, ?, ?, 1) "
                        "ON CONFLICT (silo, doc_id) DO UPDATE SET epsilon = epsilon + excluded.epsilon, "
                        "answers = answers + 1",
                        (silo, doc_id, epsilon),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def summary(self) -> dict[str, float]:
        """Documents charged, exhausted, and the largest spend (for stats and metrics)."""
        with self._lock:
            charged, exhausted, largest = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(epsilon >= ? - ?), 0), COALESCE(MAX(epsilon), 0) FROM spent",
                (self.budget, BUDGET_TOLERANCE),
            ).fetchone()
        return {
            "documents_charged": int(charged),
            "documents_exhausted": int(exhausted),
            "largest_spend": float(largest),
        }
