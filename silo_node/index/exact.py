"""Exact inner-product search in numpy: the ground truth, and fine for small silos."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from silo_node.index.base import (
    FloatArray,
    IdArray,
    IndexCorrupt,
    Payload,
    ReadWriteLock,
    check_add,
    check_dimension,
    check_queries,
    exact_top_k,
    ids_from_bytes,
    in_sorted,
    pack_payload,
    unique_ids,
    vectors_from_bytes,
)

logger = logging.getLogger(__name__)

KIND = "exact"


class ExactIndex:
    """Brute-force :class:`~silo_node.index.base.VectorIndex` over a growable numpy matrix.

    Search costs ``O(n * dimension)`` per query; removal compacts the matrix at once, so
    nothing removed stays in memory. Thread safety as in the ``VectorIndex`` contract.
    """

    def __init__(self, dimension: int) -> None:
        """Create an empty index for vectors of length ``dimension``."""
        self._dimension = check_dimension(dimension)
        self._lock = ReadWriteLock()
        self._vectors: FloatArray = np.empty((0, self._dimension), dtype=np.float32)
        self._labels: IdArray = np.empty(0, dtype=np.int64)  # row -> id, insertion order
        self._count = 0
        self._live: IdArray = np.empty(0, dtype=np.int64)  # sorted

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._dimension

    @property
    def kind(self) -> str:
        """Always ``exact``."""
        return KIND

    def __len__(self) -> int:
        """Number of stored vectors."""
        return self._count

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append vectors; see the ``VectorIndex`` contract."""
        new_ids, new_vectors = check_add(ids, vectors, self._dimension)
        if new_ids.size == 0:
            return
        with self._lock.write():
            present = in_sorted(self._live, new_ids)
            if present.any():
                raise ValueError(f"id {int(new_ids[present][0])} is already in the index")
            needed = self._count + new_ids.size
            if needed > self._vectors.shape[0]:
                capacity = max(needed, 2 * self._vectors.shape[0], 1024)
                grown = np.empty((capacity, self._dimension), dtype=np.float32)
                grown[: self._count] = self._vectors[: self._count]
                labels = np.empty(capacity, dtype=np.int64)
                labels[: self._count] = self._labels[: self._count]
                self._vectors, self._labels = grown, labels
            self._vectors[self._count : needed] = new_vectors
            self._labels[self._count : needed] = new_ids
            self._count = needed
            self._live = np.union1d(self._live, new_ids)

    def remove(self, ids: Iterable[int]) -> int:
        """Delete ``ids`` and compact; return how many were present."""
        wanted = unique_ids(ids)
        with self._lock.write():
            hit = wanted[in_sorted(self._live, wanted)]
            if hit.size == 0:
                return 0
            keep = ~in_sorted(hit, self._labels[: self._count])
            kept = int(keep.sum())
            vectors = np.empty_like(self._vectors)
            vectors[:kept] = self._vectors[: self._count][keep]
            labels = np.empty_like(self._labels)
            labels[:kept] = self._labels[: self._count][keep]
            # Fresh arrays: the removed rows are not left behind in a reused buffer.
            self._vectors, self._labels, self._count = vectors, labels, kept
            self._live = np.setdiff1d(self._live, hit, assume_unique=True)
            return int(hit.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` by inner product; see the ``VectorIndex`` contract."""
        q = check_queries(queries, k, self._dimension)
        with self._lock.read():
            return exact_top_k(q, self._vectors[: self._count], self._labels[: self._count], int(k))

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._live.copy()

    def vectors(self) -> tuple[IdArray, FloatArray]:
        """Copies of all ``(ids, vectors)`` in insertion order (ground truth for tests and benchmarks)."""
        with self._lock.read():
            return self._labels[: self._count].copy(), self._vectors[: self._count].copy()

    def to_bytes(self) -> bytes:
        """Serialise ids and vectors (little-endian int64 and float32)."""
        with self._lock.read():
            sections = {
                "ids": self._labels[: self._count].astype("<i8").tobytes(),
                "vectors": self._vectors[: self._count].astype("<f4").tobytes(),
            }
            return pack_payload(KIND, self._dimension, self._count, sections)

    @classmethod
    def from_payload(cls, payload: Payload) -> ExactIndex:
        """Rebuild an index from :meth:`to_bytes` output already split by ``unpack_payload``."""
        try:
            ids = ids_from_bytes(payload.sections["ids"], payload.count)
            vectors = vectors_from_bytes(payload.sections["vectors"], payload.count, payload.dimension)
        except KeyError as exc:
            raise IndexCorrupt(f"exact index payload lacks section {exc}") from exc
        index = cls(payload.dimension)
        try:
            index.add(ids, vectors)
        except ValueError as exc:
            raise IndexCorrupt(f"exact index payload is inconsistent: {exc}") from exc
        return index
