"""Noisy selection through the real app: noisy picks, per-client budgets (429), an audit trail surviving restarts."""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest
import tomli_w

from federation.client import SiloClient
from federation.errors import UpstreamError
from tests.conftest import Federation

pytestmark = pytest.mark.integration


def enable_noisy_selection(fed: Federation, *, epsilon: float, budget: float) -> None:
    path = fed.silo_dir() / "silo.toml"
    config = tomllib.loads(path.read_text())
    config["policy"]["noisy_selection"] = {
        **config["policy"]["noisy_selection"],
        "enabled": True,
        "epsilon_per_query": epsilon,
        "budget_per_window": budget,
        "window_s": 3600.0,
        "relevance_threshold": 0.0,  # every passage a candidate: the tests count releases, not relevance
    }
    path.write_text(tomli_w.dumps(config))


async def test_budget_is_spent_refused_with_429_and_remembered_after_restart(federation, encoder) -> None:
    from silo_node.app import create_app

    enable_noisy_selection(federation, epsilon=1.0, budget=2.0)
    vector = encoder.encode(["asthma inhaler"])[0]
    fingerprint = federation.membership.embedding.fingerprint
    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=httpx.ASGITransport(app)) as c:
            for _ in range(2):
                reply = await c.search(vector, 5, fingerprint)
                assert reply.epsilon_spent == pytest.approx(1.0) and len(reply.hits) == 5
            with pytest.raises(UpstreamError) as info:
                await c.search(vector, 5, fingerprint)
            assert info.value.upstream_status == 429 and info.value.code == "budget_exhausted"
            assert "budget" in info.value.detail
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://alpha") as raw:
            body = b"{}"
            refused = await raw.post(
                "/v1/search",
                content=body,
                headers={
                    **federation.signer().sign("POST", "/v1/search", "", body, "alpha"),
                    "Content-Type": "application/json",
                },
            )
            assert refused.status_code == 422  # schema first; the budget is checked only for valid searches

    records = [json.loads(line) for line in (federation.silo_dir() / "audit.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["released", "released", "budget_exhausted"]
    assert all(r["client_id"] == federation.gateway.key_id for r in records)
    assert sum(r["epsilon_spent"] for r in records) == pytest.approx(2.0)
    assert all(len(r["released"]) == 5 for r in records[:2]) and "text" not in json.dumps(records)

    restarted = create_app(federation.silo_dir(), encoder=encoder)
    async with restarted.router.lifespan_context(restarted):
        transport = httpx.ASGITransport(restarted)
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=transport) as c:
            with pytest.raises(UpstreamError) as info:
                await c.search(vector, 5, fingerprint)
            assert info.value.upstream_status == 429  # a restart does not refill the budget


async def test_noisy_selection_is_noisy_at_small_epsilon(federation, encoder) -> None:
    from silo_node.app import create_app

    enable_noisy_selection(federation, epsilon=0.5, budget=1000.0)
    vector = encoder.encode(["stroke warning signs"])[0]
    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=transport) as c:
            picks = {
                tuple(h.chunk_id for h in (await c.search(vector, 3, federation.membership.embedding.fingerprint)).hits)
                for _ in range(8)
            }
    assert len(picks) > 1
