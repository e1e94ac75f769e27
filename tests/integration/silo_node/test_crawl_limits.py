"""Crawl limits (T2) through the real silo app: a crawling gateway key gets 429, the operator sees the alert."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import httpx
import numpy as np
import pytest
import tomli_w

from federation.client import SiloClient
from federation.errors import UpstreamError
from tests.conftest import OPERATOR_TOKEN, Federation
from tests.integration.silo_node.test_attacks import search_body, send, sign

pytestmark = pytest.mark.integration


def enable_crawl_limits(fed: Federation, **crawl: Any) -> None:
    path = fed.silo_dir() / "silo.toml"
    config = tomllib.loads(path.read_text())
    config["policy"]["crawl"] = {**config["policy"]["crawl"], "enabled": True, **crawl}
    path.write_text(tomli_w.dumps(config))


def metric(text: str, name: str) -> float:
    line = next((ln for ln in text.splitlines() if ln.startswith(name)), None)
    return float(line.split()[-1]) if line is not None else 0.0


async def test_a_crawl_loop_gets_429_with_a_reason_and_the_operator_sees_the_alert(federation, encoder) -> None:
    from silo_node.app import create_app

    enable_crawl_limits(federation, max_distinct_chunks=12, max_distinct_share=1.0)
    app = create_app(federation.silo_dir(), encoder=encoder)
    rng = np.random.default_rng(7)
    statuses: list[int] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        refused = None
        for _ in range(10):  # random directions, five passages each: new chunks every time
            body = search_body(federation, k=5, values=rng.normal(size=384).astype("<f4"))
            reply = await send(transport, sign(federation.gateway, body), body)
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                refused = reply
                break
        assert refused is not None, statuses
        assert statuses[:-1] == [200] * (len(statuses) - 1) and len(statuses) >= 3
        problem = refused.json()
        assert problem["code"] == "crawl_limit" and "cap of 12" in problem["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        async with httpx.AsyncClient(transport=transport, base_url="http://alpha") as http:
            metrics = (await http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})).text
            stats = (await http.get("/v1/admin/stats", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})).json()
        assert metric(metrics, 'fedrag_silo_crawl_refusals_total{reason="crawl_limit"}') == 1.0
        key = federation.gateway.key_id
        assert stats["crawl"]["enabled"] and stats["crawl"]["alerts_in_window"] == {key: {"crawl_limit": 1}}

    audit = (federation.silo_dir() / "audit.jsonl").read_text()
    alerts = [r for r in map(json.loads, audit.splitlines()) if r["event"] == "crawl_alert"]
    assert len(alerts) == 1 and alerts[0]["reason"] == "crawl_limit" and alerts[0]["client_id"] == key
    assert alerts[0]["distinct_cap"] == 12 and alerts[0]["released"] == []
    assert OPERATOR_TOKEN not in audit and "private" not in json.dumps(alerts)

    # The operator's offline view (fedrag silo stats DIR) reads the same alert from the audit log.
    from typer.testing import CliRunner

    from silo_node.cli import app as silo_cli

    result = CliRunner().invoke(silo_cli, ["stats", str(federation.silo_dir())])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["crawl"]["alerts_in_window"] == {key: {"crawl_limit": 1}}

    # A restart does not reset the key's distinct chunks: the next new-chunk search is refused at once.
    restarted = create_app(federation.silo_dir(), encoder=encoder)
    async with restarted.router.lifespan_context(restarted):
        body = search_body(federation, k=5, values=rng.normal(size=384).astype("<f4"))
        again = await send(httpx.ASGITransport(restarted), sign(federation.gateway, body), body)
        assert again.status_code == 429 and again.json()["code"] == "crawl_limit"


async def test_self_queries_are_refused_with_their_own_code(federation, encoder) -> None:
    from silo_node.app import create_app

    enable_crawl_limits(federation, max_self_queries=2, max_distinct_share=1.0, controls=["self_query"])
    app = create_app(federation.silo_dir(), encoder=encoder)
    fingerprint = federation.membership.embedding.fingerprint
    async with app.router.lifespan_context(app):
        service = app.state.service
        ids, vectors = service.store.embeddings(list(range(1, 40)))
        assert len(ids) >= 3
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=httpx.ASGITransport(app)) as c:
            for vector in vectors[:2]:  # a stored chunk's own embedding: a snowball step
                await c.search(vector, 3, fingerprint)
            with pytest.raises(UpstreamError) as info:
                await c.search(vectors[2], 3, fingerprint)
            assert info.value.upstream_status == 429 and info.value.code == "self_query"
            await c.search(vectors[2] + 0.5 * vectors[0], 3, fingerprint)  # not on top of a chunk: served
        assert service.stats()["crawl"]["alerts_in_window"] == {federation.gateway.key_id: {"self_query": 1}}


async def test_a_handful_of_real_questions_is_not_refused(federation, encoder) -> None:
    from silo_node.app import create_app

    enable_crawl_limits(federation, max_distinct_chunks=30, max_distinct_share=1.0, sweep_queries=5)
    questions = [
        "What are the symptoms of asthma?",
        "How is asthma treated with inhalers?",
        "What causes high blood pressure?",
        "How is hypertension diagnosed?",
        "What are the warning signs of a stroke?",
        "How is influenza spread?",
        "When should a migraine be treated?",
        "What does anemia feel like?",
    ]
    vectors = encoder.encode(questions)
    fingerprint = federation.membership.embedding.fingerprint
    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        async with SiloClient("http://alpha", "alpha", federation.signer(), transport=httpx.ASGITransport(app)) as c:
            for vector in [*vectors, *vectors]:  # asked twice, as a busy gateway would
                assert (await c.search(vector, 3, fingerprint)).hits
        assert app.state.service.stats()["crawl"]["alerts_in_window"] == {}
