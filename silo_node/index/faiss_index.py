"""FAISS backend: exact flat search while small, HNSW or IVF once past a threshold.

While the index holds at most ``settings.approximate_threshold`` vectors it is an
``IndexIDMap2`` over ``IndexFlatIP`` (``faiss-flat``: exact). The ``add`` that takes it
past the threshold rebuilds it, keeping every id, into the configured approximate kind:

* ``faiss-hnsw``: ``IndexHNSWFlat`` with the inner-product metric. FAISS cannot delete
  from an HNSW graph, so removal leaves tombstones that searches filter out with an
  ``IDSelectorBitmap`` (so ``k`` live results still come back). ``to_bytes`` and a
  ``remove`` that leaves more tombstones than live vectors rebuild the graph without them.
* ``faiss-ivf``: ``IndexIVFFlat`` (inner product, spherical k-means with
  ``ivf_nlist`` lists, default ``4 * sqrt(n)``) trained on the vectors held at the
  crossing. It removes vectors for real.

When ``settings.use_gpu`` is set and FAISS reports a GPU, flat and IVF indexes are
mirrored on GPU 0 for search; the CPU index stays the one that is mutated and saved.
On machines without a GPU no GPU code path is entered.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

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
    ids_from_bytes,
    in_sorted,
    pack_payload,
    pad_results,
    unique_ids,
)

logger = logging.getLogger(__name__)

KIND_FLAT = "faiss-flat"
KIND_HNSW = "faiss-hnsw"
KIND_IVF = "faiss-ivf"
KINDS = (KIND_FLAT, KIND_HNSW, KIND_IVF)

_GPU_MAX_K = 2048


def gpu_available(settings: IndexSettings) -> bool:
    """True when settings ask for the GPU and this FAISS build sees at least one."""
    if not settings.use_gpu or not hasattr(faiss, "StandardGpuResources"):
        return False
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return get_num_gpus is not None and int(get_num_gpus()) > 0


def default_nlist(n: int, configured: int | None) -> int:
    """IVF list count: the configured one, else ``4 * sqrt(n)``; never more than ``n``."""
    nlist = configured if configured is not None else int(4 * math.sqrt(n))
    return max(1, min(nlist, n))


class FaissIndex:
    """:class:`~silo_node.index.base.VectorIndex` on FAISS (see the module docstring).

    Thread safety as in the ``VectorIndex`` contract; GPU searches are serialised
    internally because a FAISS GPU resource object is not thread-safe.
    """

    def __init__(self, settings: IndexSettings, dimension: int) -> None:
        """Create an empty (flat) index for vectors of length ``dimension``."""
        self._settings = settings.model_copy()
        self._dimension = check_dimension(dimension)
        self._lock = ReadWriteLock()
        self._ef_search = settings.hnsw_ef_search
        self._nprobe = settings.ivf_nprobe
        self._use_gpu = gpu_available(settings)
        self._gpu_lock = threading.Lock()
        self._gpu_resources: Any = None
        self._gpu_index: Any = None
        self._kind = KIND_FLAT
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dimension))
        self._live: IdArray = np.empty(0, dtype=np.int64)  # sorted live ids
        # faiss-hnsw only: graph position -> id, which positions are live, and the filter.
        self._labels: IdArray = np.empty(0, dtype=np.int64)
        self._alive: npt.NDArray[np.bool_] = np.empty(0, dtype=bool)
        self._n_dead = 0
        self._selector: tuple[Any, np.ndarray] | None = None
        self._version = 0
        self._sync_gpu()

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._dimension

    @property
    def kind(self) -> str:
        """``faiss-flat`` below the threshold, then ``faiss-hnsw`` or ``faiss-ivf``."""
        return self._kind

    @property
    def on_gpu(self) -> bool:
        """Whether searches currently run on a GPU replica."""
        return self._gpu_index is not None

    def __len__(self) -> int:
        """Number of live vectors."""
        return int(self._live.size)

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        return self._live.copy()

    def tune(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change search-time effort (HNSW ``efSearch``, IVF ``nprobe``) without rebuilding.

        Not part of ``VectorIndex``; used by benchmarks and operators trading recall for speed.
        """
        with self._lock.write():
            if ef_search is not None:
                self._ef_search = max(1, int(ef_search))
                if self._kind == KIND_HNSW:
                    self._index.hnsw.efSearch = self._ef_search
            if nprobe is not None:
                self._nprobe = max(1, int(nprobe))
                if self._kind == KIND_IVF:
                    self._index.nprobe = self._nprobe
                    self._sync_gpu()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, crossing into the approximate kind when the threshold is passed."""
        new_ids, new_vectors = check_add(ids, vectors, self._dimension)
        if new_ids.size == 0:
            return
        with self._lock.write():
            present = in_sorted(self._live, new_ids)
            if present.any():
                raise ValueError(f"id {int(new_ids[present][0])} is already in the index")
            total = self._live.size + new_ids.size
            if self._kind == KIND_FLAT and total > self._settings.approximate_threshold:
                old_ids, old_vectors = self._flat_contents()
                all_ids = np.concatenate([old_ids, new_ids])
                all_vectors = np.concatenate([old_vectors, new_vectors])
                logger.info(
                    "index crossed approximate_threshold=%d with %d vectors: rebuilding as faiss-%s",
                    self._settings.approximate_threshold,
                    total,
                    self._settings.faiss_approximate,
                )
                self._build_approximate(all_ids, all_vectors)
                self._sync_gpu()
            elif self._kind == KIND_HNSW:
                self._index.add(new_vectors)
                self._labels = np.concatenate([self._labels, new_ids])
                self._alive = np.concatenate([self._alive, np.ones(new_ids.size, dtype=bool)])
                self._refresh_selector()
            else:
                self._index.add_with_ids(new_vectors, new_ids)
                self._gpu_add(new_ids, new_vectors)
            self._live = np.union1d(self._live, new_ids)
            self._version += 1

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (tombstones for HNSW, real deletion otherwise); return how many were present."""
        wanted = unique_ids(ids)
        with self._lock.write():
            hit = wanted[in_sorted(self._live, wanted)]
            if hit.size == 0:
                return 0
            self._live = np.setdiff1d(self._live, hit, assume_unique=True)
            self._version += 1
            if self._kind == KIND_HNSW:
                doomed = self._alive & in_sorted(hit, self._labels)
                self._alive = self._alive & ~doomed
                self._n_dead += int(doomed.sum())
                if self._n_dead > self._live.size:
                    logger.info("compacting faiss-hnsw index: %d tombstones, %d live", self._n_dead, self._live.size)
                    self._build_approximate(*self._hnsw_live_contents())
                else:
                    self._refresh_selector()
            else:
                removed = int(self._index.remove_ids(hit))
                if removed != hit.size:
                    logger.error("faiss removed %d of %d ids", removed, hit.size)
                self._sync_gpu()
            return int(hit.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product; see the ``VectorIndex`` contract."""
        q = check_queries(queries, k, self._dimension)
        k = int(k)
        with self._lock.read():
            if self._live.size == 0 or q.shape[0] == 0:
                return empty_results(q.shape[0], k)
            if self._gpu_index is not None and k <= _GPU_MAX_K:
                with self._gpu_lock:
                    scores, ids = self._gpu_index.search(q, k)
            elif self._kind == KIND_HNSW:
                if self._selector is not None:
                    params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                        efSearch=self._ef_search, sel=self._selector[0]
                    )
                    scores, positions = self._index.search(q, k, params=params)
                else:
                    scores, positions = self._index.search(q, k)
                ids = np.where(positions >= 0, self._labels[np.maximum(positions, 0)], -1)
            else:
                scores, ids = self._index.search(q, k)
            return pad_results(scores, ids, k)

    def to_bytes(self) -> bytes:
        """Serialise with ``faiss.serialize_index``; HNSW tombstones are compacted away first."""
        with self._lock.read():
            version = self._version
            compacted: tuple[Any, IdArray] | None = None
            if self._kind == KIND_HNSW and self._n_dead:
                compacted = _build_hnsw(self._settings, self._ef_search, *self._hnsw_live_contents())
                index, labels = compacted
            else:
                index, labels = self._index, self._labels
            sections = {"index": faiss.serialize_index(index).tobytes()}
            if self._kind == KIND_HNSW:
                sections["labels"] = labels.astype("<i8").tobytes()
            data = pack_payload(self._kind, self._dimension, int(self._live.size), sections)
        if compacted is not None:
            with self._lock.write():
                if self._version == version:  # nothing changed meanwhile: keep the compact graph
                    self._set_hnsw(*compacted)
        return data

    @classmethod
    def from_payload(cls, payload: Payload, settings: IndexSettings) -> FaissIndex:
        """Rebuild an index from :meth:`to_bytes` output already split by ``unpack_payload``."""
        if payload.kind not in KINDS:
            raise IndexCorrupt(f"payload holds a {payload.kind!r} index, not a FAISS one")
        try:
            blob = payload.sections["index"]
            raw = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except KeyError as exc:
            raise IndexCorrupt(f"FAISS payload lacks section {exc}") from exc
        except RuntimeError as exc:
            raise IndexCorrupt(f"FAISS could not read the index: {exc}") from exc
        if raw.d != payload.dimension or raw.ntotal < payload.count:
            raise IndexCorrupt(
                f"FAISS index has d={raw.d}, ntotal={raw.ntotal}; "
                f"header says dimension={payload.dimension}, count={payload.count}"
            )
        if raw.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexCorrupt("FAISS index does not use the inner-product metric")
        index = cls(settings, payload.dimension)
        with index._lock.write():
            index._kind = payload.kind
            if payload.kind == KIND_FLAT and isinstance(raw, faiss.IndexIDMap2):
                index._index = raw
                live = faiss.vector_to_array(raw.id_map).astype(np.int64)
            elif payload.kind == KIND_HNSW and isinstance(raw, faiss.IndexHNSWFlat):
                labels = ids_from_bytes(payload.sections.get("labels", b""), int(raw.ntotal))
                index._set_hnsw(raw, labels)
                live = labels
            elif payload.kind == KIND_IVF and isinstance(raw, faiss.IndexIVFFlat):
                raw.nprobe = index._nprobe
                index._index = raw
                live = _ivf_ids(raw)
            else:
                raise IndexCorrupt(f"payload says {payload.kind} but holds a {type(raw).__name__}")
            index._live = np.unique(live)
            if index._live.size != payload.count or index._live.size != live.size or (live < 0).any():
                raise IndexCorrupt(f"FAISS index ids do not match the header ({live.size} ids, count {payload.count})")
            index._sync_gpu()
        return index

    # -- internals (callers hold the write lock) ------------------------------------

    def _flat_contents(self) -> tuple[IdArray, FloatArray]:
        n = int(self._index.ntotal)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, n) if n else np.empty((0, self._dimension), np.float32)
        return ids, np.ascontiguousarray(vectors, dtype=np.float32)

    def _hnsw_live_contents(self) -> tuple[IdArray, FloatArray]:
        vectors = self._index.reconstruct_n(0, int(self._index.ntotal))
        return self._labels[self._alive].copy(), np.ascontiguousarray(vectors[self._alive], dtype=np.float32)

    def _build_approximate(self, ids: IdArray, vectors: FloatArray) -> None:
        if self._settings.faiss_approximate == "hnsw":
            self._kind = KIND_HNSW
            self._set_hnsw(*_build_hnsw(self._settings, self._ef_search, ids, vectors))
            return
        nlist = default_nlist(ids.size, self._settings.ivf_nlist)
        quantizer = faiss.IndexFlatIP(self._dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self._dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True
        ivf.cp.min_points_per_centroid = 1  # 4*sqrt(n) lists hold sqrt(n)/4 points: no warning
        ivf.train(vectors)
        ivf.add_with_ids(vectors, ids)
        ivf.nprobe = self._nprobe
        self._kind, self._index = KIND_IVF, ivf
        self._labels, self._alive, self._n_dead, self._selector = np.empty(0, np.int64), np.empty(0, bool), 0, None

    def _set_hnsw(self, index: Any, labels: IdArray) -> None:
        index.hnsw.efSearch = self._ef_search
        self._index, self._labels = index, labels
        self._alive = np.ones(labels.size, dtype=bool)
        self._n_dead, self._selector = 0, None

    def _refresh_selector(self) -> None:
        if self._n_dead == 0:
            self._selector = None
            return
        bitmap = np.packbits(self._alive, bitorder="little")
        # The selector reads ``bitmap`` without copying it: keep both alive together.
        self._selector = (faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap)), bitmap)

    def _sync_gpu(self) -> None:
        if not self._use_gpu or self._kind == KIND_HNSW:
            self._gpu_index = None
            return
        try:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            clone = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
            if self._kind == KIND_IVF:
                faiss.GpuParameterSpace().set_index_parameter(clone, "nprobe", self._nprobe)
        except (RuntimeError, AttributeError) as exc:
            logger.warning("cannot mirror the %s index on the GPU, searching on CPU: %s", self._kind, exc)
            self._use_gpu, self._gpu_index = False, None
            return
        with self._gpu_lock:
            self._gpu_index = clone

    def _gpu_add(self, ids: IdArray, vectors: FloatArray) -> None:
        if self._gpu_index is None:
            return
        try:
            with self._gpu_lock:
                self._gpu_index.add_with_ids(vectors, ids)
        except RuntimeError as exc:
            logger.warning("GPU add failed (%s); re-cloning the index", exc)
            self._sync_gpu()


def _build_hnsw(settings: IndexSettings, ef_search: int, ids: IdArray, vectors: FloatArray) -> tuple[Any, IdArray]:
    index = faiss.IndexHNSWFlat(vectors.shape[1], settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = settings.hnsw_ef_construction
    index.hnsw.efSearch = ef_search
    if ids.size:
        index.add(vectors)
    return index, ids.astype(np.int64, copy=True)


def _ivf_ids(ivf: Any) -> IdArray:
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).astype(np.int64))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
