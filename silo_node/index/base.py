"""The :class:`VectorIndex` contract every backend honours, and helpers the backends share.

A silo keeps one vector index of its chunk embeddings. Backends (exact numpy, FAISS,
hnswlib) differ in speed and recall; they all behave the same at this interface, which
``tests/unit/silo_node/test_index_conformance.py`` checks for each of them.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from federation.errors import ServerError

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

#: How far a stored vector's L2 norm may be from 1 before ``add`` refuses it.
NORM_TOLERANCE = 1e-2

_PAYLOAD_MAGIC = b"FRVI"
_PAYLOAD_PREFIX = struct.Struct("<4sI")


class IndexCorrupt(ServerError):
    """A persisted index is truncated, altered, or does not match what the node expects."""

    status = 500
    code = "index_corrupt"
    title = "Index corrupt"


@runtime_checkable
class VectorIndex(Protocol):
    """A set of (id, unit vector) pairs searched by inner product.

    Contract (every backend):

    * Vectors are float32 rows of length :attr:`dimension`, already L2-normalised (a norm
      further than ``NORM_TOLERANCE`` from 1 is refused), so inner product is cosine
      similarity. NaN or infinite values are refused with ``ValueError``.
    * Ids are non-negative int64 and unique among live vectors. Adding an id that is
      present raises ``ValueError`` (and nothing of that batch is added); adding an id that
      was removed earlier is allowed and stores the new vector.
    * ``remove`` makes ids disappear from every later ``search`` and ``ids`` at once and
      returns how many of them were present; unknown ids are ignored. Approximate
      backends may keep tombstones in memory, but :meth:`to_bytes` never contains a
      removed vector.
    * ``search(queries, k)`` takes a ``(q, dimension)`` array and returns
      ``(scores, ids)``, both ``(q, k)``: scores float32 in descending order, ids int64.
      When fewer than ``k`` vectors are found (small or empty index) the rest of the row
      is padded with id ``-1`` and score ``-inf``. ``k`` must be at least 1. Approximate
      backends may miss some true neighbours (recall below 1); every score they return
      is the exact inner product of the query with that id's stored vector.
    * ``len(index)`` counts live vectors; ``ids()`` returns them sorted.
    * ``to_bytes`` returns a self-describing payload that
      :func:`silo_node.index.index_from_bytes` turns back into an index giving identical
      search results. It contains no pickle.

    Thread safety: ``search``, ``ids``, ``len`` and ``to_bytes`` may run concurrently from
    any number of threads. ``add`` and ``remove`` take an exclusive lock (waiting for
    running searches and holding off new ones), so they are safe beside searches; callers
    still serialise mutations among themselves to keep their own bookkeeping ordered.
    """

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        ...

    @property
    def kind(self) -> str:
        """What the index is now: ``exact``, ``faiss-flat``, ``faiss-hnsw``, ``faiss-ivf`` or ``hnswlib``."""
        ...

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``ids[i]``.

        Args:
            ids: int64 array of shape ``(n,)``, non-negative, unique, not already present.
            vectors: float32 array of shape ``(n, dimension)``, rows L2-normalised.

        Raises:
            ValueError: wrong shapes or dtypes, non-finite or unnormalised vectors,
                negative, repeated or already present ids.
        """
        ...

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ``ids``; return how many were present (unknown ids are ignored)."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``k`` best ``(scores, ids)`` per query, padded with ``-inf`` / ``-1``.

        Raises:
            ValueError: wrong shape, non-finite query values, or ``k < 1``.
        """
        ...

    def ids(self) -> np.ndarray:
        """Live ids, int64, sorted ascending."""
        ...

    def to_bytes(self) -> bytes:
        """Serialise the live vectors (removed ones compacted away) for :func:`index_from_bytes`."""
        ...


class ReadWriteLock:
    """Many concurrent readers or one writer; a waiting writer holds off new readers.

    Not re-entrant: code holding either side must not take the lock again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the shared side for the duration of the ``with`` block."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the exclusive side for the duration of the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_dimension(dimension: int) -> int:
    """Return ``dimension`` as an int, refusing values below 1."""
    if int(dimension) < 1:
        raise ValueError(f"dimension must be at least 1, got {dimension}")
    return int(dimension)


def check_add(ids: np.ndarray, vectors: np.ndarray, dimension: int) -> tuple[IdArray, FloatArray]:
    """Validate an ``add`` batch and return it as contiguous int64 ids and float32 rows."""
    ids_in = np.asarray(ids)
    vec_in = np.asarray(vectors)
    if ids_in.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, got shape {ids_in.shape}")
    if ids_in.size and not np.issubdtype(ids_in.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids_in.dtype}")
    if vec_in.ndim != 2 or vec_in.shape[1] != dimension:
        raise ValueError(f"vectors must have shape (n, {dimension}), got {vec_in.shape}")
    if vec_in.shape[0] != ids_in.shape[0]:
        raise ValueError(f"{ids_in.shape[0]} ids for {vec_in.shape[0]} vectors")
    if vec_in.size and not np.issubdtype(vec_in.dtype, np.number):
        raise ValueError(f"vectors must be numeric, got dtype {vec_in.dtype}")
    out_ids: IdArray = np.ascontiguousarray(ids_in, dtype=np.int64)
    out_vec: FloatArray = np.ascontiguousarray(vec_in, dtype=np.float32)
    if out_ids.size == 0:
        return out_ids, out_vec
    if out_ids.min() < 0:
        raise ValueError("ids must be non-negative (-1 marks padding in search results)")
    if np.unique(out_ids).size != out_ids.size:
        raise ValueError("ids repeat within the batch")
    if not np.isfinite(out_vec).all():
        raise ValueError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(out_vec, axis=1)
    bad = np.abs(norms - 1.0) > NORM_TOLERANCE
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"vectors must be L2-normalised: row {row} has norm {norms[row]:.4f}")
    return out_ids, out_vec


def check_queries(queries: np.ndarray, k: int, dimension: int) -> FloatArray:
    """Validate a ``search`` call and return the queries as contiguous float32 rows."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != dimension:
        raise ValueError(f"queries must have shape (q, {dimension}), got {q.shape}")
    if q.size and not np.issubdtype(q.dtype, np.number):
        raise ValueError(f"queries must be numeric, got dtype {q.dtype}")
    out: FloatArray = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError("queries contain NaN or infinite values")
    return out


def empty_results(n_queries: int, k: int) -> tuple[FloatArray, IdArray]:
    """All-padding results: scores ``-inf``, ids ``-1``."""
    return np.full((n_queries, k), -np.inf, dtype=np.float32), np.full((n_queries, k), -1, dtype=np.int64)


def pad_results(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[FloatArray, IdArray]:
    """Normalise a library's raw result: ``-1`` ids get ``-inf`` scores; widen to ``k`` columns."""
    out_scores, out_ids = empty_results(scores.shape[0], k)
    width = min(k, scores.shape[1])
    out_ids[:, :width] = ids[:, :width]
    out_scores[:, :width] = scores[:, :width]
    out_scores[out_ids < 0] = -np.inf
    return out_scores, out_ids


def exact_top_k(queries: FloatArray, vectors: FloatArray, ids: IdArray, k: int) -> tuple[FloatArray, IdArray]:
    """Brute-force inner-product top ``k`` of ``queries`` over ``vectors`` labelled ``ids``.

    Processes queries in blocks so the score matrix stays under ~64 MiB.
    """
    n_queries, n = queries.shape[0], vectors.shape[0]
    out_scores, out_ids = empty_results(n_queries, k)
    if n == 0 or n_queries == 0:
        return out_scores, out_ids
    width = min(k, n)
    block = max(1, (16 * 1024 * 1024) // n)
    for start in range(0, n_queries, block):
        sims = queries[start : start + block] @ vectors.T
        if width < n:
            part = np.argpartition(-sims, width - 1, axis=1)[:, :width]
        else:
            part = np.broadcast_to(np.arange(n), sims.shape)
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        out_scores[start : start + block, :width] = np.take_along_axis(part_scores, order, axis=1)
        out_ids[start : start + block, :width] = ids[top]
    return out_scores, out_ids


def unique_ids(ids: Iterable[int]) -> IdArray:
    """Sorted unique int64 array of ``ids`` (any iterable of integers)."""
    arr = np.fromiter((int(i) for i in ids), dtype=np.int64) if not isinstance(ids, np.ndarray) else ids
    return np.unique(np.asarray(arr, dtype=np.int64))


def in_sorted(sorted_ids: IdArray, values: IdArray) -> npt.NDArray[np.bool_]:
    """Boolean mask: which of ``values`` occur in the ascending array ``sorted_ids``."""
    if sorted_ids.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_ids, values)
    pos[pos >= sorted_ids.size] = sorted_ids.size - 1
    mask: npt.NDArray[np.bool_] = sorted_ids[pos] == values
    return mask


@dataclass(frozen=True)
class Payload:
    """A backend's serialised form, split into its parts."""

    kind: str
    dimension: int
    count: int
    extra: dict[str, Any]
    sections: dict[str, bytes]


def pack_payload(
    kind: str, dimension: int, count: int, sections: dict[str, bytes], extra: dict[str, Any] | None = None
) -> bytes:
    """Lay out a backend payload: magic, JSON header length, JSON header, then the named sections."""
    header = {
        "kind": kind,
        "dimension": dimension,
        "count": count,
        "extra": extra or {},
        "sections": [[name, len(blob)] for name, blob in sections.items()],
    }
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return b"".join([_PAYLOAD_PREFIX.pack(_PAYLOAD_MAGIC, len(raw)), raw, *sections.values()])


@dataclass(frozen=True)
class _Header:
    kind: str
    dimension: int
    count: int
    extra: dict[str, Any]
    layout: list[tuple[str, int]]
    end: int


def _parse_header(view: memoryview) -> _Header:
    if len(view) < _PAYLOAD_PREFIX.size:
        raise IndexCorrupt("index payload is truncated")
    magic, header_len = _PAYLOAD_PREFIX.unpack_from(view)
    if magic != _PAYLOAD_MAGIC:
        raise IndexCorrupt("index payload has an unknown format")
    start = _PAYLOAD_PREFIX.size
    if start + header_len > len(view):
        raise IndexCorrupt("index payload header is truncated")
    try:
        header = json.loads(bytes(view[start : start + header_len]))
        return _Header(
            kind=str(header["kind"]),
            dimension=int(header["dimension"]),
            count=int(header["count"]),
            extra=dict(header["extra"]),
            layout=[(str(name), int(size)) for name, size in header["sections"]],
            end=start + header_len,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupt(f"index payload header is unreadable: {exc}") from exc


def read_payload_header(data: bytes | memoryview) -> tuple[str, int, int]:
    """Return a payload's ``(kind, dimension, count)`` without copying its sections.

    Raises:
        IndexCorrupt: the header is truncated or unreadable.
    """
    header = _parse_header(memoryview(data))
    return header.kind, header.dimension, header.count


def unpack_payload(data: bytes | memoryview) -> Payload:
    """Split a payload made by :func:`pack_payload`; raise :class:`IndexCorrupt` if it is malformed."""
    view = memoryview(data)
    header = _parse_header(view)
    offset = header.end
    sections: dict[str, bytes] = {}
    for name, size in header.layout:
        if size < 0 or offset + size > len(view):
            raise IndexCorrupt(f"index payload section {name!r} is truncated")
        sections[name] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(view):
        raise IndexCorrupt(f"index payload has {len(view) - offset} unexpected trailing bytes")
    return Payload(
        kind=header.kind, dimension=header.dimension, count=header.count, extra=header.extra, sections=sections
    )


def ids_from_bytes(blob: bytes, expected: int) -> IdArray:
    """Decode a little-endian int64 section holding ``expected`` ids."""
    if len(blob) != expected * 8:
        raise IndexCorrupt(f"id section holds {len(blob)} bytes, expected {expected * 8}")
    out: IdArray = np.frombuffer(blob, dtype="<i8").astype(np.int64)
    return out


def vectors_from_bytes(blob: bytes, count: int, dimension: int) -> FloatArray:
    """Decode a little-endian float32 section holding ``count`` rows of ``dimension``."""
    if len(blob) != count * dimension * 4:
        raise IndexCorrupt(f"vector section holds {len(blob)} bytes, expected {count * dimension * 4}")
    out: FloatArray = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(count, dimension)
    return out
