"""A federated LoRA adapter served by the embedded llama.cpp server answers as the peft model does.

The adapter is random (seeded) and strong enough that greedy answers differ from the base
model's within the first tokens, on q/k/v/o so that the query/key row permutation matters
(exported without it, the answers part from peft's after 5-9 tokens). llama.cpp runs the base
model in Q4_1 with 8-bit activations, HF+peft in fp32: the prompts are ones where the two agree
on all 24 greedy tokens (measured: 6 of the 7 prompts on which this adapter changes the answer;
the seventh parts after 16 tokens at a top-2 logit gap of 0.19).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.llm_server import EmbeddedLLMServer
from tests.conftest import Federation
from tests.integration.gateway.conftest import (  # noqa: F401 (fixtures)
    alpha_search_mode,
    gateway_settings,
    silo_transports,
)

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.integration

SYSTEM = "You are a helpful assistant."
PROMPTS = ("Name three primary colors.", "Explain what a vaccine does in one sentence.", "What does a doctor do?")
TOKENS = 24
B_SCALE = 0.045


@dataclass
class Adapter:
    gguf: Path
    peft_answers: list[str]
    base_answers: list[str]


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Adapter:
    """A seeded random r=8 LoRA on q/k/v/o, its greedy HF answers with and without it, exported to GGUF."""
    from training.base_model import load_base_model
    from training.export import export_llamacpp_lora

    model, tokenizer = load_base_model()
    torch.manual_seed(0)  # lora_A's initialisation
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    adapted = peft.get_peft_model(model, config)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=noise) * B_SCALE)
    adapted.eval()

    def greedy(prompt: str) -> str:
        ids = tokenizer.apply_chat_template(
            _messages(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = adapted.generate(ids, max_new_tokens=TOKENS, do_sample=False)
        return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    peft_answers = [greedy(p) for p in PROMPTS]
    with adapted.disable_adapter():
        base_answers = [greedy(p) for p in PROMPTS]
    root = tmp_path_factory.mktemp("adapter")
    adapted.save_pretrained(root / "peft")
    return Adapter(export_llamacpp_lora(root / "peft", root / "fed.gguf"), peft_answers, base_answers)


@pytest.fixture(scope="module")
def served(adapter: Adapter) -> Iterator[EmbeddedLLMServer]:
    """The embedded server with the base model and the adapter as adapter 0 ("fed")."""
    with EmbeddedLLMServer(ctx=2048, lora_adapters=[("fed", adapter.gguf)]) as server:
        yield server


def _complete(server: EmbeddedLLMServer, prompt: str, lora: list[dict[str, Any]]) -> str:
    body = {"messages": _messages(prompt), "temperature": 0, "max_tokens": TOKENS, "lora": lora}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"]).strip()


def test_the_served_adapter_answers_as_the_peft_model_and_base_requests_stay_the_base_model(
    adapter: Adapter, served: EmbeddedLLMServer
) -> None:
    assert all(a != b for a, b in zip(adapter.peft_answers, adapter.base_answers, strict=True))  # it does change them
    with_adapter, without = [{"id": 0, "scale": 1.0}], [{"id": 0, "scale": 0.0}]
    for prompt, peft_answer, base_answer in zip(PROMPTS, adapter.peft_answers, adapter.base_answers, strict=True):
        assert _complete(served, prompt, with_adapter) == peft_answer
        assert _complete(served, prompt, without) == base_answer  # same prompt, right after: no adapter left over
    assert served.adapter_names == ["fed"]


@pytest.fixture
def llm_url(served: EmbeddedLLMServer) -> str:
    return served.base_url


@pytest.fixture
async def gateway(
    federation: Federation,
    encoder: Any,
    silo_transports: dict[str, httpx.ASGITransport],  # noqa: F811 (the imported fixture)
    llm_url: str,
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose LLM is the served base model plus adapter "fed" (sampling at temperature 0)."""
    from gateway.app import create_app

    settings, key = gateway_settings(
        federation, llm_url, llm={"adapters": ["fed"], "temperature": 0.0, "max_tokens": 96}
    )
    app = create_app(settings, encoder=encoder, silo_transports=silo_transports)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        ) as client,
    ):
        yield client


async def test_the_gateway_answers_with_the_adapter_named_as_model(gateway: httpx.AsyncClient) -> None:
    models = (await gateway.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["fedrag", "smollm2-135m-instruct", "fedrag:fed"]

    async def chat(model: str) -> httpx.Response:
        messages = [{"role": "user", "content": "What causes asthma attacks?"}]
        return await gateway.post("/v1/chat/completions", json={"model": model, "messages": messages})

    base, adapted, base_again = await chat("smollm2-135m-instruct"), await chat("fedrag:fed"), await chat("fedrag")
    assert base.status_code == adapted.status_code == base_again.status_code == 200, adapted.text
    assert adapted.json()["model"] == "fedrag:fed" and base.json()["model"] == "smollm2-135m-instruct"
    answer = [r.json()["choices"][0]["message"]["content"] for r in (base, adapted, base_again)]
    assert answer[1] != answer[0]  # the adapter answers
    assert answer[2] == answer[0]  # and the base model afterwards is the base model again

    ask = await gateway.post("/v1/ask", json={"question": "What causes asthma attacks?", "model": "fedrag:fed"})
    assert ask.status_code == 200 and ask.json()["model"] == "fedrag:fed"
    assert ask.json()["answer"] == answer[1]

    unknown, other = await chat("fedrag:nope"), await chat("gpt-4o")
    assert unknown.status_code == other.status_code == 404
    problem = unknown.json()
    assert problem["code"] == "model_not_found"
    assert "smollm2-135m-instruct" in problem["detail"] and "fedrag:fed" in problem["detail"]
