"""Model selection by name: the base model, served adapters as fedrag:NAME, the request each one sends."""

from __future__ import annotations

import json

import httpx
import pytest

from federation.config import LLMEndpointSettings
from federation.errors import NotFound
from gateway.llm_client import LLMClient, LLMSettings
from gateway.models import model_names, resolve_model

pytestmark = pytest.mark.unit


def test_names_resolve_to_the_base_model_or_an_adapter_and_unknown_names_are_404() -> None:
    llm = LLMEndpointSettings(adapters=["med", "code"])
    assert model_names(llm) == ["fedrag", "smollm2-135m-instruct", "fedrag:med", "fedrag:code"]
    assert resolve_model(llm, "fedrag:code").adapter == "code"
    assert resolve_model(llm, "med").name == "fedrag:med"
    assert resolve_model(llm, "smollm2-135m-instruct").adapter is None
    assert resolve_model(llm, "fedrag").adapter is resolve_model(llm, None).adapter is None
    for unknown in ("fedrag:typo", "gpt-4o", "FEDRAG"):  # a typo never answers with another model
        with pytest.raises(NotFound, match="fedrag, smollm2-135m-instruct, fedrag:med, fedrag:code") as info:
            resolve_model(llm, unknown)
        assert info.value.status == 404 and info.value.code == "model_not_found"
    default = LLMEndpointSettings(adapters=["med"], lora_adapter="med")
    assert resolve_model(default, None).name == resolve_model(default, "fedrag").name == "fedrag:med"
    assert resolve_model(default, "smollm2-135m-instruct").adapter is None


def test_a_llamacpp_default_adapter_must_be_listed_and_a_vllm_one_is_served_implicitly() -> None:
    with pytest.raises(ValueError, match=r"must be one of llm\.adapters"):
        LLMEndpointSettings(lora_adapter="med")
    assert model_names(LLMEndpointSettings(server="vllm", lora_adapter="med"))[2:] == ["fedrag:med"]
    with pytest.raises(ValueError, match="twice"):
        LLMEndpointSettings(adapters=["med", "med"])


async def test_llamacpp_gets_every_adapters_scale_and_vllm_gets_the_adapter_as_model() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        reply = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x"}}]}
        return httpx.Response(200, json=reply)

    transport = httpx.MockTransport(handler)
    llama = LLMSettings(base_url="http://llm.test", model="base", lora_ids={"med": 0, "code": 1})
    async with LLMClient(llama, transport=transport) as client:
        await client.with_adapter("code").chat([{"role": "user", "content": "hi"}])
        await client.chat([{"role": "user", "content": "hi"}])
    assert seen[0]["model"] == "base" and seen[0]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert seen[1]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]  # the base model, explicitly
    async with LLMClient(LLMSettings(base_url="http://llm.test", model="base"), transport=transport) as client:
        await client.with_adapter("med").chat([{"role": "user", "content": "hi"}])
    assert seen[2]["model"] == "med" and "lora" not in seen[2]
