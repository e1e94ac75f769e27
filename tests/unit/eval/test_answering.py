"""Generation settings of the answer formats: free is the old gateway's request, structured the new default."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eval.answering import format_settings, kind_settings, parse_formats, reasoning_room
from federation.config import LLMEndpointSettings
from gateway.generation import Generator, sampling_fields
from gateway.llm_client import LLMClient, LLMSettings
from gateway.prompting import NumberedSource, build_messages

pytestmark = pytest.mark.unit

BASE = LLMEndpointSettings(base_url="http://127.0.0.1:9", model="m", temperature=0.0, context_tokens=1024)
SOURCES = [NumberedSource(number=1, title="Skin fragility", text="A tendency of the skin to tear.", label="hpo")]


@pytest.fixture
async def llm() -> AsyncIterator[LLMClient]:
    client = LLMClient(LLMSettings(base_url="http://127.0.0.1:9", model="m"))
    yield client
    await client.aclose()


def test_free_asks_exactly_what_the_old_gateway_asked(llm: LLMClient) -> None:
    free = format_settings(BASE, "free")
    messages, extra = Generator(llm, free).request(
        question="What is skin fragility?", sources=SOURCES, choices=None, allow_no_context=False, max_tokens=384
    )
    assert messages == build_messages("What is skin fragility?", SOURCES)  # the old prompt (free by default)
    # No schema, no DRY; repeat_penalty 1 is the llama.cpp server's default, which the old request left alone.
    assert extra == sampling_fields(free) == {"repeat_penalty": 1.0}
    assert not free.loop_guard and free.answer_format == "free"


def test_structured_is_the_new_default_whatever_the_base_had(llm: LLMClient) -> None:
    base = BASE.model_copy(update={"answer_format": "free", "loop_guard": False, "dry_multiplier": 0.0})
    structured = format_settings(base, "structured")
    default = LLMEndpointSettings()
    for name in ("answer_format", "repetition_penalty", "dry_multiplier", "loop_guard", "reasoning_chars"):
        assert getattr(structured, name) == getattr(default, name)
    assert structured.temperature == 0.0 and structured.context_tokens == 1024  # the rest is the base's
    _, extra = Generator(llm, structured).request(
        question="q", sources=SOURCES, choices=None, allow_no_context=False, max_tokens=384
    )
    assert extra["response_format"]["type"] == "json_schema"
    assert extra["dry_multiplier"] == default.dry_multiplier > 0


def test_multiple_choice_reasoning_leaves_room_for_the_choice() -> None:
    mc = kind_settings(BASE, "mc", 96)
    assert mc.answer_format == "structured" and mc.max_tokens == 96
    assert mc.reasoning_chars == 192  # (96 - 32) tokens x 3 characters: the letter still fits
    assert kind_settings(BASE, "mc", 32).reasoning_chars == 0
    most = LLMEndpointSettings().reasoning_chars
    assert kind_settings(BASE, "mc", 1000).reasoning_chars == most  # never more than the default
    code = kind_settings(BASE, "code", 256)
    assert code.reasoning_chars == 192 and code.answer_chars >= 1500  # a function, not three sentences
    assert reasoning_room(10, 32, most=600) == 0


def test_answer_formats_are_read_in_order_once_and_unknown_ones_refused() -> None:
    assert parse_formats("structured,free") == ("structured", "free")
    assert parse_formats(" free , free,") == ("free",)
    assert parse_formats("") == ()
    with pytest.raises(ValueError, match="unknown answer format 'json'"):
        parse_formats("structured,json")
