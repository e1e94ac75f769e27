"""A strategy wrapper that records each round: time, bytes, metrics, node outcomes, a checkpoint.

It delegates every call to the wrapped strategy (ours, or Flower's DP wrapper around ours)
and, at the end of each round, appends one line to ``OUT/progress.jsonl`` and replaces
``OUT/checkpoint.npz`` with the global arrays, so a crashed run keeps every finished round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"
CHECKPOINT_FILE = "checkpoint.npz"


def record_bytes(record: ArrayRecord) -> int:
    """Payload bytes of an array record (the arrays' data, without framing)."""
    return int(sum(len(array.data) for array in record.values()))


def _plain(metrics: MetricRecord | None) -> dict[str, Any]:
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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        arrays: dict[str, Any] = {name: array.numpy() for name, array in record.items()}
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RecordingStrategy(Strategy):
    """Record every round of ``inner`` into ``output``.

    Args:
        inner: the strategy that does the work.
        output: the run's output directory.
        outcomes: called after each round for the per-node outcomes (node id → (status, reason)).
    """

    def __init__(
        self, inner: Strategy, output: Path, *, outcomes: Callable[[int], dict[int, tuple[str, str]]] | None = None
    ) -> None:
        self.inner = inner
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self._outcomes = outcomes
        self._started = time.monotonic()
        self._round_started = self._started
        self._down: list[int] = []
        self._up: list[int] = []
        self._train_metrics: MetricRecord | None = None
        self.arrays: ArrayRecord | None = None
        self.rounds: list[dict[str, Any]] = []

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate, and count the bytes each sampled silo is sent."""
        self._round_started = time.monotonic()
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
        """Delegate."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate, then write the round's line and checkpoint."""
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        entry: dict[str, Any] = {
            "round": server_round,
            "seconds": round(time.monotonic() - self._round_started, 3),
            "elapsed_s": round(time.monotonic() - self._started, 3),
            "bytes_down_per_silo": int(np.mean(self._down)) if self._down else 0,
            "bytes_up_per_silo": int(np.mean(self._up)) if self._up else 0,
            "train": _plain(self._train_metrics),
            "evaluate": _plain(metrics),
        }
        if self._outcomes is not None:
            entry["nodes"] = {str(k): {"status": s, "reason": r} for k, (s, r) in self._outcomes(server_round).items()}
        self.rounds.append(entry)
        with (self.output / PROGRESS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if self.arrays is not None:
            save_arrays(self.output / CHECKPOINT_FILE, self.arrays)
        logger.info("round %d done in %.1f s: %s", server_round, entry["seconds"], entry["evaluate"])
        return metrics


__all__ = ["CHECKPOINT_FILE", "PROGRESS_FILE", "RecordingStrategy", "record_bytes", "save_arrays"]
