from __future__ import annotations

import itertools
import math
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import InvalidReply, Passage, ReplyLimits, validate_reply
from federation.errors import UpstreamError
from federation.protocol import SearchHit, SearchResponse

pytestmark = pytest.mark.unit

SECRET = "patient Jane Doe has condition X"


def hit(chunk_id: str, score: float, text: str | None = "some passage text", **fields: Any) -> SearchHit:
    return SearchHit(chunk_id=chunk_id, doc_id=f"doc-{chunk_id}", score=score, text=text, **fields)


def reply(hits: list[SearchHit], silo: str = "alpha") -> SearchResponse:
    return SearchResponse(silo=silo, hits=hits, k_effective=len(hits))


def test_valid_reply_becomes_ranked_passages() -> None:
    hits = [
        hit("c1", 0.9, title="Asthma", metadata={"lang": "en"}),
        hit("c2", 0.7),
        hit("c3", -0.2, text="a negative but valid score"),
    ]
    passages = validate_reply("alpha", reply(hits), k_requested=5)
    assert [(p.chunk_id, p.rank, p.score) for p in passages] == [("c1", 1, 0.9), ("c2", 2, 0.7), ("c3", 3, -0.2)]
    first = passages[0]
    assert (first.silo, first.doc_id, first.title, first.text) == ("alpha", "doc-c1", "Asthma", "some passage text")
    assert first.metadata == {"lang": "en"}


def test_empty_reply_is_valid() -> None:
    assert validate_reply("alpha", reply([]), k_requested=3) == []


@pytest.mark.parametrize(
    ("score", "reason"),
    [
        (math.nan, "NaN"),
        (math.inf, "infinite"),
        (-math.inf, "infinite"),
        (1.5, "outside"),
        (-1.01, "outside"),
        (1.0011, "outside"),
    ],
)
def test_garbage_scores_are_refused(score: float, reason: str) -> None:
    hits = [hit("c0", 0.5, text=SECRET), hit("c1", score, text=SECRET)]
    if score > 0.5:  # keep the order valid so the score itself is what is refused
        hits.reverse()
    with pytest.raises(InvalidReply, match=reason) as info:
        validate_reply("alpha", reply(hits), k_requested=5)
    assert SECRET not in info.value.detail
    assert "alpha" in info.value.detail


def test_invalid_reply_is_an_upstream_error_with_its_own_code() -> None:
    with pytest.raises(UpstreamError) as info:
        validate_reply("alpha", reply([hit("c1", math.nan)]), k_requested=5)
    assert info.value.code == "invalid_reply"
    assert info.value.status == 502


@pytest.mark.parametrize(("score", "clamped"), [(1.0000001, 1.0), (1.0009, 1.0), (-1.0005, -1.0), (1.0, 1.0)])
def test_scores_just_outside_the_range_are_clamped(score: float, clamped: float) -> None:
    (passage,) = validate_reply("alpha", reply([hit("c1", score)]), k_requested=1)
    assert passage.score == clamped


def test_a_million_hits_is_refused_without_looking_at_them() -> None:
    class Untouchable(list[SearchHit]):
        def __iter__(self) -> Any:
            raise AssertionError("the hits were iterated")

        def __getitem__(self, index: Any) -> Any:
            raise AssertionError("the hits were indexed")

    one = hit("c1", 0.5)
    hits = Untouchable([one] * 1_000_000)
    huge = SearchResponse.model_construct(silo="alpha", hits=hits, k_effective=10)
    with pytest.raises(InvalidReply, match="1000000 hits; at most 10"):
        validate_reply("alpha", huge, k_requested=10)


def test_a_million_hits_through_the_real_model_is_refused() -> None:
    one = hit("c1", 0.5)
    huge = SearchResponse(silo="alpha", hits=[one] * 1_000_000, k_effective=10)
    with pytest.raises(InvalidReply, match="at most 10"):
        validate_reply("alpha", huge, k_requested=10)


def test_quota_is_the_smaller_of_k_and_max_hits() -> None:
    hits = [hit(f"c{i}", 0.9 - i / 100) for i in range(4)]
    assert len(validate_reply("alpha", reply(hits), k_requested=4)) == 4
    with pytest.raises(InvalidReply, match="4 hits; at most 3"):
        validate_reply("alpha", reply(hits), k_requested=3)
    with pytest.raises(InvalidReply, match="4 hits; at most 2"):
        validate_reply("alpha", reply(hits), k_requested=10, limits=ReplyLimits(max_hits=2))


def test_a_silo_answering_as_another_is_refused() -> None:
    with pytest.raises(InvalidReply, match="answered as 'beta'"):
        validate_reply("alpha", reply([hit("c1", 0.5)], silo="beta"), k_requested=5)


def test_duplicate_chunk_ids_are_refused() -> None:
    with pytest.raises(InvalidReply, match="repeats chunk id 'c1'"):
        validate_reply("alpha", reply([hit("c1", 0.9), hit("c2", 0.8), hit("c1", 0.7)]), k_requested=5)


def test_duplicates_among_textless_hits_are_refused_too() -> None:
    with pytest.raises(InvalidReply, match="repeats"):
        validate_reply("alpha", reply([hit("c1", 0.9, text=None), hit("c1", 0.8, text=None)]), k_requested=5)


@pytest.mark.parametrize("chunk_id", ["", "bad\x00id", "line\nbreak"])
def test_empty_or_unprintable_chunk_ids_are_refused(chunk_id: str) -> None:
    with pytest.raises(InvalidReply, match="chunk id"):
        validate_reply("alpha", reply([hit(chunk_id, 0.5)]), k_requested=5)


def test_increasing_scores_are_refused() -> None:
    with pytest.raises(InvalidReply, match="hit 3 scores higher"):
        validate_reply("alpha", reply([hit("c1", 0.9), hit("c2", 0.5), hit("c3", 0.6)]), k_requested=5)


def test_ties_and_float_noise_in_the_order_are_accepted() -> None:
    hits = [hit("c1", 0.5), hit("c2", 0.5), hit("c3", 0.5 + 1e-7)]
    assert [p.chunk_id for p in validate_reply("alpha", reply(hits), k_requested=5)] == ["c1", "c2", "c3"]


def test_hits_without_text_are_skipped_and_ranks_count_kept_passages() -> None:
    hits = [hit("c1", 0.9, text=None), hit("c2", 0.8, text="  \x00\u200b "), hit("c3", 0.7, text=""), hit("c4", 0.6)]
    passages = validate_reply("alpha", reply(hits), k_requested=5)
    assert [(p.chunk_id, p.rank) for p in passages] == [("c4", 1)]


def test_control_and_format_characters_are_stripped() -> None:
    raw = "\x00Dose:\x1b[31m 5 mg\u202e evil\u200b\r\nnext line\tcol\x7f\x85 end\ufeff  "
    (passage,) = validate_reply("alpha", reply([hit("c1", 0.5, text=raw, title="Ti\ntle\x07")]), k_requested=1)
    assert passage.text == "Dose:[31m 5 mg evil\nnext line\tcol end"
    assert passage.title == "Ti tle"


def test_long_text_is_cut_at_a_word_boundary() -> None:
    text = " ".join(f"word{i:03d}" for i in range(1000))  # 7999 characters
    limits = ReplyLimits(max_text_chars=100)
    (passage,) = validate_reply("alpha", reply([hit("c1", 0.5, text=text)]), k_requested=1, limits=limits)
    assert 80 <= len(passage.text) <= 100
    assert text.startswith(passage.text)
    assert text[len(passage.text)] == " "


def test_long_word_without_spaces_is_cut_hard() -> None:
    limits = ReplyLimits(max_text_chars=50)
    (passage,) = validate_reply("alpha", reply([hit("c1", 0.5, text="x" * 10_000)]), k_requested=1, limits=limits)
    assert passage.text == "x" * 50


def test_long_title_is_cut() -> None:
    limits = ReplyLimits(max_title_chars=10)
    (passage,) = validate_reply("alpha", reply([hit("c1", 0.5, title="T" * 500)]), k_requested=1, limits=limits)
    assert passage.title == "T" * 10


def test_oversize_metadata_is_dropped_not_fatal() -> None:
    big = {"blob": "x" * 5000}
    small = {"page": 3, "tags": ["a", "b"]}
    hits = [hit("c1", 0.9, metadata=big), hit("c2", 0.8, metadata=small)]
    first, second = validate_reply("alpha", reply(hits), k_requested=2)
    assert first.metadata == {}
    assert second.metadata == small
    small["page"] = 4  # the passage holds its own copy
    assert second.metadata == {"page": 3, "tags": ["a", "b"]}


def test_k_requested_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k_requested"):
        validate_reply("alpha", reply([]), k_requested=0)


def test_passage_refuses_impossible_values() -> None:
    with pytest.raises(ValueError, match="score"):
        Passage("a", "c", "d", "", "text", math.nan, 1, {})
    with pytest.raises(ValueError, match="rank"):
        Passage("a", "c", "d", "", "text", 0.5, 0, {})


scores = st.one_of(
    st.floats(min_value=-1.01, max_value=1.01),
    st.sampled_from([math.nan, math.inf, -math.inf, 1.0000001, -1.0000001]),
)
texts = st.one_of(st.none(), st.text(max_size=40))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", "c4", "c5", "c6"]), scores, texts), max_size=6),
    st.integers(1, 8),
)
def test_any_reply_is_refused_or_yields_well_formed_passages(raw: list[tuple[str, float, str | None]], k: int) -> None:
    hits = [hit(chunk_id, score, text=text) for chunk_id, score, text in raw]
    try:
        passages = validate_reply("alpha", reply(hits), k_requested=k)
    except InvalidReply:
        return
    assert len(hits) <= k
    assert len({h.chunk_id for h in hits}) == len(hits)
    assert [p.rank for p in passages] == list(range(1, len(passages) + 1))
    for passage in passages:
        assert -1.0 <= passage.score <= 1.0
        assert passage.text and passage.text == passage.text.strip()
        assert all(ch in "\n\t" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs"} for ch in passage.text)
    assert all(a.score >= b.score - 1e-6 for a, b in itertools.pairwise(passages))
