"""Record each round of a run: time, bytes, metrics, node outcomes, a checkpoint.

:class:`RoundLog` appends one line per finished round to ``OUT/progress.jsonl`` and
replaces ``OUT/checkpoint.npz`` with the global arrays, so a crashed run keeps every
finished round. :class:`RecordingStrategy` is a :class:`RoundLog` around a Message-API
strategy (ours, or Flower's DP wrapper around ours): it delegates every call and writes
the round at its end. The SecAgg+ path (:mod:`training.secure_aggregation`) writes the
same lines through a :class:`RoundLog` of its own.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from federation.files import atomic_target

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"
CHECKPOINT_FILE = "checkpoint.npz"


def record_bytes(record: ArrayRecord) -> int:
    """Payload bytes of an array record (the arrays' data, without framing)."""
    return int(sum(len(array.data) for array in record.values()))


def _plain(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    if metrics is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
        else:
            out[key] = value
    return out


def save_arrays(path: Path, record: ArrayRecord) -> None:
    """Write arrays to an ``.npz`` file atomically."""
    arrays: dict[str, Any] = {name: array.numpy() for name, array in record.items()}
    with atomic_target(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)


Outcomes = Callable[[int], dict[int, tuple[str, str]]]
"""Called after each round for the per-node outcomes (node id → (status, reason))."""


class RoundLog:
    """The rounds of one run, as ``progress.jsonl`` lines and a checkpoint in ``output``.

    Args:
        output: the run's output directory.
        outcomes: called after each round for the per-node outcomes.

    Attributes:
        arrays: the latest global arrays (written to the checkpoint after each round).
        rounds: every finished round's line, in order.
    """

    def __init__(self, output: Path, *, outcomes: Outcomes | None = None) -> None:
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self._outcomes = outcomes
        self._started = time.monotonic()
        self._round_started = self._started
        self.arrays: ArrayRecord | None = None
        self.rounds: list[dict[str, Any]] = []

    def start_round(self) -> None:
        """Mark the start of a round (its line reports the seconds since)."""
        self._round_started = time.monotonic()

    def finish_round(
        self,
        server_round: int,
        *,
        down: list[int],
        up: list[int],
        train: Mapping[str, Any] | None,
        evaluate: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append the round's line (bytes are per silo: the mean of ``down`` / ``up``) and checkpoint."""
        now = time.monotonic()
        entry: dict[str, Any] = {
            "round": server_round,
            "seconds": round(now - self._round_started, 3),
            "elapsed_s": round(now - self._started, 3),
            "bytes_down_per_silo": int(np.mean(down)) if down else 0,
            "bytes_up_per_silo": int(np.mean(up)) if up else 0,
            "train": _plain(train),
            "evaluate": _plain(evaluate),
        }
        entry.update(extra or {})
        if self._outcomes is not None:
            entry["nodes"] = {str(k): {"status": s, "reason": r} for k, (s, r) in self._outcomes(server_round).items()}
        self.rounds.append(entry)
        with (self.output / PROGRESS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if self.arrays is not None:
            save_arrays(self.output / CHECKPOINT_FILE, self.arrays)
        logger.info("round %d done in %.1f s: %s", server_round, entry["seconds"], entry["evaluate"])
        return entry


class RecordingStrategy(RoundLog, Strategy):
    """Record every round of ``inner`` into ``output``.

    Args:
        inner: the strategy that does the work.
        output: the run's output directory.
        outcomes: called after each round for the per-node outcomes (node id → (status, reason)).
        evaluate_round: which rounds run a federated evaluation (default: every round). Each
            round's training replies already carry the held-out loss of the arrays they
            received, so evaluating only the last round saves a ClientApp start per silo per round.
    """

    def __init__(
        self,
        inner: Strategy,
        output: Path,
        *,
        outcomes: Outcomes | None = None,
        evaluate_round: Callable[[int], bool] | None = None,
    ) -> None:
        super().__init__(output, outcomes=outcomes)
        self.inner = inner
        self._evaluate_round = evaluate_round
        self._down: list[int] = []
        self._up: list[int] = []
        self._train_metrics: MetricRecord | None = None

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate, and count the bytes each sampled silo is sent."""
        self.start_round()
        if self.arrays is None:
            self.arrays = arrays
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._down = [sum(record_bytes(r) for r in m.content.array_records.values()) for m in messages]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate, and count the bytes each silo sent back."""
        replies = list(replies)
        self._up = [
            sum(record_bytes(r) for r in m.content.array_records.values()) for m in replies if not m.has_error()
        ]
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None:
            self.arrays = arrays
        self._train_metrics = metrics
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate (in the rounds that evaluate)."""
        if self._evaluate_round is not None and not self._evaluate_round(server_round):
            return []
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate, then write the round's line and checkpoint."""
        replies = list(replies)
        metrics = self.inner.aggregate_evaluate(server_round, replies) if replies else None
        self.finish_round(server_round, down=self._down, up=self._up, train=self._train_metrics, evaluate=metrics)
        return metrics


__all__ = [
    "CHECKPOINT_FILE",
    "PROGRESS_FILE",
    "Outcomes",
    "RecordingStrategy",
    "RoundLog",
    "record_bytes",
    "save_arrays",
]
