"""The silo node's vector indexes: one contract, three backends, atomic persistence.

``make_index(settings, dimension)`` picks the backend from
:class:`federation.config.IndexSettings`; ``save_index`` / ``load_index`` persist any of
them as one checksummed file.
"""

from __future__ import annotations

from silo_node.index.base import IndexCorrupt, VectorIndex
from silo_node.index.exact import ExactIndex
from silo_node.index.factory import index_from_bytes, make_index, set_search_threads
from silo_node.index.faiss_index import FaissIndex
from silo_node.index.hnsw_index import HnswlibIndex
from silo_node.index.persist import load_index, save_index

__all__ = [
    "ExactIndex",
    "FaissIndex",
    "HnswlibIndex",
    "IndexCorrupt",
    "VectorIndex",
    "index_from_bytes",
    "load_index",
    "make_index",
    "save_index",
    "set_search_threads",
]
