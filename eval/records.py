"""The per-question log of a run: one JSON object per line, appended and synced as it goes.

A crashed or interrupted run is resumed by reading the log back: a question whose row is
there is not asked again. A torn last line (the crash came mid-write) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["QuestionLog", "row_key"]

logger = logging.getLogger(__name__)


def row_key(row: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What identifies a row: (suite, configuration, question kind, question id)."""
    return (str(row["suite"]), str(row["config"]), str(row["kind"]), str(row["id"]))


class QuestionLog:
    """Append-only JSONL log of per-question results with resume support."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: list[dict[str, Any]] = []
        self._done: set[tuple[str, str, str, str]] = set()
        if path.is_file():
            self._read()

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        good_bytes = 0
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            try:
                row = json.loads(line)
                key = row_key(row)
            except (ValueError, KeyError, TypeError):
                if line.endswith("\n"):
                    logger.warning("%s line %d is not a result row: ignored", self.path, number)
                    good_bytes += len(line.encode("utf-8"))
                    continue
                logger.warning("%s ends with a torn line (an interrupted run): dropped", self.path)
                break
            good_bytes += len(line.encode("utf-8"))
            if not line.endswith("\n"):  # complete JSON without its newline: keep it, mend the file
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
                good_bytes += 1
            if key not in self._done:
                self._done.add(key)
                self._rows.append(row)
        if good_bytes < len(text.encode("utf-8")):
            with self.path.open("r+b") as handle:
                handle.truncate(good_bytes)

    def __contains__(self, key: object) -> bool:
        return key in self._done

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row, in the order written."""
        return iter(self._rows)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably (flushed and fsynced before this returns)."""
        key = row_key(row)
        line = json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._done.add(key)
        self._rows.append(row)
