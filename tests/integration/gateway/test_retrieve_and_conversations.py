"""``POST /v1/retrieve`` (no LLM) and follow-up questions retrieved through the conversation."""

from __future__ import annotations

import pytest

from federation.services import free_port

pytestmark = pytest.mark.integration

FOLLOW_UP = [
    {"role": "user", "content": "What is a migraine?"},
    {"role": "assistant", "content": "A migraine is a headache disorder with attacks of throbbing pain."},
    {"role": "user", "content": "How is it treated?"},
]


def _top_doc(reply: dict) -> str:
    return reply["passages"][0]["doc_id"]


async def test_retrieve_returns_the_released_passages_without_asking_the_llm(gateway_factory) -> None:
    dead_llm = f"http://127.0.0.1:{free_port()}"  # nothing listens: an LLM call would fail the request
    async with gateway_factory(llm=dead_llm) as client:
        reply = await client.post("/v1/retrieve", json={"question": "What triggers asthma attacks?"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["retrieved"] and not body["partial"] and "asthma" in _top_doc(body)
        scores = [p["score"] for p in body["passages"]]
        assert scores == sorted(scores, reverse=True) and [p["number"] for p in body["passages"]] == list(
            range(1, len(scores) + 1)
        )
        assert all(p["silo"] == "alpha" and p["text"] for p in body["passages"])
        assert body["trace"]["generation"] is None and body["trace"]["question_from"] == "request"
        assert {s["silo"] for s in body["trace"]["silos"] if s["outcome"] == "ok"} == {"alpha", "beta"}
        two = (await client.post("/v1/retrieve", json={"question": "What triggers asthma attacks?", "k": 2})).json()
        assert len(two["passages"]) == 2
        for bad in ({}, {"question": "a", "messages": FOLLOW_UP}, {"question": " "}, {"question": "x", "k": 0}):
            refused = await client.post("/v1/retrieve", json=bad)
            assert refused.status_code == 422, bad
        unauthenticated = await client.post(
            "/v1/retrieve", json={"question": "asthma"}, headers={"Authorization": "Bearer fr-wrong"}
        )
        assert unauthenticated.status_code == 401
        metrics = (await client.get("/metrics")).text
        assert 'fedrag_gateway_silo_outcomes_total{outcome="ok",silo="alpha"}' in metrics


async def test_a_follow_up_is_retrieved_through_the_conversation(gateway_factory) -> None:
    dead_llm = f"http://127.0.0.1:{free_port()}"
    async with gateway_factory(llm=dead_llm, conversation={"condense": "off"}) as client:
        alone = (await client.post("/v1/retrieve", json={"messages": FOLLOW_UP})).json()
    # The follow-up alone is not about migraine: this is what the conversation must fix.
    assert "migraine" not in _top_doc(alone) and alone["trace"]["question_from"] == "last_message"
    async with gateway_factory(llm=dead_llm, conversation={"condense": "history"}) as client:
        joined = (await client.post("/v1/retrieve", json={"messages": FOLLOW_UP})).json()
    assert "migraine" in _top_doc(joined) and joined["trace"]["question_from"] == "history"
    # The default asks the LLM; with the LLM down the cheap fallback answers, and the trace says why.
    async with gateway_factory(llm=dead_llm) as client:
        fallback = (await client.post("/v1/retrieve", json={"messages": FOLLOW_UP})).json()
    assert "migraine" in _top_doc(fallback) and fallback["trace"]["question_from"] == "history"
    assert "could not rewrite" in fallback["trace"]["question_note"]


async def test_chat_follow_ups_are_condensed_by_the_llm_and_answered_from_the_right_source(gateway_factory) -> None:
    async with gateway_factory() as client:  # the real embedded LLM rewrites the follow-up
        reply = await client.post("/v1/chat/completions", json={"model": "fedrag", "messages": FOLLOW_UP})
    assert reply.status_code == 200, reply.text
    trace = reply.json()["fedrag_trace"]
    assert trace["question_from"] in ("llm", "history")
    if trace["question_from"] == "llm":
        assert "migraine" in trace["question"].lower() and trace["question"] != FOLLOW_UP[-1]["content"]
    assert "migraine" in reply.json()["citations"][0]["doc_id"]


async def test_a_one_silo_federation_fills_k_not_k_per_silo(gateway_factory, federation) -> None:
    from federation.membership import save_membership

    alpha_only = tuple(s for s in federation.membership.silos if s.name == "alpha")
    federation.membership = federation.membership.model_copy(update={"silos": alpha_only})
    save_membership(federation.file, federation.membership)
    async with gateway_factory(llm=f"http://127.0.0.1:{free_port()}", k=8, k_per_silo=5) as client:
        reply = (await client.post("/v1/retrieve", json={"question": "What triggers asthma attacks?"})).json()
    assert len(reply["passages"]) == 8 and {p["silo"] for p in reply["passages"]} == {"alpha"}
