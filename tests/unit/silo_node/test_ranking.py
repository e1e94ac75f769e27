"""Hybrid ranking at the silo: reciprocal rank fusion and the scores hits are released with."""

from __future__ import annotations

import numpy as np

from silo_node.ranking import fuse_ranks, rank_scores


def test_a_chunk_both_rankings_agree_on_comes_first() -> None:
    dense, lexical = [1, 2, 3], [4, 2, 5]
    fused = fuse_ranks([dense, lexical], k0=60)
    assert fused[0] == 2  # ranked 2nd by both beats 1st by one
    assert set(fused) == {1, 2, 3, 4, 5} and len(fused) == 5


def test_fusion_ties_keep_the_first_rankings_order_and_repeats_count_once() -> None:
    assert fuse_ranks([[7, 8], [9, 10]], k0=60) == [7, 9, 8, 10]
    assert fuse_ranks([[3, 3, 4]], k0=1) == [3, 4]


def test_released_scores_follow_the_silos_order_on_the_dense_scale() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    ids = np.array([10, 11, 12])
    vectors = np.array([[0.9, 0.436], [0.2, 0.98], [0.6, 0.8]], dtype=np.float32)
    # The lexical match 11 (inner product 0.2) was ranked first; 99 has no vector any more.
    scored = rank_scores([11, 99, 10, 12], ids, vectors, query)
    assert [cid for _, cid in scored] == [11, 10, 12]
    assert [round(s, 3) for s, _ in scored] == [0.9, 0.6, 0.2]
