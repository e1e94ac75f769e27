"""hnswlib backend: an HNSW graph in ``ip`` space that grows as vectors arrive.

Removal uses hnswlib's ``mark_deleted`` (a tombstone searches skip); re-adding a removed
id revives its graph node with the new vector. ``to_bytes``, and a ``remove`` that leaves
more tombstones than live vectors, rebuild the graph from the live vectors only, so a
removed vector never reaches disk.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from federation.config import IndexSettings
from silo_node.index.base import (
    FloatArray,
    IdArray,
    IndexCorrupt,
    Payload,
    ReadWriteLock,
    check_add,
    check_dimension,
    check_queries,
    empty_results,
    exact_top_k,
    in_sorted,
    pack_payload,
    unique_ids,
)

logger = logging.getLogger(__name__)

KIND = "hnswlib"

_MIN_CAPACITY = 1024
_RANDOM_SEED = 100


class HnswlibIndex:
    """:class:`~silo_node.index.base.VectorIndex` on hnswlib (see the module docstring).

    Thread safety as in the ``VectorIndex`` contract.
    """

    def __init__(self, settings: IndexSettings, dimension: int) -> None:
        """Create an empty graph for vectors of length ``dimension``."""
        self._settings = settings.model_copy()
        self._dimension = check_dimension(dimension)
        self._lock = ReadWriteLock()
        self._ef_search = settings.hnsw_ef_search
        self._index: Any = self._new_graph(_MIN_CAPACITY)
        self._live: IdArray = np.empty(0, dtype=np.int64)  # sorted live ids
        self._dead: IdArray = np.empty(0, dtype=np.int64)  # sorted tombstoned ids still in the graph
        self._version = 0

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._dimension

    @property
    def kind(self) -> str:
        """Always ``hnswlib``."""
        return KIND

    def __len__(self) -> int:
        """Number of live vectors."""
        return int(self._live.size)

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._live.copy()

    def tune(self, *, ef_search: int | None = None) -> None:
        """Change the search beam width ``ef`` without rebuilding (not part of ``VectorIndex``)."""
        with self._lock.write():
            if ef_search is not None:
                self._ef_search = max(1, int(ef_search))
                self._index.set_ef(self._ef_search)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors, growing the graph's capacity as needed."""
        new_ids, new_vectors = check_add(ids, vectors, self._dimension)
        if new_ids.size == 0:
            return
        with self._lock.write():
            present = in_sorted(self._live, new_ids)
            if present.any():
                raise ValueError(f"id {int(new_ids[present][0])} is already in the index")
            revived = in_sorted(self._dead, new_ids)
            needed = int(self._index.element_count) + int((~revived).sum())
            capacity = int(self._index.max_elements)
            if needed > capacity:
                self._index.resize_index(max(needed, 2 * capacity))
            # An id tombstoned earlier keeps its graph node: hnswlib un-deletes it and
            # overwrites its vector with the new one.
            self._index.add_items(new_vectors, new_ids.astype(np.uint64))
            if revived.any():
                self._dead = np.setdiff1d(self._dead, new_ids[revived], assume_unique=True)
            self._live = np.union1d(self._live, new_ids)
            self._version += 1

    def remove(self, ids: Iterable[int]) -> int:
        """Tombstone ids; return how many were present."""
        wanted = unique_ids(ids)
        with self._lock.write():
            hit = wanted[in_sorted(self._live, wanted)]
            if hit.size == 0:
                return 0
            for label in hit.tolist():
                self._index.mark_deleted(label)
            self._live = np.setdiff1d(self._live, hit, assume_unique=True)
            self._dead = np.union1d(self._dead, hit)
            self._version += 1
            if self._dead.size > self._live.size:
                logger.info("compacting hnswlib index: %d tombstones, %d live", self._dead.size, self._live.size)
                self._index, self._dead = self._compacted(), np.empty(0, dtype=np.int64)
            return int(hit.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product; see the ``VectorIndex`` contract."""
        q = check_queries(queries, k, self._dimension)
        k = int(k)
        scores, ids = empty_results(q.shape[0], k)
        with self._lock.read():
            width = min(k, int(self._live.size))
            if width == 0 or q.shape[0] == 0:
                return scores, ids
            try:
                labels, distances = self._index.knn_query(q, k=width)
            except RuntimeError:
                # hnswlib refuses when the beam finds fewer than ``width`` live nodes
                # (many tombstones, tiny graphs): answer those exactly instead.
                logger.debug("hnswlib returned fewer than %d results; falling back to exact search", width)
                live_vectors = np.asarray(self._index.get_items(self._live), dtype=np.float32)
                return exact_top_k(q, live_vectors, self._live, k)
        ids[:, :width] = labels.astype(np.int64)
        scores[:, :width] = 1.0 - distances
        return scores, ids

    def to_bytes(self) -> bytes:
        """Serialise the graph (hnswlib's file format); tombstones are compacted away first."""
        with self._lock.read():
            version = self._version
            compacted = self._compacted() if self._dead.size else None
            graph = compacted if compacted is not None else self._index
            with tempfile.TemporaryDirectory(prefix="fedrag-hnswlib-") as tmp:
                path = Path(tmp) / "graph.bin"
                graph.save_index(str(path))
                blob = path.read_bytes()
            data = pack_payload(KIND, self._dimension, int(self._live.size), {"graph": blob})
        if compacted is not None:
            with self._lock.write():
                if self._version == version:  # nothing changed meanwhile: keep the compact graph
                    self._index, self._dead = compacted, np.empty(0, dtype=np.int64)
        return data

    @classmethod
    def from_payload(cls, payload: Payload, settings: IndexSettings) -> HnswlibIndex:
        """Rebuild an index from :meth:`to_bytes` output already split by ``unpack_payload``."""
        if payload.kind != KIND:
            raise IndexCorrupt(f"payload holds a {payload.kind!r} index, not an hnswlib one")
        if "graph" not in payload.sections:
            raise IndexCorrupt("hnswlib payload lacks its graph section")
        index = cls(settings, payload.dimension)
        graph = hnswlib.Index(space="ip", dim=payload.dimension)
        with tempfile.TemporaryDirectory(prefix="fedrag-hnswlib-") as tmp:
            path = Path(tmp) / "graph.bin"
            path.write_bytes(payload.sections["graph"])
            try:
                graph.load_index(str(path), max_elements=max(payload.count, _MIN_CAPACITY))
            except RuntimeError as exc:
                raise IndexCorrupt(f"hnswlib could not read the graph: {exc}") from exc
        labels = np.asarray(graph.get_ids_list(), dtype=np.int64)
        live = np.unique(labels)
        if graph.dim != payload.dimension or live.size != labels.size or live.size != payload.count:
            raise IndexCorrupt(
                f"hnswlib graph has dim={graph.dim} and {labels.size} labels; header says "
                f"dimension={payload.dimension}, count={payload.count}"
            )
        graph.set_ef(index._ef_search)
        with index._lock.write():
            index._index, index._live = graph, live
        return index

    # -- internals --------------------------------------------------------------------

    def _new_graph(self, capacity: int) -> Any:
        graph = hnswlib.Index(space="ip", dim=self._dimension)
        graph.init_index(
            max_elements=max(capacity, _MIN_CAPACITY),
            M=self._settings.hnsw_m,
            ef_construction=self._settings.hnsw_ef_construction,
            random_seed=_RANDOM_SEED,
        )
        graph.set_ef(self._ef_search)
        return graph

    def _compacted(self) -> Any:
        """A new graph holding only the live vectors (caller holds the lock)."""
        graph = self._new_graph(int(self._live.size))
        if self._live.size:
            vectors: FloatArray = np.asarray(self._index.get_items(self._live), dtype=np.float32)
            graph.add_items(vectors, self._live.astype(np.uint64))
        return graph
