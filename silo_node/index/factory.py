"""Choose a backend from settings, and turn serialised payloads back into indexes."""

from __future__ import annotations

from federation.config import IndexSettings
from silo_node.index.base import IndexCorrupt, VectorIndex, check_dimension, unpack_payload
from silo_node.index.exact import KIND as EXACT_KIND
from silo_node.index.exact import ExactIndex
from silo_node.index.faiss_index import KIND_FLAT, FaissIndex
from silo_node.index.hnsw_index import KIND as HNSWLIB_KIND
from silo_node.index.hnsw_index import HnswlibIndex


def make_index(settings: IndexSettings, dimension: int) -> VectorIndex:
    """Return an empty index of the backend ``settings.backend`` for vectors of length ``dimension``.

    Raises:
        ValueError: ``dimension`` is below 1.
    """
    dimension = check_dimension(dimension)
    if settings.backend == "exact":
        return ExactIndex(dimension)
    if settings.backend == "hnswlib":
        return HnswlibIndex(settings, dimension)
    return FaissIndex(settings, dimension)


def kinds_for(settings: IndexSettings) -> tuple[str, ...]:
    """The index kinds a node configured with ``settings`` accepts from disk."""
    if settings.backend == "exact":
        return (EXACT_KIND,)
    if settings.backend == "hnswlib":
        return (HNSWLIB_KIND,)
    return (KIND_FLAT, f"faiss-{settings.faiss_approximate}")


def index_from_bytes(data: bytes | memoryview, settings: IndexSettings, dimension: int) -> VectorIndex:
    """Rebuild an index from :meth:`VectorIndex.to_bytes` output.

    Search-time parameters (``hnsw_ef_search``, ``ivf_nprobe``, ``use_gpu``) come from
    ``settings``, not from the payload.

    Raises:
        IndexCorrupt: the payload is malformed, holds another dimension, or holds a kind
            of index that ``settings`` do not select (rebuild the index from the store).
    """
    payload = unpack_payload(data)
    if payload.dimension != dimension:
        raise IndexCorrupt(f"index holds {payload.dimension}-dimensional vectors, expected {dimension}")
    accepted = kinds_for(settings)
    if payload.kind not in accepted:
        raise IndexCorrupt(
            f"index is of kind {payload.kind!r} but settings select backend {settings.backend!r} "
            f"(accepted kinds: {', '.join(accepted)})"
        )
    index: VectorIndex
    if payload.kind == EXACT_KIND:
        index = ExactIndex.from_payload(payload)
    elif payload.kind == HNSWLIB_KIND:
        index = HnswlibIndex.from_payload(payload, settings)
    else:
        index = FaissIndex.from_payload(payload, settings)
    if len(index) != payload.count:
        raise IndexCorrupt(f"index holds {len(index)} vectors, header says {payload.count}")
    return index


def set_search_threads(threads: int) -> None:
    """Set how many OpenMP threads FAISS uses inside one search (process-wide).

    A node answers one query per request from its own worker pool; letting each query
    also fan out over every core makes single-query search slower on small machines.
    """
    import faiss

    faiss.omp_set_num_threads(threads)
