"""Append-only, hash-chained JSON Lines audit log of what left a silo.

Each line is one JSON object carrying ``time`` (seconds since the epoch) and ``prev``,
the SHA-256 of the previous record's line as stored (64 zeros for the first record), so
an edited, inserted or removed record in the middle of the log breaks the chain that
:meth:`AuditLog.verify` checks. Every append is flushed to disk (``fsync``) before it
returns.

A crash in the middle of a write leaves a torn last line. Opening the log tolerates it:
the torn line is kept for forensics but ignored, the next record starts on a new line,
and its ``prev`` links to the last complete record.

The log assumes one writing process; appends within the process are serialised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from federation.errors import ServerError

__all__ = ["GENESIS", "AuditLog"]

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
"""The ``prev`` of the first record."""

_RESERVED = frozenset({"time", "prev"})
_BLOCK = 64 * 1024


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on ``line``, or ``None`` when it is not a complete JSON object."""
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


class AuditLog:
    """An append-only JSONL audit log with a hash chain.

    Args:
        path: The log file; created (mode 0600) with its parent directory when absent.
        clock: Wall-clock source for each record's ``time``.

    Raises:
        ServerError: The file cannot be opened or read (code ``audit_unavailable``).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._needs_newline = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            created = not self._path.exists()
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    logger.warning("audit log ends in a torn line; ignoring it", extra={"path": str(self._path)})
                    os.write(fd, b"\n")
                    os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self._path.parent)
            self._last_hash = self._find_last_hash()
        except OSError as exc:
            raise ServerError(f"cannot open audit log {self._path}: {exc.strerror}", code="audit_unavailable") from exc

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record, adding ``time`` and ``prev``, and flush it to disk.

        Args:
            record: JSON-serialisable fields; must not contain ``time`` or ``prev``.

        Raises:
            ValueError: ``record`` uses a reserved key or is not JSON-serialisable
                (non-finite floats included).
            ServerError: The write failed (code ``audit_unavailable``); nothing may be
                released without its audit record.
        """
        clash = _RESERVED.intersection(record)
        if clash:
            raise ValueError(f"audit records must not set {sorted(clash)}")
        with self._lock:
            now = self._clock()
            if not math.isfinite(now):
                raise ValueError("clock returned a non-finite time")
            try:
                line = json.dumps(
                    {**record, "time": now, "prev": self._last_hash},
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=True,
                    allow_nan=False,
                ).encode("ascii")
            except TypeError as exc:
                raise ValueError(f"audit record is not JSON-serialisable: {exc}") from exc
            data = (b"\n" if self._needs_newline else b"") + line + b"\n"
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(f"short write ({written} of {len(data)} bytes)")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                # Part of the line may be on disk: start the next record on a fresh line.
                self._needs_newline = True
                logger.error("audit append failed", extra={"path": str(self._path), "error": str(exc)})
                raise ServerError("cannot write the audit log", code="audit_unavailable") from exc
            self._needs_newline = False
            self._last_hash = _digest(line)

    def records(self) -> Iterator[dict[str, Any]]:
        """Yield the complete records, oldest first, without checking the chain.

        Torn lines are skipped. Records appended while iterating are not included.
        """
        with self._lock:
            try:
                size = self._path.stat().st_size
            except FileNotFoundError:
                return
        for line in self._lines(size):
            record = _parse(line)
            if record is not None:
                yield record

    def verify(self) -> int:
        """Check the hash chain from the first record to the last.

        Returns:
            The number of records, all valid.

        Raises:
            ServerError: A record does not link to the one before it, or a line that
                parses is not a record (code ``audit_corrupt``).
        """
        with self._lock:
            size = self._path.stat().st_size if self._path.exists() else 0
        expected = GENESIS
        count = 0
        for number, line in enumerate(self._lines(size), start=1):
            record = _parse(line)
            if record is None:
                continue  # a torn line from a crash; the next record must link past it
            if record.get("prev") != expected or not isinstance(record.get("time"), int | float):
                raise ServerError(
                    f"audit log {self._path} is corrupt at line {number}: the hash chain is broken",
                    code="audit_corrupt",
                )
            expected = _digest(line)
            count += 1
        return count

    def _lines(self, size: int) -> Iterator[bytes]:
        """Yield the non-empty lines within the first ``size`` bytes, without newlines."""
        if size <= 0:
            return
        with self._path.open("rb") as handle:
            read = 0
            for raw in handle:
                read += len(raw)
                if read > size:
                    raw = raw[: len(raw) - (read - size)]
                line = raw.rstrip(b"\n")
                if line.strip():
                    yield line
                if read >= size:
                    return

    def _find_last_hash(self) -> str:
        """Hash of the last complete record, reading the file backwards."""
        with self._path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - _BLOCK)
                handle.seek(start)
                tail = handle.read(end - start) + tail
                end = start
                lines = tail.split(b"\n")
                # lines[0] may be cut by the block boundary unless we reached the start.
                complete = lines if end == 0 else lines[1:]
                for line in reversed(complete):
                    if line.strip() and _parse(line) is not None:
                        return _digest(line)
                tail = lines[0] if end > 0 else b""
        return GENESIS


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
