"""DP answers (model ``fedrag-dp``) through the real gateway, silos and embedded LLM: cost, budgets, no citations."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from federation.config import DPAnswerSettings
from federation.redis_state import RedisState
from federation.secrets import Secret
from federation.services import fedrag_service, free_port
from gateway.redis_stores import RedisPrivacyLedger
from tests.conftest import Federation, RedisServer
from tests.integration.gateway.conftest import gateway_settings

pytestmark = pytest.mark.integration

QUESTION = "How is asthma treated?"


@pytest.fixture(scope="module")
def dp_llm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded LLM server of these tests' own: token-level requests fill its prompt cache, which
    would change what the shared server answers the other tests."""
    port = free_port()
    log = tmp_path_factory.mktemp("dp-llm") / "llm.log"
    with fedrag_service(
        ["llm", "serve", "--port", str(port), "--parallel", "4"],
        f"http://127.0.0.1:{port}/v1/models",
        log=log,
        what="LLM server",
    ):
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def dp_gateway(
    federation: Federation, encoder, silo_transports, llm_url: str, state_url: str | None = None, **dp: object
) -> AsyncIterator[httpx.AsyncClient]:
    from gateway.app import create_app

    settings, key = gateway_settings(federation, llm_url)
    options = {"enabled": True, "voters": 3, "max_tokens": 12, "ledger_file": federation.root / "ledger.db", **dp}
    shared = Secret(state_url) if state_url else None
    settings = settings.model_copy(update={"dp_answer": DPAnswerSettings(**options), "state_url": shared})
    app = create_app(settings, encoder=encoder, silo_transports=silo_transports)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        ) as client,
    ):
        yield client


def _spent(federation: Federation) -> dict[str, float]:
    with sqlite3.connect(federation.root / "ledger.db") as db:
        return {doc: eps for doc, eps in db.execute("SELECT doc_id, epsilon FROM spent")}


async def test_a_dp_answer_reports_its_epsilon_and_charges_the_documents_it_read(
    federation, encoder, silo_transports, dp_llm_url
) -> None:
    async with dp_gateway(federation, encoder, silo_transports, dp_llm_url) as client:
        models = (await client.get("/v1/models")).json()
        assert "fedrag-dp" in {m["id"] for m in models["data"]}
        reply = await client.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        charged_by_ask = _spent(federation)
        chat = await client.post(
            "/v1/chat/completions", json={"model": "fedrag-dp", "messages": [{"role": "user", "content": QUESTION}]}
        )
    assert body["model"] == "fedrag-dp" and body["answer"].strip()
    assert body["citations"] == []  # which passage was read is what the guarantee hides
    privacy = body["privacy"]
    assert privacy["epsilon"] == pytest.approx(2 * (1.0 + 3.0))  # max_paid_tokens * (epsilon_test + epsilon_token)
    # Exactly the documents the answer says it read were charged, each the answer's epsilon, before the reply.
    assert len(charged_by_ask) == privacy["documents_read"] >= 1
    assert all(eps == pytest.approx(8.0) for eps in charged_by_ask.values())
    spent = _spent(federation)  # two answers (ask, chat) of the same question: read once or twice, 8 each time
    assert len(spent) >= privacy["documents_read"]
    assert {round(eps, 6) for eps in spent.values()} <= {8.0, 16.0}
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"].strip()
    assert chat.json()["fedrag_privacy"]["epsilon"] == pytest.approx(8.0)


async def test_a_document_whose_budget_is_spent_is_not_read_again(
    federation, encoder, silo_transports, dp_llm_url
) -> None:
    # The budget pays for exactly one answer per document.
    async with dp_gateway(federation, encoder, silo_transports, dp_llm_url, document_budget=8.0) as client:
        first = (await client.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})).json()["privacy"]
        read_first = set(_spent(federation))
        second = (await client.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})).json()["privacy"]
    spent = _spent(federation)
    assert first["documents_read"] == len(read_first) >= 1
    assert second["documents_left_out"] >= len(read_first)  # the same question finds them first, and leaves them out
    assert set(spent) - read_first  # it read other documents instead
    assert all(eps == pytest.approx(8.0) for eps in spent.values())  # nobody charged twice


async def test_two_gateways_share_the_documents_budgets_through_redis(
    federation, encoder, silo_transports, dp_llm_url, redis_server: RedisServer, redis_state: RedisState
) -> None:
    # The budget pays for one answer per document: what one gateway read, the other must leave out.
    options = {"state_url": redis_server.url, "document_budget": 8.0}
    async with (
        dp_gateway(federation, encoder, silo_transports, dp_llm_url, **options) as first,
        dp_gateway(federation, encoder, silo_transports, dp_llm_url, **options) as second,
    ):
        by_first = (await first.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})).json()["privacy"]
        by_second = (await second.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})).json()
        redis_server.kill()
        down = await first.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})
    assert by_first["documents_read"] >= 1
    assert by_second["privacy"]["documents_left_out"] >= by_first["documents_read"]
    assert not (federation.root / "ledger.db").exists()  # the ledger is in Redis, not in a file of either
    assert down.status_code == 503 and down.json()["code"] == "state_store_unavailable"
    redis_server.start()  # appendfsync always: every charge is still there
    summary = RedisPrivacyLedger(redis_state, budget=8.0).summary()
    read = by_first["documents_read"] + by_second["privacy"]["documents_read"]
    assert summary == {"documents_charged": read, "documents_exhausted": read, "largest_spend": 8.0}


async def test_fedrag_dp_is_unknown_when_dp_answers_are_off(gateway_factory) -> None:
    async with gateway_factory() as client:
        reply = await client.post("/v1/ask", json={"question": QUESTION, "model": "fedrag-dp"})
    assert reply.status_code == 404 and reply.json()["code"] == "model_not_found"
