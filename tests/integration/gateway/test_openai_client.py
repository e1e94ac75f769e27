"""The official `openai` client against a gateway served by uvicorn on loopback; streaming and disconnects."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
import uvicorn

from federation.services import free_port
from tests.integration.gateway.conftest import STREAM_STATE, gateway_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def served_gateway(served_gateway_on, llm_url) -> tuple[str, str]:
    """A gateway on a loopback port using the real embedded LLM."""
    return served_gateway_on(llm_url)


@pytest.fixture
def served_gateway_on(federation, encoder) -> Iterator[Callable[[str], tuple[str, str]]]:
    """Start a gateway (uvicorn, loopback) in front of real silo servers, answering with a given LLM URL."""
    started: list[tuple[list[uvicorn.Server], list[threading.Thread]]] = []

    def start(llm: str) -> tuple[str, str]:
        servers, threads, url_key = _start_gateway(federation, encoder, llm)
        started.append((servers, threads))
        return url_key

    yield start
    for servers, threads in started:
        for server in servers:
            server.should_exit = True
        for thread in threads:
            thread.join(timeout=15)


def _start_gateway(federation, encoder, llm_url):
    from gateway.app import create_app
    from silo_node.app import create_app as create_silo_app

    silo_servers = []
    urls = {}
    for name in ("alpha", "beta"):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_silo_app(federation.silo_dir(name), encoder=encoder),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        silo_servers.append(server)
        urls[name] = f"http://127.0.0.1:{port}"
    membership = federation.membership
    for silo in membership.silos:
        membership = membership.with_silo(silo.model_copy(update={"url": urls[silo.name]}))
    from federation.membership import save_membership

    save_membership(federation.file, membership)
    settings, key = gateway_settings(federation, llm_url)
    settings.llm.max_tokens = 64
    port = free_port()
    gateway = uvicorn.Server(
        uvicorn.Config(create_app(settings, encoder=encoder), host="127.0.0.1", port=port, log_level="warning")
    )
    threads = [threading.Thread(target=s.run, daemon=True) for s in (*silo_servers, gateway)]
    for thread in threads[:-1]:
        thread.start()
    for server in silo_servers:
        _wait(server)
    threads[-1].start()
    _wait(gateway)
    return [gateway, *silo_servers], threads, (f"http://127.0.0.1:{port}", key)


def _wait(server: uvicorn.Server) -> None:
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def test_openai_client_non_streaming(served_gateway) -> None:
    url, key = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    assert client.models.list().data[0].id
    completion = client.chat.completions.create(
        model="fedrag", messages=[{"role": "user", "content": "What causes asthma attacks?"}]
    )
    assert completion.choices[0].message.content
    extra = completion.model_extra or {}
    assert extra["citations"] and extra["fedrag_trace"]["silos"]
    assert any("asthma" in c["doc_id"] for c in extra["citations"])


def test_openai_client_streaming(served_gateway) -> None:
    url, key = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    stream = client.chat.completions.create(
        model="fedrag", messages=[{"role": "user", "content": "What is a migraine?"}], stream=True
    )
    text, final = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if (chunk.model_extra or {}).get("citations"):
            final = chunk
    assert "".join(text).strip()
    assert final is not None and final.model_extra["fedrag_trace"]["request_id"]


def test_openai_client_sees_auth_errors(served_gateway) -> None:
    url, _ = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="fr-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="fedrag", messages=[{"role": "user", "content": "hi"}])


def test_a_client_that_disconnects_mid_stream_cancels_the_work(served_gateway_on, bad_silo_url) -> None:
    url, key = served_gateway_on(f"{bad_silo_url}/endless")
    body = {"model": "fedrag", "stream": True, "messages": [{"role": "user", "content": "What is asthma?"}]}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"content": "word' in line:
                break  # the answer is streaming: hang up
        hung_up = time.monotonic()
    deadline = time.monotonic() + 5
    while "closed" not in STREAM_STATE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "closed" in STREAM_STATE, "the gateway kept the LLM generating for a client that left"
    assert STREAM_STATE["closed"] - hung_up < 3


def test_openai_client_gets_usage_last_and_the_llms_finish_reason(served_gateway) -> None:
    url, key = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    question = [{"role": "user", "content": "What is a migraine?"}]
    chunks = list(
        client.chat.completions.create(
            model="fedrag", messages=question, stream=True, stream_options={"include_usage": True}, temperature=0
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    # Stopped by max_tokens: OpenAI's "length", not "stop".
    short = client.chat.completions.create(model="fedrag", messages=question, max_tokens=12, temperature=0)
    assert short.choices[0].finish_reason == "length"
    # A structured reply cut short is asked once more for the answer alone: usage counts both calls.
    assert short.usage is not None and 0 < short.usage.completion_tokens <= 2 * 12


def test_unknown_models_and_unsupported_options_are_refused_with_a_reason(served_gateway) -> None:
    url, key = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    served = [m.id for m in client.models.list().data]
    assert served[:2] == ["fedrag", "smollm2-135m-instruct"]
    question = [{"role": "user", "content": "What is asthma?"}]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=question)
    assert missing.value.body["code"] == "model_not_found" and "smollm2-135m-instruct" in missing.value.body["detail"]
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="fedrag", messages=question, n=2)
    assert many.value.body["code"] == "unsupported_option" and "n > 1" in many.value.body["detail"]
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="fedrag", messages=question, tools=[tool])  # type: ignore[list-item]
    assert "tools" in tools.value.body["detail"]


BAD_TEXT = [
    ("/v1/chat/completions", '{"model": "fedrag", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "content"),
    (
        "/v1/chat/completions",
        '{"model": "fedrag", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        "text",
    ),
    ("/v1/chat/completions", '{"model": "fed\\u0000rag", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("/v1/ask", '{"question": "What is \\ud83d?"}', "question"),
    ("/v1/ask", '{"question": "Which?", "choices": ["yes", "n\\ud800o"]}', "choices"),
    ("/v1/ask", '{"question": "nul\\u0000byte"}', "question"),
]


def test_text_that_is_not_valid_unicode_is_a_422_naming_the_field(served_gateway) -> None:
    url, key = served_gateway
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for path, body, field in BAD_TEXT:  # lone UTF-16 surrogates (JavaScript strings) and NUL
            reply = http.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
            assert reply.status_code == 422, (body, reply.text)
            assert field in reply.json()["detail"], body
            # The connection stays usable: the next request on it is answered.
            assert http.get("/v1/models").status_code == 200


def test_openai_client_multi_turn_follow_up_is_answered_from_the_conversations_topic(served_gateway) -> None:
    url, key = served_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    messages = [
        {"role": "user", "content": "What is a migraine?"},
        {"role": "assistant", "content": "A migraine is a headache disorder with attacks of throbbing pain."},
        {"role": "user", "content": "How is it treated?"},
    ]
    reply = client.chat.completions.create(model="fedrag", messages=messages, temperature=0)  # type: ignore[arg-type]
    extra = reply.model_extra or {}
    assert extra["fedrag_trace"]["question_from"] in ("llm", "history")
    assert "migraine" in extra["citations"][0]["doc_id"]
