"""The answer step over an LLM faked at the transport: request shape per server, formats, loops cut and marked."""

from __future__ import annotations

import json

import httpx
import pytest

from federation.config import LLMEndpointSettings
from gateway.generation import Generated, Generator
from gateway.llm_client import LLMClient, LLMSettings
from gateway.loop_guard import find_loop
from gateway.prompting import NumberedSource

pytestmark = pytest.mark.unit

SOURCES = [
    NumberedSource(1, "Asthma", "Asthma is a chronic inflammatory disease of the airways.", "wiki"),
    NumberedSource(3, "Wheeze", "A whistling sound while breathing.", "hpo"),
]


def _stream(pieces: list[str]) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": len(pieces)}})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"


def _words(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")]


async def _run(
    pieces: list[str], seen: list[dict[str, object]] | None = None, *, holdback: int = 0, **settings: object
) -> tuple[list[tuple[str, str]], Generated]:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(200, content=_stream(pieces), headers={"content-type": "text/event-stream"})

    endpoint = LLMEndpointSettings(**{"base_url": "http://llm.test", **settings})  # type: ignore[arg-type]
    async with LLMClient(
        LLMSettings(base_url="http://llm.test", model="m"), transport=httpx.MockTransport(handler)
    ) as llm:
        events = [e async for e in Generator(llm, endpoint).stream("What is asthma?", SOURCES, holdback=holdback)]
    final = events[-1]
    assert isinstance(final, Generated)
    return [e for e in events[:-1] if isinstance(e, tuple)], final


async def test_structured_request_carries_the_schema_and_llama_cpp_sampling() -> None:
    seen: list[dict[str, object]] = []
    reply = json.dumps(
        {"reasoning": "Source 1 defines it.", "answer": "A chronic airway disease [1].", "citations": [1]}
    )
    pieces, generated = await _run([reply[i : i + 7] for i in range(0, len(reply), 7)], seen, max_tokens=200)
    body = seen[0]
    schema = body["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    assert schema["properties"]["citations"]["items"]["enum"] == [1, 3]
    assert schema["properties"]["reasoning"]["maxLength"] == 400  # half of max_tokens, ~4 characters a token
    assert body["repeat_penalty"] == 1.1 and body["dry_multiplier"] == 0.8 and "repetition_penalty" not in body
    assert generated.well_formed and generated.finish_reason == "stop" and generated.loop_field is None
    assert generated.parsed.answer == "A chronic airway disease [1]." and generated.parsed.citations == (1,)
    assert "".join(t for k, t in pieces if k == "content") == "A chronic airway disease [1]."
    assert "".join(t for k, t in pieces if k == "reasoning") == "Source 1 defines it."
    assert generated.prompt_tokens == 50 and generated.completion_tokens


async def test_vllm_and_plain_openai_servers_get_only_their_own_fields() -> None:
    seen: list[dict[str, object]] = []
    reply = json.dumps({"reasoning": "r", "answer": "a [1]", "citations": [1]})
    await _run([reply], seen, server="vllm", frequency_penalty=0.3)
    await _run([reply], seen, server="openai")
    vllm, openai = seen
    assert vllm["repetition_penalty"] == 1.1 and vllm["frequency_penalty"] == 0.3 and "dry_multiplier" not in vllm
    assert not {"repeat_penalty", "repetition_penalty", "dry_multiplier"} & openai.keys()
    assert "response_format" in openai


async def test_a_loop_in_the_answer_stops_generation_and_cuts_the_answer() -> None:
    head = '{"reasoning": "Source 1.", "answer": "Asthma is an airway disease [1]. '
    pieces, generated = await _run([head, *_words("The answer is: " * 30)], holdback=160)
    assert generated.finish_reason == "repetition" and generated.loop_field == "answer"
    assert not generated.well_formed  # the JSON was never finished
    assert generated.parsed.answer == "Asthma is an airway disease [1]. The answer is:"
    assert generated.parsed.citations == (1,)
    streamed = "".join(t for k, t in pieces if k == "content")
    assert streamed.count("The answer is:") == 1


async def test_a_loop_in_the_structured_reasoning_is_cut_and_the_answer_asked_for_alone() -> None:
    seen: list[dict[str, object]] = []
    reply = json.dumps(
        {
            "reasoning": "Source 1 is about it. " + "It is it. " * 20,
            "answer": "A chronic disease [1].",
            "citations": [1],
        }
    )
    pieces, generated = await _run([reply[i : i + 5] for i in range(0, len(reply), 5)], seen, holdback=40)
    first, second = (body["response_format"]["json_schema"]["schema"] for body in seen)  # type: ignore[index]
    assert "reasoning" in first["properties"] and "reasoning" not in second["properties"]
    assert generated.loop_field == "reasoning" and generated.finish_reason == "stop" and generated.well_formed
    assert generated.parsed.reasoning.startswith("Source 1 is about it.")
    assert generated.parsed.reasoning.count("It is it.") <= 1 and find_loop(generated.parsed.reasoning) is None
    assert generated.parsed.answer == "A chronic disease [1]."
    assert "".join(t for k, t in pieces if k == "reasoning") == generated.parsed.reasoning
    assert "".join(t for k, t in pieces if k == "content") == "A chronic disease [1]."


async def test_free_format_keeps_think_reasoning_and_reads_the_answer_line() -> None:
    seen: list[dict[str, object]] = []
    _, generated = await _run(
        ["<thi", "nk>Source 3 says wheeze.</think>", "Answer: It wheezes [3]."], seen, answer_format="free"
    )
    assert "response_format" not in seen[0]
    assert generated.parsed.reasoning == "Source 3 says wheeze."
    assert generated.parsed.answer == "It wheezes [3]." and generated.parsed.citations == (3,)
    assert generated.well_formed and generated.finish_reason == "stop"


async def test_free_format_without_the_guard_returns_the_loop_as_the_old_gateway_did() -> None:
    _, generated = await _run(_words("Answer: " + "The answer is: " * 20), answer_format="free", loop_guard=False)
    assert generated.finish_reason == "stop" and generated.parsed.answer.count("The answer is:") > 3


async def test_a_blank_structured_answer_is_asked_for_again_without_reasoning() -> None:
    seen: list[dict[str, object]] = []
    replies = iter(
        [
            json.dumps({"reasoning": "The sources say it.", "answer": " ", "citations": [1]}),
            json.dumps({"answer": "An airway disease [1].", "citations": [1]}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=_stream([next(replies)]), headers={"content-type": "text/event-stream"})

    endpoint = LLMEndpointSettings(base_url="http://llm.test")
    async with LLMClient(
        LLMSettings(base_url="http://llm.test", model="m"), transport=httpx.MockTransport(handler)
    ) as llm:
        events = [e async for e in Generator(llm, endpoint).stream("What is asthma?", SOURCES)]
    generated = events[-1]
    assert isinstance(generated, Generated) and len(seen) == 2
    assert generated.well_formed and generated.loop_field is None
    assert generated.parsed.answer == "An airway disease [1]." and generated.parsed.reasoning == "The sources say it."
