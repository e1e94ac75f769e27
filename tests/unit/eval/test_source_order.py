"""``fedrag eval run --source-order shuffled``: the position-bias probe's permutation and run identity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aggregation import Passage
from eval.configs import select_configs
from eval.runner import RunOptions, shuffled_sources, write_run_file
from federation.errors import ConfigError

pytestmark = pytest.mark.unit


def _passages(n: int, tag: str = "") -> list[Passage]:
    return [
        Passage(
            silo="s",
            chunk_id=f"{tag}{i}",
            doc_id=f"D:{tag}{i}",
            title=f"T{i}",
            text=f"text {tag}{i}",
            score=0.5,
            rank=i + 1,
        )
        for i in range(n)
    ]


def test_shuffled_order_is_a_permutation_that_every_model_sees_alike() -> None:
    order = shuffled_sources(seed=0)
    firsts = 0
    for case in range(40):
        passages = _passages(5, tag=f"q{case}-")
        shown = order(passages)
        assert sorted(p.chunk_id for p in shown) == sorted(p.chunk_id for p in passages)
        assert [p.chunk_id for p in order(list(passages))] == [p.chunk_id for p in shown]  # the same prompt again
        firsts += shown[0] is passages[0]
    # The top-ranked passage is first about a fifth of the time, not always.
    assert 2 <= firsts <= 16
    assert [p.chunk_id for p in shuffled_sources(seed=1)(_passages(8))] != [
        p.chunk_id for p in shuffled_sources(seed=0)(_passages(8))
    ]


def test_a_shuffled_run_is_its_own_run(tmp_path: Path) -> None:
    options = RunOptions(
        out=tmp_path / "out", configs=tuple(select_configs("fed-all")), llm_configs=frozenset(), llm_url=None
    )
    assert "source_order" not in options.identity()  # runs in retrieval order keep their identity
    shuffled = dataclasses.replace(options, source_order="shuffled")
    assert shuffled.identity()["source_order"] == "shuffled"
    write_run_file(options)
    with pytest.raises(ConfigError, match="source_order"):
        write_run_file(shuffled)  # one output directory never mixes the two
