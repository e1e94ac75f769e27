"""The silo's HTTP API in process (the real app, real index, real encoder) through httpx."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from federation.client import SiloClient
from federation.encoder import SentenceTransformerEncoder
from federation.errors import UpstreamError
from federation.protocol import Matrix
from tests.conftest import OPERATOR_TOKEN, Federation

pytestmark = pytest.mark.integration
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def ask(client: SiloClient, encoder: SentenceTransformerEncoder, fed: Federation, text: str, k: int = 3):
    return await client.search(encoder.encode([text])[0], k, fed.membership.embedding.fingerprint)


async def test_signed_search_returns_relevant_passages(alpha_client, encoder, federation) -> None:
    reply = await ask(alpha_client, encoder, federation, "high blood pressure treatment", k=3)
    assert reply.silo == "alpha" and len(reply.hits) == 3
    assert "hypertension" in reply.hits[0].doc_id.lower()
    scores = [h.score for h in reply.hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert all(h.chunk_id.startswith("alpha:") for h in reply.hits)


async def test_pii_in_released_text_is_redacted(alpha_client, encoder, federation) -> None:
    reply = await ask(alpha_client, encoder, federation, "patient note follow-up appointment contact details", k=10)
    released = " ".join(h.text or "" for h in reply.hits)
    assert reply.redactions > 0
    assert "[REDACTED:" in released
    for secret in ("jane.doe@example.org", "7946 0958", "00123456", "12/03/1985"):
        assert secret not in released


async def test_k_is_capped_by_the_release_policy(alpha_client, encoder, federation) -> None:
    reply = await ask(alpha_client, encoder, federation, "disease", k=50)
    assert reply.k_effective == 10 and len(reply.hits) <= 10


async def test_card_has_centroids_and_no_text(alpha_client, federation) -> None:
    card = await alpha_client.card()
    centroids = card.centroids.to_numpy()
    assert card.name == "alpha" and card.chunk_count > 10
    assert centroids.shape[1] == federation.membership.embedding.dimension and 1 <= centroids.shape[0] <= 16
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4)
    assert card.embedding.fingerprint == federation.membership.embedding.fingerprint


async def test_query_from_another_model_is_refused(alpha_client, encoder) -> None:
    with pytest.raises(UpstreamError) as info:
        await alpha_client.search(encoder.encode(["x"])[0], 3, "sha256:some-other-model")
    assert info.value.upstream_status == 409 and info.value.code == "fingerprint_mismatch"


async def test_wrong_dimension_is_refused(alpha_client, federation) -> None:
    with pytest.raises(UpstreamError) as info:
        await alpha_client.search(np.ones(17, dtype=np.float32), 3, federation.membership.embedding.fingerprint)
    assert info.value.upstream_status == 422 and info.value.code == "wrong_dimension"


async def test_zero_vector_is_refused(alpha_client, federation) -> None:
    with pytest.raises(UpstreamError) as info:
        await alpha_client.search(np.zeros(384, dtype=np.float32), 3, federation.membership.embedding.fingerprint)
    assert info.value.upstream_status == 422


async def test_operator_adds_lists_and_deletes_documents(silo_app, alpha_client, encoder, federation) -> None:
    doc = {
        "id": "zebra-fever",
        "title": "Zebra fever",
        "text": "Zebra fever is a fictional illness of striped horses causing purple spots and humming.",
        "metadata": {"specialty": "veterinary"},
    }
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha", headers=OPERATOR) as op:
        added = (await op.post("/v1/admin/documents", json={"documents": [doc]})).json()
        assert added["added"] == 1 and added["chunks"] == 1
        again = (await op.post("/v1/admin/documents", json={"documents": [doc]})).json()
        assert again["unchanged"] == 1 and again["added"] == 0 and again["chunks"] == 0
        reply = await ask(alpha_client, encoder, federation, "striped horses with purple spots", k=1)
        assert reply.hits[0].doc_id == "zebra-fever"
        listed = (await op.get("/v1/admin/documents", params={"limit": 1000})).json()
        assert "zebra-fever" in {d["doc_id"] for d in listed}
        changed = {**doc, "text": "Zebra fever was renamed stripe syndrome; it makes horses sing."}
        assert (await op.post("/v1/admin/documents", json={"documents": [changed]})).json()["updated"] == 1
        reply = await ask(alpha_client, encoder, federation, "striped horses", k=1)
        assert "sing" in (reply.hits[0].text or "")
        deleted = await op.delete("/v1/admin/documents/zebra-fever")
        assert deleted.status_code == 200 and deleted.json()["chunks_removed"] == 1
        reply = await ask(alpha_client, encoder, federation, "striped horses with purple spots", k=10)
        assert "zebra-fever" not in {h.doc_id for h in reply.hits}
        missing = await op.delete("/v1/admin/documents/zebra-fever")
        assert missing.status_code == 404 and missing.json()["code"] == "document_not_found"
        stats = (await op.get("/v1/admin/stats")).json()
        assert stats["documents"] >= 10 and stats["index_vectors"] == stats["chunks"]


async def test_a_replaced_or_deleted_documents_text_leaves_the_silos_memory(
    silo_app, alpha_client, encoder, federation
) -> None:
    service = silo_app.app.state.service
    doc = {
        "id": "zebra-fever",
        "title": "Zebra fever",
        "text": "Zebra fever makes striped horses hum; call 555-123-4567.",
    }

    def chunk_ids() -> set[int]:
        return {c.chunk_id for c in service.store.document_chunks("zebra-fever")}

    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha", headers=OPERATOR) as op:
        await op.post("/v1/admin/documents", json={"documents": [doc]})
        reply = await ask(alpha_client, encoder, federation, "striped horses hum", k=1)
        assert reply.hits[0].doc_id == "zebra-fever" and "555-123-4567" not in (reply.hits[0].text or "")
        first = chunk_ids()
        assert first and first <= service.policy.cached_chunk_ids()  # its redacted form is kept for the next search
        changed = {**doc, "text": "Zebra fever was renamed stripe syndrome; it makes horses sing."}
        await op.post("/v1/admin/documents", json={"documents": [changed]})
        reply = await ask(alpha_client, encoder, federation, "striped horses sing", k=1)
        assert "sing" in (reply.hits[0].text or "")
        second = chunk_ids()
        assert second <= service.policy.cached_chunk_ids() and not first & service.policy.cached_chunk_ids()
        assert (await op.delete("/v1/admin/documents/zebra-fever")).status_code == 200
        assert not second & service.policy.cached_chunk_ids()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "operator_token_missing"),
        ({"Authorization": "Bearer wrong"}, 403, "operator_token_invalid"),
        ({"Authorization": "Basic abc"}, 401, "operator_token_missing"),
    ],
)
async def test_operator_routes_need_the_operator_token(silo_app, federation, headers, status, code) -> None:
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha", headers=headers) as anon:
        for method, path in (
            ("GET", "/v1/admin/stats"),
            ("GET", "/v1/admin/documents"),
            ("DELETE", "/v1/admin/documents/hypertension.md"),
            ("POST", "/v1/admin/documents"),
        ):
            reply = await anon.request(
                method, path, json={"documents": [{"id": "x", "text": "y"}]} if method == "POST" else None
            )
            assert (reply.status_code, reply.json()["code"]) == (status, code), (method, path)
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha", headers=OPERATOR) as op:
        assert (await op.get("/v1/admin/stats")).json()["documents"] >= 10  # nothing was deleted


async def test_the_federation_key_is_not_an_operator_credential(silo_app, federation) -> None:
    headers = federation.signer().sign("GET", "/v1/admin/stats", "", b"", "alpha")
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha") as anon:
        reply = await anon.get("/v1/admin/stats", headers=headers)
    assert reply.status_code == 401


async def test_health_needs_no_credentials_and_metrics_the_operator_token(
    silo_app, alpha_client, encoder, federation
) -> None:
    await ask(alpha_client, encoder, federation, "asthma inhaler")
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha") as anon:
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        assert (await anon.get("/readyz")).status_code == 200
        assert (await anon.get("/metrics")).status_code == 401
        wrong = await anon.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403 and "fedrag_silo" not in wrong.text
        metrics = (await anon.get("/metrics", headers=OPERATOR)).text
    assert "fedrag_silo_search_seconds_count 1.0" in metrics
    assert 'fedrag_silo_requests_total{route="/v1/search",status="200"} 1.0' in metrics


async def test_errors_share_one_shape_and_leak_no_secrets(silo_app, federation) -> None:
    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha") as anon:
        for reply in (await anon.get("/nope"), await anon.post("/v1/search", json={})):
            body = reply.json()
            assert set(body) == {"type", "title", "status", "code", "detail"} and body["status"] == reply.status_code
            assert reply.headers["content-type"].startswith("application/problem+json")
            assert OPERATOR_TOKEN not in json.dumps(body)


async def test_vectors_decode_identically_on_both_sides() -> None:
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    np.testing.assert_array_equal(Matrix.from_numpy(vector).to_numpy()[0], vector)


async def test_the_card_is_built_before_the_silo_reports_ready(federation, encoder) -> None:
    from silo_node.app import create_app

    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        service = app.state.service
        # A gateway's first card request is answered from what start-up built, not computed on its clock.
        assert service._card is not None and service._card[0] == service.index.seq


async def test_the_card_follows_an_ingest_by_another_process_without_a_request(federation, encoder) -> None:
    import asyncio

    from federation.config import load_silo_settings
    from silo_node.app import _keep_card_fresh, create_app
    from silo_node.ingest.readers import make_document
    from silo_node.service import SiloService

    app = create_app(federation.silo_dir(), encoder=encoder)
    async with app.router.lifespan_context(app):
        service = app.state.service
        before = service.card().chunk_count
        other = SiloService(load_silo_settings(federation.silo_dir()), federation.silo_dir(), encoder=encoder).open()
        try:  # what `fedrag silo ingest` does while the silo serves
            doc = make_document(
                "chilblains",
                "Chilblains",
                "Chilblains are itchy swellings of the skin after cold exposure.",
                {},
                source="x",
            )
            other.ingest([doc])
        finally:
            other.close()
        refresher = asyncio.create_task(_keep_card_fresh(service, every_s=0.05))
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if service._card[1].chunk_count > before:  # rebuilt in the background, no request asked
                    break
        finally:
            refresher.cancel()
        assert service._card[1].chunk_count == before + 1
