"""Split a corpus into silos three ways: natural, topical (non-IID) and IID.

- ``natural``: one silo per source (the corpus a document came from; the Python
  documentation by its top-level folder), as data owners would hold it.
- ``topical``: spherical k-means over the documents' embeddings, one silo per cluster:
  each silo holds a few topics, the non-IID case routing is for.
- ``iid``: a seeded random split into equal parts: every silo looks like the whole.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from federation.config import ChunkingSettings
from federation.encoder import Encoder
from silo_node.card import spherical_kmeans
from silo_node.ingest.chunking import chunk_text
from silo_node.ingest.readers import SourceDocument

__all__ = ["PARTITIONS", "PartitionName", "document_vectors", "natural_source", "partition_documents"]

PartitionName = Literal["natural", "topical", "iid"]
PARTITIONS: tuple[PartitionName, ...] = ("natural", "topical", "iid")


def natural_source(document: SourceDocument) -> str:
    """The silo a document belongs to naturally: its corpus; Python docs by top-level folder."""
    corpus = str(document.metadata.get("corpus") or "documents")
    if corpus == "python-docs":
        path = document.doc_id.split(":", 1)[-1].split("#", 1)[0]
        folder = path.split("/", 1)[0] if "/" in path else "other"
        return f"python-{folder}"
    return corpus


def document_vectors(documents: Sequence[SourceDocument], encoder: Encoder, chunking: ChunkingSettings) -> np.ndarray:
    """One unit vector per document: the mean of its chunks' embeddings.

    The chunks are cut as a silo cuts them, so with a caching encoder the vectors are
    reused when the silos ingest the same documents.
    """
    chunks = [chunk_text(d.text, max_chars=chunking.max_chars, overlap_chars=chunking.overlap_chars) for d in documents]
    flat = [text for texts in chunks for text in texts]
    vectors = encoder.encode(flat, batch_size=chunking.batch_size) if flat else np.zeros((0, encoder.dimension))
    result = np.zeros((len(documents), encoder.dimension), dtype=np.float32)
    offset = 0
    for i, texts in enumerate(chunks):
        if texts:
            mean = vectors[offset : offset + len(texts)].mean(axis=0)
            result[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        offset += len(texts)
    return result


def partition_documents(
    documents: Sequence[SourceDocument],
    strategy: PartitionName,
    *,
    silos: int,
    vectors: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, list[SourceDocument]]:
    """Assign every document to exactly one silo.

    Args:
        documents: the corpus (ids unique).
        strategy: ``natural``, ``topical`` or ``iid``.
        silos: number of silos for ``topical`` and ``iid`` (ignored by ``natural``).
        vectors: one unit vector per document (``topical`` only; see :func:`document_vectors`).
        seed: seeds k-means and the random split.

    Returns:
        Silo name -> its documents, names sorted, no silo empty.
    """
    if not documents:
        raise ValueError("cannot partition an empty corpus")
    if strategy == "natural":
        groups: dict[str, list[SourceDocument]] = defaultdict(list)
        for document in documents:
            groups[natural_source(document)].append(document)
        return dict(sorted(groups.items()))
    if silos < 1:
        raise ValueError(f"silos must be at least 1, got {silos}")
    silos = min(silos, len(documents))
    width = len(str(silos - 1))
    if strategy == "iid":
        order = list(range(len(documents)))
        random.Random(seed).shuffle(order)
        return {f"iid-{i:0{width}d}": [documents[j] for j in sorted(order[i::silos])] for i in range(silos)}
    if strategy == "topical":
        if vectors is None or len(vectors) != len(documents):
            raise ValueError("the topical partition needs one vector per document")
        centroids = spherical_kmeans(vectors, silos, seed=seed)
        assign = np.argmax(vectors @ centroids.T, axis=1)
        clusters = [[documents[int(j)] for j in np.flatnonzero(assign == i)] for i in range(len(centroids))]
        clusters = sorted((c for c in clusters if c), key=len, reverse=True)
        width = len(str(len(clusters) - 1))
        return {f"topic-{i:0{width}d}": cluster for i, cluster in enumerate(clusters)}
    raise ValueError(f"unknown partition '{strategy}': choose one of {', '.join(PARTITIONS)}")
