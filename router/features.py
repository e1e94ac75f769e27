"""Per-(query, silo) features computed from silo cards, shared by the routers.

For one query and each silo with a usable card: the best centroid cosine similarity,
the mean of the top-3 similarities, a softmax-weighted similarity (temperature 0.1),
the similarity to the silo's description embedding (0 when unknown), the silo's
``log1p(chunk_count)`` divided by the largest among the silos routed together, and the
gap between the silo's best similarity and the best silo's (0 for the best silo).

The learned router's model file records :data:`FEATURE_SET` and :data:`FEATURE_NAMES`;
changing how a feature is computed means bumping :data:`FEATURE_SET`, so that an old
model file is refused instead of silently misread.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from federation.protocol import Matrix, SiloCard
from router.base import SiloView, card_problem

FEATURE_SET = "card-sims-v1"
FEATURE_NAMES: tuple[str, ...] = (
    "max_centroid_sim",
    "mean_top3_centroid_sim",
    "softmax_centroid_sim",
    "description_sim",
    "log_chunks_normalised",
    "gap_to_best_max_sim",
)
TOP_N = 3
SOFTMAX_TEMPERATURE = 0.1


def centroid_similarities(unit_query: np.ndarray, card: SiloCard) -> np.ndarray:
    """Cosine similarity between a unit-length query and each centroid of a card.

    Centroids are renormalised (k-means centroids and noised ones are not unit length);
    a zero centroid has similarity 0. Decoded centroids are cached per card content, so
    routing many questions against the same cards decodes each card once.

    Args:
        unit_query: the query, 1-D and unit length, of the card's dimension.
        card: a card with at least one centroid.

    Returns:
        One similarity per centroid, float64.
    """
    centroids = _unit_centroids(card.centroids.rows, card.centroids.dimension, card.centroids.data)
    result: np.ndarray = centroids @ unit_query
    return result


@functools.lru_cache(maxsize=256)
def _unit_centroids(rows: int, dimension: int, data: str) -> np.ndarray:
    centroids = Matrix(rows=rows, dimension=dimension, data=data).to_numpy().astype(np.float64)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(centroids, norms, out=np.zeros_like(centroids), where=norms > 0)
    unit.setflags(write=False)
    return unit


def usable(view: SiloView, dimension: int) -> bool:
    """Whether a silo has a non-empty card compatible with a query of ``dimension``."""
    return view.card is not None and card_problem(view.card, dimension) is None


def feature_matrix(unit_query: np.ndarray, views: Sequence[SiloView]) -> np.ndarray:
    """Features of each silo for one query, one row per view, columns :data:`FEATURE_NAMES`.

    Args:
        unit_query: the query, 1-D and unit length.
        views: silos that are :func:`usable` for this query (the caller filters).

    Returns:
        A float64 array of shape (len(views), len(FEATURE_NAMES)).
    """
    rows = np.zeros((len(views), len(FEATURE_NAMES)), dtype=np.float64)
    log_chunks = np.array([np.log1p(v.card.chunk_count) if v.card is not None else 0.0 for v in views])
    largest = float(log_chunks.max()) if len(views) else 0.0
    for i, view in enumerate(views):
        assert view.card is not None  # guaranteed by usable(); narrows the type
        sims = centroid_similarities(unit_query, view.card)
        top = np.sort(sims)[::-1][:TOP_N]
        weights = np.exp((sims - sims.max()) / SOFTMAX_TEMPERATURE)
        rows[i, 0] = sims.max()
        rows[i, 1] = top.mean()
        rows[i, 2] = float(weights @ sims / weights.sum())
        rows[i, 3] = _description_sim(unit_query, view.description_vector)
        rows[i, 4] = log_chunks[i] / largest if largest > 0 else 0.0
    if len(views):
        rows[:, 5] = rows[:, 0] - rows[:, 0].max()
    return rows


def _description_sim(unit_query: np.ndarray, vector: np.ndarray | None) -> float:
    if vector is None or vector.shape != unit_query.shape:
        return 0.0
    norm = float(np.linalg.norm(vector))
    return float(vector.astype(np.float64) @ unit_query / norm) if norm > 0 else 0.0
