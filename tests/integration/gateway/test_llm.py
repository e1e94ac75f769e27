"""The LLM client against the real embedded llama.cpp server, dead and silent servers, and protocol fakes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from federation.errors import ConfigError, Unavailable, UpstreamError, UpstreamTimeout
from federation.secrets import Secret
from gateway.llm_client import ChatDelta, LLMClient, LLMSettings
from gateway.llm_server import DEFAULT_MODEL_NAME, EmbeddedLLMServer, model_path

API_KEY = "test-llm-key-0123456789"
HELLO = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedLLMServer]:
    """The real embedded server (SmolLM2-135M), one request at a time, with an API key.

    One thread: on a shared 2-core machine llama.cpp's OpenMP threads spin-wait, and two
    threads slow to a crawl whenever anything else runs.
    """
    with EmbeddedLLMServer(port=free_port(), ctx=2048, threads=1, api_key=Secret(API_KEY)) as llm:
        yield llm
    assert not llm.running


def settings_for(url: str, **kw: object) -> LLMSettings:
    options: dict[str, object] = {"model": DEFAULT_MODEL_NAME, "api_key": Secret(API_KEY), "timeout_s": 30.0}
    options.update(kw)
    return LLMSettings(base_url=url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: EmbeddedLLMServer) -> AsyncIterator[LLMClient]:
    async with LLMClient(settings_for(server.base_url)) as llm:
        yield llm


# ---- the real server ------------------------------------------------------------------------------


@pytest.mark.integration
async def test_chat_returns_content(client: LLMClient) -> None:
    result = await client.chat(HELLO, max_tokens=16)
    assert result.content.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.prompt_tokens is not None and result.prompt_tokens > 5
    assert result.completion_tokens is not None and 0 < result.completion_tokens <= 16
    assert result.model == DEFAULT_MODEL_NAME


@pytest.mark.integration
async def test_models_lists_the_served_name(client: LLMClient) -> None:
    assert await client.models() == [DEFAULT_MODEL_NAME]


@pytest.mark.integration
async def test_stream_yields_deltas_ending_with_a_finish_reason(client: LLMClient) -> None:
    deltas: list[ChatDelta] = [d async for d in client.stream(HELLO, max_tokens=16)]
    assert "".join(d.content for d in deltas).strip()
    assert [d.finish_reason for d in deltas if d.finish_reason] in (["stop"], ["length"])
    assert deltas[-1].prompt_tokens and deltas[-1].completion_tokens  # usage comes last (include_usage)


@pytest.mark.integration
async def test_base_url_with_v1_suffix_is_accepted(server: EmbeddedLLMServer) -> None:
    async with LLMClient(settings_for(server.base_url + "/v1/")) as llm:
        assert await llm.models() == [DEFAULT_MODEL_NAME]


@pytest.mark.integration
async def test_abandoned_stream_leaves_the_server_free_for_the_next_request(client: LLMClient) -> None:
    # ignore_eos makes the server generate all 1500 tokens (~20 s) unless the closed stream stops it;
    # with one slot the next request would wait for it and run past its 10 s timeout.
    prompt = [{"role": "user", "content": "Write a long story about a dragon."}]
    stream = client.stream(prompt, max_tokens=1500, extra_body={"ignore_eos": True})
    received = 0
    async for delta in stream:
        received += bool(delta.content)
        if received >= 3:
            break
    await stream.aclose()
    assert received == 3
    async with LLMClient(settings_for(client.settings.base_url, timeout_s=10.0)) as fresh:
        result = await fresh.chat(HELLO, max_tokens=8)
    assert result.content.strip()


@pytest.mark.integration
async def test_prompt_over_the_context_is_a_context_overflow(client: LLMClient) -> None:
    huge = [{"role": "user", "content": "hello " * 3000}]
    with pytest.raises(UpstreamError) as info:
        await client.chat(huge, max_tokens=8)
    assert info.value.code == "llm_context_overflow" and info.value.status == 502
    with pytest.raises(UpstreamError) as info:
        async for _ in client.stream(huge, max_tokens=8):
            pass
    assert info.value.code == "llm_context_overflow"
    assert (await client.chat(HELLO, max_tokens=4)).content  # and the server still answers


@pytest.mark.integration
async def test_wrong_or_missing_api_key_is_an_upstream_error(server: EmbeddedLLMServer) -> None:
    for key in (None, Secret("wrong-key")):
        async with LLMClient(settings_for(server.base_url, api_key=key)) as llm:
            with pytest.raises(UpstreamError) as info:
                await llm.chat(HELLO, max_tokens=4)
        assert info.value.code == "llm_error" and info.value.upstream_status == 401


@pytest.mark.integration
def test_official_openai_client_works_against_the_embedded_server(server: EmbeddedLLMServer) -> None:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=30) as oai:
        assert [m.id for m in oai.models.list()] == [DEFAULT_MODEL_NAME]
        messages: Any = HELLO
        completion = oai.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=16)
        assert completion.choices[0].message.content
        assert completion.usage is not None and completion.usage.completion_tokens <= 16
        chunks = list(
            oai.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=messages, max_tokens=16, stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)


# ---- lifecycle ------------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_small_context_server_overflows_and_stop_really_stops_it() -> None:
    small = EmbeddedLLMServer(ctx=256, threads=1)
    small.start()
    try:
        small.wait_ready(10)
        url = small.base_url
        async with LLMClient(LLMSettings(base_url=url, model=small.model_name, timeout_s=30)) as llm:
            with pytest.raises(UpstreamError) as info:
                await llm.chat([{"role": "user", "content": "tell me about the sea " * 60}], max_tokens=8)
            assert info.value.code == "llm_context_overflow"
    finally:
        small.stop()
    assert not small.running
    with pytest.raises(Unavailable):
        small.base_url  # noqa: B018
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/health")


@pytest.mark.integration
@pytest.mark.timeout(120, method="thread")  # a deadlock holds the GIL: only the thread method can report it
def test_stop_right_after_start_never_hangs() -> None:
    # xllamacpp deadlocks when a Server is deallocated before its main loop runs; start() must
    # only return once that cannot happen.
    for _ in range(3):
        llm = EmbeddedLLMServer(ctx=256, threads=1)
        llm.start()
        llm.stop()
        assert not llm.running


@pytest.mark.integration
def test_a_taken_port_is_a_clear_config_error(server: EmbeddedLLMServer) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        EmbeddedLLMServer(port=server.port).start()


@pytest.mark.unit
def test_model_path_points_at_the_installed_gguf() -> None:
    path = model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


@pytest.mark.integration
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_sigterm_or_ctrl_c(stop_signal: signal.Signals) -> None:
    port = free_port()
    code = "from gateway.cli_llm import app; app()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", str(port), "--ctx", "512", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.strip() == f"base_url: http://127.0.0.1:{port}", proc.stderr.read() if proc.stderr else ""
        assert second.strip() == f"model: {DEFAULT_MODEL_NAME}"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


# ---- dead and silent servers ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_no_server_is_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with LLMClient(LLMSettings(base_url=url, model="m", timeout_s=30)) as llm:
        for call in (lambda: llm.chat(HELLO), lambda: llm.models(), lambda: anext(llm.stream(HELLO))):
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await call()
            assert time.monotonic() - started < 2.0
            assert info.value.code == "llm_unavailable" and info.value.status == 503


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections, reads the request and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(65536)
        await asyncio.sleep(3600)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    for writer in writers:
        writer.close()
    srv.close()


@pytest.mark.integration
async def test_silent_server_is_an_upstream_timeout(silent_server: str) -> None:
    async with LLMClient(LLMSettings(base_url=silent_server, model="m", timeout_s=1.0)) as llm:
        for call in (lambda: llm.chat(HELLO), lambda: anext(llm.stream(HELLO))):
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout) as info:
                await call()
            assert time.monotonic() - started < 1.0 + 1.0
            assert info.value.code == "llm_timeout" and info.value.status == 504


# ---- protocol details, with transport fakes (no server) -------------------------------------------------


def fake_client(handler: object, **kw: object) -> LLMClient:
    options: dict[str, object] = {"model": "base-model", "timeout_s": 5.0}
    options.update(kw)
    settings = LLMSettings(base_url="http://llm.test", **options)  # type: ignore[arg-type]
    return LLMClient(settings, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def reply(content: object = "Paris", **message: object) -> dict[str, object]:
    return {
        "model": "served-name",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content, **message}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    }


def sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def chunk(content: str | None = None, finish: str | None = None, **delta: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": content, **delta}, "finish_reason": finish}]}


@pytest.mark.unit
async def test_request_shape_key_adapter_and_defaults() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=reply())

    async with fake_client(handler, api_key=Secret("s3cret"), lora_adapter="fed-adapter", max_tokens=77) as llm:
        result = await llm.chat(HELLO, temperature=0.0, extra_body={"top_k": 5, "model": "ignored"})
    body = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert body == {
        "top_k": 5,
        "model": "fed-adapter",
        "messages": HELLO,
        "max_tokens": 77,
        "temperature": 0.0,
        "stream": False,
    }
    assert (result.content, result.reasoning, result.finish_reason) == ("Paris", None, "stop")
    assert (result.prompt_tokens, result.completion_tokens, result.model) == (12, 3, "served-name")

    async with fake_client(handler) as llm:
        await llm.chat(HELLO)
    assert "authorization" not in seen[1].headers
    assert json.loads(seen[1].content)["model"] == "base-model"


@pytest.mark.unit
def test_reprs_never_show_the_api_key() -> None:
    settings = LLMSettings(base_url="http://llm.test", model="m", api_key=Secret("s3cret-value"))
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)
    assert "s3cret-value" not in repr(LLMClient(settings))


@pytest.mark.unit
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_separate_reasoning_fields_are_read(field: str) -> None:
    async with fake_client(lambda r: httpx.Response(200, json=reply("B", **{field: "thoughts"}))) as llm:
        assert (await llm.chat(HELLO)).reasoning == "thoughts"
    body = sse(chunk(**{field: "th"}), chunk(**{field: "ink"}), chunk("B"), chunk(finish="stop"))
    async with fake_client(lambda r: httpx.Response(200, content=body)) as llm:
        deltas = [d async for d in llm.stream(HELLO)]
    assert [(d.content, d.reasoning, d.finish_reason) for d in deltas] == [
        ("", "th", None),
        ("", "ink", None),
        ("B", "", None),
        ("", "", "stop"),
    ]


@pytest.mark.unit
async def test_stream_skips_comments_events_and_usage_chunks_and_ends_without_done() -> None:
    body = b": keep-alive\n\nevent: message\n" + sse(
        chunk("Par"), {"choices": [], "usage": {}}, chunk("is", "stop"), done=False
    )
    async with fake_client(lambda r: httpx.Response(200, content=body)) as llm:
        deltas = [d async for d in llm.stream(HELLO)]
    assert "".join(d.content for d in deltas) == "Paris" and deltas[-1].finish_reason == "stop"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (
            400,
            {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested 4000"}},
            "llm_context_overflow",
        ),
        (
            400,
            {
                "object": "error",
                "message": "The decoder prompt (length 3000) is longer than the maximum model length of 2048.",
            },
            "llm_context_overflow",
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "request (3031 tokens) exceeds the available context size (2048 tokens)",
                    "type": "exceed_context_size_error",
                }
            },
            "llm_context_overflow",
        ),
        (400, {"error": {"message": "Expected 'messages' to be an array"}}, "llm_error"),
        (404, {"error": {"message": "The model `nope` does not exist."}}, "llm_error"),
        (500, {"error": {"message": "internal: /secret/path/model.gguf exploded"}}, "llm_error"),
        (503, "<html>bad gateway</html>", "llm_error"),
    ],
)
async def test_error_statuses_are_translated(status: int, body: object, code: str) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with fake_client(lambda r: httpx.Response(status, content=content)) as llm:
        with pytest.raises(UpstreamError) as info:
            await llm.chat(HELLO)
        assert info.value.code == code and info.value.status == 502
        if code == "llm_error":
            assert info.value.upstream_status == status
        if status >= 500:
            assert "secret" not in info.value.detail  # a server's internals stay in the log
        with pytest.raises(UpstreamError) as streamed:
            await anext(llm.stream(HELLO))
        assert streamed.value.code == code


@pytest.mark.unit
@pytest.mark.parametrize(
    "content",
    [b"not json", b"[]", b'{"choices": []}', b'{"choices": [{"message": {"content": 42}}]}', b'{"nothing": 1}'],
)
async def test_invalid_replies_are_llm_invalid_reply(content: bytes) -> None:
    async with fake_client(lambda r: httpx.Response(200, content=content)) as llm:
        with pytest.raises(UpstreamError) as info:
            await llm.chat(HELLO)
    assert info.value.code == "llm_invalid_reply"


@pytest.mark.unit
@pytest.mark.parametrize(
    "body", [b"data: {not json}\n\n", b"data: [1, 2]\n\n", b'data: {"choices": [{"delta": {"content": 5}}]}\n\n']
)
async def test_invalid_stream_events_are_llm_invalid_reply(body: bytes) -> None:
    async with fake_client(lambda r: httpx.Response(200, content=body)) as llm:
        with pytest.raises(UpstreamError) as info:
            _ = [d async for d in llm.stream(HELLO)]
    assert info.value.code == "llm_invalid_reply"


@pytest.mark.unit
async def test_error_event_in_the_middle_of_a_stream() -> None:
    error = {"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}
    async with fake_client(lambda r: httpx.Response(200, content=sse(chunk("Pa"), error))) as llm:
        stream = llm.stream(HELLO)
        assert (await anext(stream)).content == "Pa"
        with pytest.raises(UpstreamError) as info:
            await anext(stream)
    assert info.value.code == "llm_error" and info.value.upstream_status == 500


@pytest.mark.unit
async def test_a_dropped_pooled_connection_is_retried_once() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json=reply())

    async with fake_client(flaky) as llm:
        assert (await llm.chat(HELLO)).content == "Paris"
    assert calls == 2

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    async with fake_client(broken) as llm:
        with pytest.raises(UpstreamError) as info:
            await llm.chat(HELLO)
    assert info.value.code == "llm_error"


@pytest.mark.unit
async def test_stream_requests_do_not_reuse_their_connection() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse(chunk("x", "stop")))

    async with fake_client(handler) as llm:
        _ = [d async for d in llm.stream(HELLO)]
    assert seen[0].headers["connection"] == "close"
    assert json.loads(seen[0].content)["stream"] is True
