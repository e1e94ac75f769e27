"""A seeded synthetic federation for the router tests: six silos, two topics each."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from federation.membership import EmbeddingSpec
from federation.protocol import Matrix, PolicySummary, SiloCard
from router import SiloView, TrainingExample

DIM = 32
K = 10
QUERY_SPREAD = 1.0
# Per silo: spread of its vectors around its two topic centres, and vectors per topic.
SILO_SPREADS = (0.7, 0.9, 1.1, 1.3, 0.8, 1.2)
SILO_SIZES = (20, 40, 80, 160, 250, 60)


def unit(array: np.ndarray) -> np.ndarray:
    result: np.ndarray = array / np.linalg.norm(array, axis=-1, keepdims=True)
    return result


def make_card(name: str, centroids: np.ndarray, chunk_count: int) -> SiloCard:
    return SiloCard(
        name=name,
        description=f"{name} documents",
        chunk_count=chunk_count,
        embedding=EmbeddingSpec(model="m", dimension=DIM, fingerprint="sha256:0123456789"),
        centroids=Matrix.from_numpy(centroids.reshape(-1, DIM)),
        policy=PolicySummary(max_k=10, min_score=0.0, release_text=True, noisy_selection=False),
    )


@dataclass(frozen=True)
class Federation:
    """Six silos, each holding vectors around its own two topic centres."""

    centres: np.ndarray  # (12, DIM): topic t belongs to silo t // 2
    vectors: np.ndarray  # every silo's vectors, stacked
    owner: np.ndarray  # index of the silo holding each vector
    views: tuple[SiloView, ...]

    def query(self, rng: np.random.Generator, topic: int | None = None) -> np.ndarray:
        topic = int(rng.integers(len(self.centres))) if topic is None else topic
        return unit(self.centres[topic] + QUERY_SPREAD * rng.normal(size=DIM) / math.sqrt(DIM))

    def mixed_query(self, rng: np.random.Generator) -> np.ndarray:
        """A query between two random topics (often of two silos), weighted at random."""
        a, b = rng.choice(len(self.centres), size=2, replace=False)
        w = rng.uniform(0.3, 0.7)
        noise = QUERY_SPREAD * rng.normal(size=DIM) / math.sqrt(DIM)
        return unit(w * self.centres[a] + (1 - w) * self.centres[b] + 0.5 * noise)

    def examples(self, n: int, seed: int, *, with_shares: bool = True, mixed: float = 0.0) -> list[TrainingExample]:
        """Queries labelled with the silos holding the exact top-k over all silos (and their shares).

        A fraction ``mixed`` of them fall between two topics, the rest on one.
        """
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            q = self.mixed_query(rng) if rng.random() < mixed else self.query(rng)
            top = np.argsort(-(self.vectors @ q))[:K]
            counts = Counter(self.views[self.owner[i]].name for i in top)
            shares = {name: n / K for name, n in counts.items()} if with_shares else None
            out.append(TrainingExample(query=q, silos=self.views, relevant=frozenset(counts), shares=shares))
        return out


def build_federation(seed: int = 0) -> Federation:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(2 * len(SILO_SIZES), DIM)))
    vectors, owner, views = [], [], []
    for s, (spread, size) in enumerate(zip(SILO_SPREADS, SILO_SIZES, strict=True)):
        means = []
        for topic in (2 * s, 2 * s + 1):
            points = unit(centres[topic] + spread * rng.normal(size=(size, DIM)) / math.sqrt(DIM))
            vectors.append(points)
            owner += [s] * size
            means.append(points.mean(axis=0))
        description = unit(centres[2 * s] + centres[2 * s + 1] + 0.5 * rng.normal(size=DIM) / math.sqrt(DIM))
        card = make_card(f"silo{s}", np.array(means), 2 * size)
        views.append(SiloView(name=f"silo{s}", card=card, description_vector=description))
    return Federation(centres, np.vstack(vectors), np.array(owner), tuple(views))
