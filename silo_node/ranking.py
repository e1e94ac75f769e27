"""How a silo orders its chunks for a question: dense, lexical (BM25) or the two fused.

The vector index gives the dense ranking, the store's FTS5 table the lexical one; hybrid
search fuses them by reciprocal rank (Cormack, Clarke and Büttcher, SIGIR 2009). Whatever
the order, every hit is released with an inner product of normalised embeddings as its score:
the hit at rank ``r`` gets the ``r``-th best inner product among the hits, so the order the
silo chose survives a gateway that merges silos by score, and scores keep the dense scale
other silos use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fuse_ranks", "rank_scores"]


def fuse_ranks(rankings: Sequence[Sequence[int]], k0: int) -> list[int]:
    """Ids of all ``rankings`` by fused score ``sum(1 / (k0 + rank))`` (rank 1-based), best first.

    Ties keep the first ranking's order, then the next's.
    """
    fused: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(dict.fromkeys(ranking), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k0 + rank)
            first_seen.setdefault(chunk_id, len(first_seen))
    return sorted(fused, key=lambda cid: (-fused[cid], first_seen[cid]))


def rank_scores(
    order: Sequence[int], ids: np.ndarray, vectors: np.ndarray, query: np.ndarray
) -> list[tuple[float, int]]:
    """(score, id) for the ids of ``order`` that have a vector: the inner products, sorted, in that order.

    Args:
        order: chunk ids, best first, as the silo ranks them.
        ids: the chunk ids whose ``vectors`` are known (any order).
        vectors: their normalised embeddings, one row per id.
        query: the normalised query embedding.
    """
    products = dict(zip(ids.tolist(), (vectors @ query).tolist(), strict=True))
    kept = [cid for cid in order if cid in products]
    scores = sorted((products[cid] for cid in kept), reverse=True)
    return [(min(1.0, max(-1.0, s)), cid) for s, cid in zip(scores, kept, strict=True)]
