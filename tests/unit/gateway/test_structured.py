"""The answer schema (only existing sources can be cited) and reading structured replies, whole or cut short."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.streaming import JsonFieldStreamer
from gateway.structured import STREAMED_FIELDS, SchemaLimits, answer_schema, read_structured, response_format

pytestmark = pytest.mark.unit


def test_citations_can_only_name_the_sources_in_the_prompt() -> None:
    schema = answer_schema([3, 1, 2])
    citations = schema["properties"]["citations"]
    assert citations["items"] == {"type": "integer", "enum": [1, 2, 3]}
    assert citations["minItems"] == 1 and citations["maxItems"] == 3
    assert schema["required"] == ["reasoning", "answer", "citations"]  # the order fields are generated in
    assert schema["additionalProperties"] is False


def test_limits_bound_reasoning_and_answer_and_citation_can_be_optional() -> None:
    schema = answer_schema([1], limits=SchemaLimits(reasoning_chars=100, answer_chars=200, require_citation=False))
    assert schema["properties"]["reasoning"]["maxLength"] == 100
    assert schema["properties"]["answer"] == {"type": "string", "minLength": 1, "maxLength": 200}
    assert schema["properties"]["citations"]["minItems"] == 0


def test_multiple_choice_asks_for_one_of_the_letters_and_no_sources_means_no_citations() -> None:
    schema = answer_schema([], choices=4)
    assert schema["properties"]["choice"] == {"type": "string", "enum": ["A", "B", "C", "D"]}
    assert "answer" not in schema["properties"] and "citations" not in schema["properties"]
    with pytest.raises(ValueError, match="26"):
        answer_schema([], choices=27)


def test_response_format_is_the_openai_json_schema_shape() -> None:
    body = response_format(answer_schema([1]))
    assert body["type"] == "json_schema" and body["json_schema"]["schema"]["type"] == "object"


def test_a_complete_reply_is_well_formed_with_listed_and_inline_citations() -> None:
    raw = json.dumps({"reasoning": "Source 2 defines it.", "answer": "It is X [2]. Also Y [7].", "citations": [1, 2]})
    reply = read_structured(raw, source_numbers=[1, 2, 3])
    assert reply.well_formed
    assert reply.parsed.answer == "It is X [2]. Also Y [7]."
    assert reply.parsed.reasoning == "Source 2 defines it."
    assert reply.parsed.citations == (2, 1)  # inline first, then listed, no duplicates
    assert reply.parsed.invalid_citations == (7,)


def test_a_reply_cut_short_is_read_as_far_as_it_goes_and_is_not_well_formed() -> None:
    raw = '{"reasoning": "Source 1 says so.", "answer": "It is a disease of the heart [1'
    reply = read_structured(raw, source_numbers=[1, 2])
    assert not reply.well_formed
    assert reply.parsed.reasoning == "Source 1 says so."
    assert reply.parsed.answer.startswith("It is a disease of the heart")


def test_a_reply_missing_a_required_field_is_not_well_formed() -> None:
    reply = read_structured(json.dumps({"reasoning": "r", "answer": "a"}), source_numbers=[1])
    assert not reply.well_formed and reply.parsed.answer == "a"
    assert not read_structured("not json at all", source_numbers=[1]).well_formed


def test_multiple_choice_reply_gives_the_letter_and_its_option_as_answer() -> None:
    choices = ["aspirin", "vitamin C", "insulin"]
    reply = read_structured(
        json.dumps({"reasoning": "r", "choice": "B", "citations": [1]}), source_numbers=[1], choices=choices
    )
    assert reply.well_formed and reply.parsed.choice == "B" and reply.parsed.answer == "B. vitamin C"
    bad = read_structured(
        json.dumps({"reasoning": "r", "choice": "Q", "citations": [1]}), source_numbers=[1], choices=choices
    )
    assert not bad.well_formed and not bad.parsed.choice_parsed


@given(
    st.text(max_size=60),
    st.text(min_size=1, max_size=60),
    st.lists(st.integers(1, 5), max_size=4),
    st.lists(st.integers(1, 12), max_size=12),
)
def test_streamed_fields_equal_the_parsed_json_for_any_chunking(
    reasoning: str, answer: str, citations: list[int], cuts: list[int]
) -> None:
    raw = json.dumps({"reasoning": reasoning, "answer": answer, "citations": citations}, ensure_ascii=bool(cuts[:1]))
    streamer = JsonFieldStreamer(STREAMED_FIELDS)
    pieces: list[tuple[str, str]] = []
    at = 0
    for cut in [*cuts, len(raw)]:
        pieces += streamer.feed(raw[at : at + cut])
        at += cut
    pieces += streamer.feed(raw[at:])
    assert "".join(t for k, t in pieces if k == "reasoning") == reasoning
    assert "".join(t for k, t in pieces if k == "content") == answer
    assert streamer.field("answer") == answer and streamer.field("citations") is None


def test_streamer_turns_escapes_and_lone_surrogates_into_text() -> None:
    streamer = JsonFieldStreamer(STREAMED_FIELDS)
    pieces = streamer.feed('{"answer": "a\\nb \\"q\\" \\ud83d\\ude00 \\ud800x", "nested": {"answer": "no"}}')
    assert pieces == [("content", 'a\nb "q" 😀 \ufffdx')]
