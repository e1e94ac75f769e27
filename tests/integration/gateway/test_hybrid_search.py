"""A silo that ranks with BM25 as well as embeddings: rare terms the embedding blurs are found.

Silo alpha searches ``hybrid`` in this module. "denosumab" appears once in the sample data
(in the osteoporosis document); dense search alone puts the asthma document first.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from federation.client import SiloClient
from federation.config import load_silo_settings
from federation.protocol import Matrix
from federation.services import free_port

pytestmark = pytest.mark.integration

RARE_TERM_QUESTION = "What is denosumab used for?"


@pytest.fixture
def alpha_search_mode() -> str:
    return "hybrid"


def _docs(reply: dict) -> list[str]:
    return [p["doc_id"] for p in reply["passages"]]


async def test_a_hybrid_silo_finds_the_rare_term_that_dense_search_misses(gateway_factory) -> None:
    dead_llm = f"http://127.0.0.1:{free_port()}"
    async with gateway_factory(llm=dead_llm) as client:
        hybrid = await client.post("/v1/retrieve", json={"question": RARE_TERM_QUESTION})
        assert hybrid.status_code == 200, hybrid.text
        silos = {s["name"]: s for s in (await client.get("/v1/silos")).json()["silos"]}
    async with gateway_factory(llm=dead_llm, send_question_text=False) as client:
        dense = (await client.post("/v1/retrieve", json={"question": RARE_TERM_QUESTION})).json()
    assert _docs(hybrid.json())[0] == "osteoporosis"
    assert _docs(dense)[0] != "osteoporosis"  # the same silo, given no text, ranks by the embedding alone
    scores = [p["score"] for p in hybrid.json()["passages"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert silos["alpha"]["card"]["search"] == "hybrid" and silos["beta"]["card"]["search"] == "dense"


async def test_the_silo_says_how_it_ranked_and_keeps_the_question_out_of_its_audit_log(
    silo_transports, federation, encoder
) -> None:
    vector = encoder.encode([RARE_TERM_QUESTION])[0]
    fingerprint = federation.membership.embedding.fingerprint
    async with SiloClient("http://alpha", "alpha", federation.signer(), transport=silo_transports["alpha"]) as alpha:
        card = await alpha.card()
        with_text = await alpha.search(vector, 3, fingerprint, request_id="hybrid-1", text=RARE_TERM_QUESTION)
        without = await alpha.search(vector, 3, fingerprint, request_id="hybrid-2")
    signer = federation.signer()
    async with httpx.AsyncClient(transport=silo_transports["alpha"], base_url="http://alpha") as raw:
        for bad in ("a\x00b", "\ud800", "x" * 4001, ""):
            body = json.dumps(
                {"vector": Matrix.from_numpy(vector).model_dump(), "k": 3, "fingerprint": fingerprint, "text": bad}
            ).encode()
            refused = await raw.post(
                "/v1/search",
                content=body,
                headers={**signer.sign("POST", "/v1/search", "", body, "alpha"), "Content-Type": "application/json"},
            )
            assert refused.status_code == 422 and "text" in refused.text, bad
    assert card.search == "hybrid"
    assert with_text.search == "hybrid" and with_text.hits[0].doc_id == "osteoporosis"
    assert without.search == "dense" and without.hits[0].doc_id != "osteoporosis"
    audit = (federation.silo_dir("alpha") / "audit.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in audit.splitlines()]
    assert {"hybrid-1", "hybrid-2"} <= {r.get("request_id") for r in records}
    assert "denosumab" not in audit


async def test_a_lexical_only_silo_returns_only_passages_sharing_a_word(silo_transports, federation, encoder) -> None:
    from silo_node.app import create_app

    del silo_transports  # alpha's in-process app is replaced by a lexical one below
    settings = load_silo_settings(federation.silo_dir("alpha"))
    settings.search.mode = "lexical"
    app = create_app(federation.silo_dir("alpha"), settings, encoder=encoder)
    fingerprint = federation.membership.embedding.fingerprint
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=transport) as alpha:
            vector = encoder.encode(["alendronate"])[0]
            found = await alpha.search(vector, 5, fingerprint, text="alendronate")
            nothing = await alpha.search(vector, 5, fingerprint, text="zzyzx")
    assert found.search == "lexical" and [h.doc_id for h in found.hits] == ["osteoporosis"]
    assert nothing.hits == []
    assert np.isfinite([h.score for h in found.hits]).all()
