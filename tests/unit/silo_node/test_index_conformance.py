"""One conformance suite for every VectorIndex backend (exact, FAISS flat/HNSW/IVF, hnswlib).

Approximate backends are checked against exact ground truth on seeded clustered data.
The FAISS approximate variants use a low ``approximate_threshold`` so that the small
data sets here already run through the HNSW / IVF code paths.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from federation.config import IndexSettings
from federation.errors import ServerError
from silo_node.index import (
    ExactIndex,
    IndexCorrupt,
    VectorIndex,
    index_from_bytes,
    load_index,
    make_index,
    save_index,
)

pytestmark = pytest.mark.unit

DIM = 32
LOW_THRESHOLD = 16

BACKENDS: dict[str, IndexSettings] = {
    "exact": IndexSettings(backend="exact"),
    "faiss-flat": IndexSettings(backend="faiss", use_gpu=False),
    "faiss-hnsw": IndexSettings(
        backend="faiss", approximate_threshold=LOW_THRESHOLD, faiss_approximate="hnsw", use_gpu=False
    ),
    "faiss-ivf": IndexSettings(
        backend="faiss", approximate_threshold=LOW_THRESHOLD, faiss_approximate="ivf", use_gpu=False
    ),
    "hnswlib": IndexSettings(backend="hnswlib"),
}
APPROXIMATE = {"faiss-hnsw", "faiss-ivf", "hnswlib"}


def clustered(n: int, dim: int, *, seed: int, clusters: int = 16, spread: float = 1.0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture on the sphere (cluster centres uniform on it)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, clusters, n)] + spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


def sparse_ids(n: int, *, start: int = 0) -> np.ndarray:
    """Ids far from 0..n-1, so a backend that confuses positions with ids fails."""
    return (10**12 + 7 * (np.arange(n, dtype=np.int64) + start)).astype(np.int64)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / max(1, int((truth >= 0).sum()))


def expected_kind(backend: str, size: int) -> str:
    if backend in ("faiss-hnsw", "faiss-ivf"):
        return backend if size > LOW_THRESHOLD else "faiss-flat"
    return backend


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str) -> IndexSettings:
    return BACKENDS[backend]


@pytest.fixture
def filled(settings: IndexSettings) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """An index holding 300 clustered vectors under sparse ids, added in three batches."""
    vectors = clustered(300, DIM, seed=1)
    ids = sparse_ids(300)
    index = make_index(settings, DIM)
    for part in np.array_split(np.arange(300), 3):
        index.add(ids[part], vectors[part])
    return index, ids, vectors


def assert_well_formed(scores: np.ndarray, ids: np.ndarray, n_queries: int, k: int) -> None:
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (n_queries, k)
    valid = ids >= 0
    assert np.all(np.isneginf(scores[~valid])) and np.all(ids[~valid] == -1)
    assert np.all(np.isfinite(scores[valid]))
    # valid results first, then padding; scores descending; no id twice in a row
    assert np.all(np.diff(valid.astype(np.int8), axis=1) <= 0)
    for srow, irow, ok in zip(scores, ids, valid, strict=True):
        assert np.all(np.diff(srow[ok]) <= 1e-6)
        assert len(set(irow[ok].tolist())) == int(ok.sum())


def assert_scores_exact(scores: np.ndarray, ids: np.ndarray, queries: np.ndarray, table: dict[int, np.ndarray]) -> None:
    """Every returned score is the true inner product of the query with that id's vector."""
    for qi, (srow, irow) in enumerate(zip(scores, ids, strict=True)):
        for score, i in zip(srow, irow, strict=True):
            if i >= 0:
                assert score == pytest.approx(float(queries[qi] @ table[int(i)]), abs=1e-4)


def test_make_index_satisfies_protocol(backend: str, settings: IndexSettings) -> None:
    index = make_index(settings, DIM)
    assert isinstance(index, VectorIndex)
    assert index.dimension == DIM
    assert index.kind == expected_kind(backend, 0)
    assert len(index) == 0


def test_add_search_matches_exact(backend: str, filled: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled
    assert index.kind == expected_kind(backend, 300)
    assert len(index) == 300
    assert np.array_equal(index.ids(), np.sort(ids))
    queries = clustered(40, DIM, seed=2)
    scores, found = index.search(queries, 10)
    assert_well_formed(scores, found, 40, 10)
    assert_scores_exact(scores, found, queries, dict(zip(ids.tolist(), vectors, strict=True)))

    truth_index = ExactIndex(DIM)
    truth_index.add(ids, vectors)
    true_scores, truth = truth_index.search(queries, 10)
    if backend in APPROXIMATE:  # tiny data, IVF trained on 100 points: see test_recall_against_exact
        assert recall(found, truth) >= 0.8
    else:
        assert np.allclose(scores, true_scores, atol=1e-5)
        # ids agree wherever the exact ranking has no near-tie
        gaps = np.abs(np.diff(true_scores, axis=1))
        clear = np.ones_like(truth, dtype=bool)
        clear[:, 1:] &= gaps > 1e-5
        clear[:, :-1] &= gaps > 1e-5
        assert np.array_equal(found[clear], truth[clear])
    # a stored vector finds itself first
    self_scores, self_ids = index.search(vectors[:50], 1)
    assert np.array_equal(self_ids[:, 0], ids[:50])
    assert np.allclose(self_scores[:, 0], 1.0, atol=1e-4)


@pytest.mark.parametrize("size", [5, 40])
def test_padding_when_k_exceeds_len(backend: str, settings: IndexSettings, size: int) -> None:
    index = make_index(settings, DIM)
    vectors = clustered(size, DIM, seed=3)
    index.add(sparse_ids(size), vectors)
    scores, ids = index.search(vectors[:3], size + 7)
    assert_well_formed(scores, ids, 3, size + 7)
    assert np.all(ids[:, size:] == -1) and np.all(np.isneginf(scores[:, size:]))
    found = (ids >= 0).sum(axis=1)
    if index.kind == "faiss-ivf":  # IVF only scans nprobe of its lists
        assert np.all(found >= 1)
    else:
        assert np.all(found == size)


def test_empty_index(backend: str, settings: IndexSettings) -> None:
    index = make_index(settings, DIM)
    scores, ids = index.search(clustered(2, DIM, seed=4), 3)
    assert_well_formed(scores, ids, 2, 3)
    assert np.all(ids == -1)
    assert index.ids().dtype == np.int64 and index.ids().size == 0
    assert index.remove([1, 2]) == 0
    restored = index_from_bytes(index.to_bytes(), settings, DIM)
    assert len(restored) == 0 and restored.kind == index.kind
    scores, ids = index.search(np.empty((0, DIM), dtype=np.float32), 3)
    assert scores.shape == ids.shape == (0, 3)


def test_removed_ids_never_come_back(
    backend: str, settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    index, ids, vectors = filled
    gone = ids[::3]
    assert index.remove([*gone.tolist(), 42, int(gone[0])]) == gone.size  # unknown and repeated ids ignored
    assert index.remove(gone.tolist()) == 0
    assert len(index) == 300 - gone.size
    assert not np.isin(index.ids(), gone).any()

    def check(idx: VectorIndex) -> None:
        _, found = idx.search(vectors[::3], 300)
        assert not np.isin(found, gone).any()
        _, top = idx.search(vectors[1::3][:50], 1)  # the rest still find themselves
        assert np.array_equal(top[:, 0], ids[1::3][:50])

    check(index)
    data = index.to_bytes()
    for row in vectors[::3][:20]:  # compacted: removed vectors are not in the serialised form
        assert row.tobytes() not in data
    check(index_from_bytes(data, settings, DIM))
    save_index(index, tmp_path / "index.bin", {"seq": 1})
    assert vectors[0].tobytes() not in (tmp_path / "index.bin").read_bytes()
    loaded, _ = load_index(tmp_path / "index.bin", settings, DIM)
    check(loaded)
    check(index)  # to_bytes compaction did not change what the live index answers

    # heavy removal (tombstones outnumber live vectors in HNSW backends) keeps the rest searchable
    rest = index.ids()
    doomed = rest[: rest.size - 20]
    assert index.remove(doomed) == doomed.size
    keep = np.isin(ids, index.ids())
    _, top = index.search(vectors[keep], 1)
    assert np.array_equal(top[:, 0], ids[keep])
    _, found = index.search(vectors, 50)
    assert set(found[found >= 0].tolist()) <= set(ids[keep].tolist())


def test_duplicate_ids_rejected(filled: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, _ = filled
    fresh = clustered(2, DIM, seed=5)
    with pytest.raises(ValueError, match="already"):
        index.add(np.array([10**15, ids[7]], dtype=np.int64), fresh)
    assert len(index) == 300 and 10**15 not in index.ids()  # nothing of the batch went in
    with pytest.raises(ValueError, match="repeat"):
        index.add(np.array([10**15, 10**15], dtype=np.int64), fresh)
    assert len(index) == 300


def test_readding_a_removed_id_stores_the_new_vector(
    settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray]
) -> None:
    index, ids, vectors = filled
    target, old = int(ids[10]), vectors[10]
    assert index.remove([target]) == 1
    new = clustered(1, DIM, seed=6)
    index.add(np.array([target], dtype=np.int64), new)
    assert len(index) == 300
    for idx in (index, index_from_bytes(index.to_bytes(), settings, DIM)):
        scores, found = idx.search(new, 1)
        assert found[0, 0] == target and scores[0, 0] == pytest.approx(1.0, abs=1e-4)
        scores, found = idx.search(old[None, :], 300)
        hit = found[0] == target
        if hit.any():  # whatever it scores now is against the new vector
            assert scores[0][hit][0] == pytest.approx(float(old @ new[0]), abs=1e-4)


def test_save_load_round_trip(
    settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    index, ids, _ = filled
    index.remove(ids[:5].tolist())
    path = tmp_path / "index.bin"
    save_index(index, path, {"seq": 123, "note": "ü"})
    loaded, meta = load_index(path, settings, DIM)
    assert meta == {"seq": 123, "note": "ü"}
    assert loaded.kind == index.kind and loaded.dimension == DIM and len(loaded) == len(index)
    assert np.array_equal(loaded.ids(), index.ids())
    queries = clustered(30, DIM, seed=7)
    for k in (1, 10, 400):
        s1, i1 = index.search(queries, k)
        s2, i2 = loaded.search(queries, k)
        assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]  # no temporary file left
    save_index(loaded, path, {"seq": 124})  # overwrite in place
    assert load_index(path, settings, DIM)[1] == {"seq": 124}


def test_corrupt_or_truncated_file_refused(
    settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    index, _, _ = filled
    path = tmp_path / "index.bin"
    save_index(index, path, {"seq": 9})
    good = path.read_bytes()
    n = len(good)
    damaged: list[bytes] = []
    for pos in (0, 9, 13, 20, 30, 60, 100, n // 2, n - 1):  # magic, version, lengths, digest, meta, payload
        flipped = bytearray(good)
        flipped[pos] ^= 0x01
        damaged.append(bytes(flipped))
    seq_at = good.index(b'"seq": 9') + len(b'"seq": ')
    damaged.append(good[:seq_at] + b"8" + good[seq_at + 1 :])  # still valid JSON, different value
    damaged += [good[:cut] for cut in (0, 10, 56, 80, n // 2, n - 1)]
    damaged.append(good + b"\0")
    for data in damaged:
        path.write_bytes(data)
        with pytest.raises(IndexCorrupt) as info:
            load_index(path, settings, DIM)
        assert isinstance(info.value, ServerError) and info.value.code == "index_corrupt"
    path.write_bytes(good)
    assert len(load_index(path, settings, DIM)[0]) == len(index)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "absent.bin", settings, DIM)


def test_load_refuses_other_dimension_or_backend(
    backend: str, settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    index, _, _ = filled
    path = tmp_path / "index.bin"
    save_index(index, path, {})
    with pytest.raises(IndexCorrupt, match="dimension"):
        load_index(path, settings, DIM + 1)
    other = BACKENDS["hnswlib" if backend != "hnswlib" else "exact"]
    with pytest.raises(IndexCorrupt, match="backend"):
        load_index(path, other, DIM)


def test_failed_save_keeps_the_previous_file(
    filled: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _, _ = filled
    path = tmp_path / "index.bin"
    save_index(index, path, {"seq": 1})
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_index(index, path, {"seq": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]
    with pytest.raises(ValueError, match="JSON"):
        save_index(index, tmp_path / "other.bin", {"seq": object()})


def test_invalid_input_rejected(settings: IndexSettings, filled: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    index, _, vectors = filled
    good = clustered(2, DIM, seed=8)
    new_ids = np.array([1, 2], dtype=np.int64)
    nan = good.copy()
    nan[1, 3] = np.nan
    inf = good.copy()
    inf[0, 0] = np.inf
    bad_adds = [
        (new_ids, clustered(2, DIM + 1, seed=8)),  # dimension
        (new_ids, good[0]),  # not 2-D
        (np.array([1], dtype=np.int64), good),  # count mismatch
        (new_ids, nan),
        (new_ids, inf),
        (new_ids, good * 3.0),  # not normalised
        (np.array([-1, 2], dtype=np.int64), good),  # negative id
        (np.array([1.5, 2.5]), good),  # not integers
    ]
    for ids, vecs in bad_adds:
        with pytest.raises(ValueError):
            index.add(ids, vecs)
    assert len(index) == 300
    for queries, k in [(vectors[:2, :-1], 3), (vectors[0], 3), (nan, 3), (vectors[:2], 0)]:
        with pytest.raises(ValueError):
            index.search(queries, k)
    with pytest.raises(ValueError):
        make_index(settings, 0)


@pytest.fixture(scope="module")
def recall_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """8,000 clustered 64-d vectors, 200 held-out queries, and their exact top 10."""
    points = clustered(8_200, 64, seed=11, clusters=64, spread=1.25)
    vectors, queries = points[:8_000], points[8_000:]
    ids = sparse_ids(8_000)
    truth_index = ExactIndex(64)
    truth_index.add(ids, vectors)
    _, truth = truth_index.search(queries, 10)
    return ids, vectors, queries, truth


def test_recall_against_exact(backend: str, recall_data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, vectors, queries, truth = recall_data
    settings = BACKENDS[backend]
    if backend in ("faiss-hnsw", "faiss-ivf"):
        settings = settings.model_copy(update={"approximate_threshold": 1_000})
    index = make_index(settings, 64)
    for part in np.array_split(np.arange(ids.size), 4):  # the FAISS ones cross the threshold on the way
        index.add(ids[part], vectors[part])
    assert index.kind == backend
    _, found = index.search(queries, 10)
    r = recall(found, truth)
    assert r >= (0.95 if backend in APPROXIMATE else 0.999), f"{backend} recall@10 = {r:.3f}"


def test_threshold_crossing_keeps_every_id(backend: str, settings: IndexSettings) -> None:
    vectors = clustered(200, DIM, seed=12)
    ids = sparse_ids(200)
    index = make_index(settings, DIM)
    index.add(ids[:LOW_THRESHOLD], vectors[:LOW_THRESHOLD])  # exactly at the threshold: still flat
    assert index.kind == expected_kind(backend, LOW_THRESHOLD)
    index.add(ids[LOW_THRESHOLD:], vectors[LOW_THRESHOLD:])
    assert index.kind == expected_kind(backend, 200)
    assert np.array_equal(index.ids(), np.sort(ids))
    scores, top = index.search(vectors, 1)
    assert np.array_equal(top[:, 0], ids) and np.allclose(scores[:, 0], 1.0, atol=1e-4)


def test_concurrent_searches_beside_mutations(filled: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                scores, found = index.search(vectors[:8], 5)
                assert_well_formed(scores, found, 8, 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        extra = clustered(60, DIM, seed=13)
        for i in range(6):
            index.add(sparse_ids(10, start=1_000 + 10 * i), extra[10 * i : 10 * i + 10])
            index.remove(ids[10 * i : 10 * i + 10].tolist())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(index) == 300
