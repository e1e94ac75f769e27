"""The silo card: what a silo publishes about itself so gateways can route to it.

It holds the name and description, the chunk count (optionally rounded and noised), the
embedding contract, and k-means centroids of the silo's embeddings (optionally noised),
never any text.
"""

from __future__ import annotations

import numpy as np

from federation.config import CardSettings, ReleasePolicySettings
from federation.membership import EmbeddingSpec
from federation.protocol import Matrix, PolicySummary, SearchMode, SiloCard

_KMEANS_ITERATIONS = 25
_KMEANS_RESTARTS = 4


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, seed: int, iterations: int = _KMEANS_ITERATIONS, restarts: int = _KMEANS_RESTARTS
) -> np.ndarray:
    """Unit-length centroids of ``vectors`` by spherical k-means (k-means++ seeding, best of ``restarts``).

    Returns at most ``min(k, len(vectors))`` centroids; an empty input gives an empty array.
    """
    n, dim = vectors.shape
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    k = min(k, n)
    data = vectors.astype(np.float32)
    rng = np.random.default_rng(seed)
    best, best_fit = data[:k], -np.inf
    for _ in range(restarts):
        centroids = _lloyd(data, _kmeans_plus_plus(data, k, rng), iterations)
        fit = float(np.max(data @ centroids.T, axis=1).sum())
        if fit > best_fit:
            best, best_fit = centroids, fit
    return best


def _kmeans_plus_plus(data: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(data)
    centroids = np.empty((k, data.shape[1]), dtype=np.float32)
    centroids[0] = data[rng.integers(n)]
    closest = 1.0 - data @ centroids[0]  # proportional to the squared chordal distance
    for i in range(1, k):
        weights = np.clip(closest, 0.0, None)
        total = float(weights.sum())
        pick = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
        centroids[i] = data[pick]
        closest = np.minimum(closest, 1.0 - data @ centroids[i])
    return centroids


def _lloyd(data: np.ndarray, centroids: np.ndarray, iterations: int) -> np.ndarray:
    for _ in range(iterations):
        assign = np.argmax(data @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, data)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        sums[~empty] /= norms[~empty]
        sums[empty] = centroids[empty]
        if np.allclose(sums, centroids, atol=1e-6):
            break
        centroids = sums
    return centroids


def build_card(
    *,
    name: str,
    description: str,
    embedding: EmbeddingSpec,
    chunk_count: int,
    vectors: np.ndarray,
    policy: ReleasePolicySettings,
    settings: CardSettings,
    search: SearchMode = "dense",
) -> SiloCard:
    """Compute the card from a sample of the silo's vectors."""
    rng = np.random.default_rng(settings.seed + 1)
    centroids = spherical_kmeans(vectors, settings.centroids, seed=settings.seed)
    if settings.centroid_noise_std > 0 and len(centroids):
        centroids = centroids + rng.normal(0.0, settings.centroid_noise_std, centroids.shape).astype(np.float32)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    count = float(chunk_count)
    if settings.count_noise_scale > 0:
        count += float(rng.laplace(0.0, settings.count_noise_scale))
    published = max(0, round(count / settings.count_round_to) * settings.count_round_to)
    matrix = Matrix.from_numpy(centroids) if len(centroids) else Matrix(rows=0, dimension=embedding.dimension, data="")
    return SiloCard(
        name=name,
        description=description,
        chunk_count=published,
        embedding=embedding,
        centroids=matrix,
        policy=PolicySummary(
            max_k=policy.max_k,
            min_score=policy.min_score,
            release_text=policy.release_text,
            noisy_selection=policy.noisy_selection.enabled,
            epsilon_per_query=policy.noisy_selection.epsilon_per_query if policy.noisy_selection.enabled else None,
            crawl_limits=policy.crawl.enabled,
        ),
        search=search,
    )
