from __future__ import annotations

import numpy as np
import pytest

from federation.config import CardSettings, ReleasePolicySettings
from federation.membership import EmbeddingSpec
from silo_node.card import build_card, spherical_kmeans

pytestmark = pytest.mark.unit
SPEC = EmbeddingSpec(model="m", dimension=16, fingerprint="sha256:0123456789")


def clustered(seed: int = 0, per: int = 50, clusters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = np.repeat(centres, per, axis=0) + rng.normal(scale=0.05, size=(clusters * per, 16))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), centres


def test_kmeans_finds_the_clusters() -> None:
    points, centres = clustered()
    found = spherical_kmeans(points, 4, seed=0)
    assert found.shape == (4, 16)
    assert (found @ centres.T).max(axis=0).min() > 0.99  # every true centre has a centroid next to it


def test_fewer_vectors_than_centroids_and_empty_silo() -> None:
    points, _ = clustered(per=1, clusters=3)
    assert spherical_kmeans(points, 16, seed=0).shape == (3, 16)
    assert spherical_kmeans(np.zeros((0, 16), np.float32), 16, seed=0).shape == (0, 16)
    card = build_card(
        name="s",
        description="",
        embedding=SPEC,
        chunk_count=0,
        vectors=np.zeros((0, 16), np.float32),
        policy=ReleasePolicySettings(),
        settings=CardSettings(),
    )
    assert card.centroids.rows == 0 and card.chunk_count == 0


def test_count_rounding_and_centroid_noise() -> None:
    points, _ = clustered()
    exact = build_card(
        name="s",
        description="d",
        embedding=SPEC,
        chunk_count=1234,
        vectors=points,
        policy=ReleasePolicySettings(),
        settings=CardSettings(centroids=4),
    )
    private = build_card(
        name="s",
        description="d",
        embedding=SPEC,
        chunk_count=1234,
        vectors=points,
        policy=ReleasePolicySettings(),
        settings=CardSettings(centroids=4, count_round_to=100, centroid_noise_std=0.2),
    )
    assert exact.chunk_count == 1234 and private.chunk_count == 1200
    a, b = exact.centroids.to_numpy(), private.centroids.to_numpy()
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert 0.3 < float(np.mean(np.sum(a * b, axis=1))) < 0.999  # moved, but still pointing the same way
    noisy = build_card(
        name="s",
        description="d",
        embedding=SPEC,
        chunk_count=1234,
        vectors=points,
        policy=ReleasePolicySettings(),
        settings=CardSettings(count_noise_scale=50.0, seed=3),
    )
    assert noisy.chunk_count != 1234 and noisy.chunk_count >= 0
