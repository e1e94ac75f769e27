"""Atomic, checksummed save and load of a vector index as one file.

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"FRAGVIDX"
    8       2     format version (1)
    10      2     reserved, zero
    12      4     metadata length M
    16      8     payload length P
    24      32    SHA-256 of bytes [0, 24) + metadata + payload
    56      M     metadata: UTF-8 JSON {"kind", "dimension", "count", "meta", "saved_at"}
    56+M    P     payload: the index's ``to_bytes()``

The checksum covers every byte except itself, so a flipped or missing byte anywhere is
caught before the payload reaches FAISS or hnswlib. A save writes a temporary file in
the target's directory, fsyncs it, renames it over the target and fsyncs the directory:
a crash leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from federation.config import IndexSettings
from silo_node.index.base import IndexCorrupt, VectorIndex, read_payload_header
from silo_node.index.factory import index_from_bytes, kinds_for

logger = logging.getLogger(__name__)

MAGIC = b"FRAGVIDX"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHHIQ")
_DIGEST_SIZE = 32
_HEADER_SIZE = _PREFIX.size + _DIGEST_SIZE


def save_index(index: VectorIndex, path: Path, meta: dict[str, Any]) -> None:
    """Write ``index`` and the caller's ``meta`` to ``path`` atomically (see the module docstring).

    Args:
        index: the index to save; removed vectors are compacted away by its ``to_bytes``.
        path: destination file; its directory must exist.
        meta: JSON-serialisable data returned by :func:`load_index`, e.g. ``{"seq": 123}``.

    Raises:
        ValueError: ``meta`` is not JSON-serialisable.
        OSError: the file could not be written (the previous file, if any, is untouched).
    """
    path = Path(path)
    payload = index.to_bytes()
    kind, dimension, count = read_payload_header(payload)  # describes exactly what was serialised
    header = {"kind": kind, "dimension": dimension, "count": count, "meta": meta, "saved_at": time.time()}
    try:
        raw_meta = json.dumps(header, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"index metadata must be JSON-serialisable: {exc}") from exc
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(raw_meta), len(payload))
    digest = hashlib.sha256()
    for part in (prefix, raw_meta, payload):
        digest.update(part)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in (prefix, digest.digest(), raw_meta, payload):
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    logger.info(
        "saved vector index",
        extra={"path": str(path), "kind": kind, "count": count, "bytes": _HEADER_SIZE + len(raw_meta) + len(payload)},
    )


def load_index(path: Path, settings: IndexSettings, dimension: int) -> tuple[VectorIndex, dict[str, Any]]:
    """Read an index saved by :func:`save_index`, verifying it first.

    Args:
        path: the file to read.
        settings: index settings; they choose which kinds are accepted and the search-time
            parameters of the loaded index.
        dimension: the vector length the node expects.

    Returns:
        The index and the ``meta`` given to :func:`save_index`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IndexCorrupt: the file is truncated, fails its checksum, has an unknown format,
            another dimension, or a kind of index the settings do not select.
    """
    path = Path(path)
    data = path.read_bytes()
    name = path.name
    if len(data) < _HEADER_SIZE:
        raise IndexCorrupt(f"index file {name} is truncated ({len(data)} bytes)")
    magic, version, reserved, meta_len, payload_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise IndexCorrupt(f"{name} is not a fedrag-serve index file")
    if version != FORMAT_VERSION or reserved != 0:
        raise IndexCorrupt(f"index file {name} has unsupported format version {version}.{reserved}")
    expected = _HEADER_SIZE + meta_len + payload_len
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise IndexCorrupt(f"index file {name} is {state} ({len(data)} bytes, expected {expected})")
    view = memoryview(data)
    digest = hashlib.sha256()
    digest.update(view[: _PREFIX.size])
    digest.update(view[_HEADER_SIZE:])
    if digest.digest() != bytes(view[_PREFIX.size : _HEADER_SIZE]):
        raise IndexCorrupt(f"index file {name} fails its SHA-256 checksum")
    try:
        header = json.loads(bytes(view[_HEADER_SIZE : _HEADER_SIZE + meta_len]))
        kind, stored_dimension, count = str(header["kind"]), int(header["dimension"]), int(header["count"])
        meta = header["meta"]
        if not isinstance(meta, dict):
            raise TypeError("meta is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupt(f"index file {name} has unreadable metadata: {exc}") from exc
    if stored_dimension != dimension:
        raise IndexCorrupt(f"index file {name} holds {stored_dimension}-dimensional vectors, expected {dimension}")
    if kind not in kinds_for(settings):
        raise IndexCorrupt(f"index file {name} holds a {kind} index but settings select backend {settings.backend}")
    index = index_from_bytes(view[_HEADER_SIZE + meta_len :], settings, dimension)
    if index.kind != kind or len(index) != count:
        raise IndexCorrupt(f"index file {name} does not match its metadata ({index.kind}, {len(index)} vectors)")
    logger.info("loaded vector index", extra={"path": str(path), "kind": kind, "count": count})
    return index, meta


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
