"""Attacks and bad input against a silo's signed routes: each refused with a 4xx and a reason."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest

from federation.identity import Identity
from federation.signing import RequestSigner
from tests.conftest import OPERATOR_TOKEN, Federation

pytestmark = pytest.mark.integration


def search_body(
    fed: Federation, *, dim: int = 384, k: int = 3, values: np.ndarray | None = None, **extra: object
) -> bytes:
    vector = values if values is not None else np.random.default_rng(0).normal(size=dim).astype("<f4")
    payload = {
        "vector": {"rows": 1, "dimension": dim, "data": base64.b64encode(vector.astype("<f4").tobytes()).decode()},
        "k": k,
        "fingerprint": fed.membership.embedding.fingerprint,
        **extra,
    }
    return json.dumps(payload).encode()


async def send(
    transport: httpx.ASGITransport,
    headers: dict[str, str],
    body: bytes,
    *,
    path: str = "/v1/search",
    method: str = "POST",
    content_type: str = "application/json",
) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, base_url="http://alpha") as http:
        return await http.request(method, path, content=body, headers={"Content-Type": content_type, **headers})


def sign(
    identity: Identity,
    body: bytes,
    *,
    audience: str = "alpha",
    path: str = "/v1/search",
    query: str = "",
    method: str = "POST",
    at: float | None = None,
) -> dict[str, str]:
    clock = (lambda: at) if at is not None else time.time
    return RequestSigner(identity, clock=clock).sign(method, path, query, body, audience)


async def searches_served(transport: httpx.ASGITransport) -> float:
    async with httpx.AsyncClient(transport=transport, base_url="http://alpha") as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})).text
    line = next(ln for ln in text.splitlines() if ln.startswith("fedrag_silo_search_seconds_count"))
    return float(line.split()[-1])


async def audit_records(fed: Federation) -> int:
    path = fed.silo_dir() / "audit.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_attacks_are_refused_with_401_and_nothing_is_searched(silo_app, federation) -> None:
    body = search_body(federation)
    gw = federation.gateway
    good = sign(gw, body)
    cases = {
        "missing signature": ({}, body, "/v1/search", "", "signature_missing"),
        "malformed signature": ({**good, "Signature": "fedrag=abc"}, body, "/v1/search", "", "signature_malformed"),
        "unknown key": (sign(federation.outsider, body), body, "/v1/search", "", "key_unknown"),
        "a silo's key": (sign(federation.silo_beta, body), body, "/v1/search", "", "key_not_allowed"),
        "expired": (sign(gw, body, at=time.time() - 600), body, "/v1/search", "", "signature_expired"),
        "from the future": (sign(gw, body, at=time.time() + 600), body, "/v1/search", "", "signature_from_future"),
        "tampered body": (sign(gw, body), search_body(federation, k=4), "/v1/search", "", "digest_mismatch"),
        "tampered query": (sign(gw, body), body, "/v1/search", "debug=1", "signature_invalid"),
        "for another silo": (sign(gw, body, audience="beta"), body, "/v1/search", "", "audience_mismatch"),
        "tampered path": (sign(gw, b"", path="/v1/search", method="GET"), b"", "/v1/card", "", "signature_invalid"),
    }
    for name, (headers, sent, path, query, code) in cases.items():
        method = "GET" if path == "/v1/card" else "POST"
        target = f"{path}?{query}" if query else path
        reply = await send(silo_app, headers, sent, path=target, method=method)
        assert reply.status_code == 401, name
        assert reply.json()["code"] == code, name
        assert reply.json()["detail"], name
    assert await searches_served(silo_app) == 0
    assert await audit_records(federation) == 0


async def test_a_replayed_request_is_refused(silo_app, federation) -> None:
    body = search_body(federation)
    headers = sign(federation.gateway, body)
    assert (await send(silo_app, headers, body)).status_code == 200
    replay = await send(silo_app, headers, body)
    assert replay.status_code == 401 and replay.json()["code"] == "nonce_replayed"
    assert await searches_served(silo_app) == 1


async def test_a_request_signed_for_silo_beta_is_refused_by_alpha_even_if_fresh(silo_app, federation) -> None:
    body = search_body(federation)
    reply = await send(silo_app, sign(federation.gateway, body, audience="beta"), body)
    assert reply.status_code == 401 and "not to this silo" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("make_body", "status", "needle"),
    [
        (lambda f: search_body(f, dim=17), 422, "dimension"),
        (lambda f: search_body(f, values=np.full(384, np.nan)), 422, "finite"),
        (lambda f: search_body(f, values=np.full(384, np.inf)), 422, "finite"),
        (lambda f: search_body(f).replace(b'"data": "', b'"data": "%%%'), 422, "base64"),
        (lambda f: search_body(f, k=0), 422, "k"),
        (lambda f: search_body(f, k=-3), 422, "k"),
        (lambda f: search_body(f, k=10**12), 422, "k"),
        (lambda f: search_body(f, surprise=True), 422, "surprise"),
        (lambda f: b"{not json", 422, "JSON"),
        (lambda f: b"[]", 422, ""),
    ],
)
async def test_bad_payloads_are_refused_with_a_reason(silo_app, federation, make_body, status, needle) -> None:
    body = make_body(federation)
    reply = await send(silo_app, sign(federation.gateway, body), body)
    assert reply.status_code == status, reply.text
    assert needle.lower() in reply.json()["detail"].lower()
    assert await searches_served(silo_app) == 0


async def test_oversized_body_is_refused(silo_app, federation) -> None:
    body = search_body(federation, padding="x" * 400_000)
    reply = await send(silo_app, sign(federation.gateway, body), body)
    assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"


async def test_oversized_body_without_content_length_is_refused(silo_app, federation) -> None:
    body = search_body(federation, padding="x" * 400_000)

    async def stream():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async with httpx.AsyncClient(transport=silo_app, base_url="http://alpha") as http:
        reply = await http.post("/v1/search", content=stream(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 413


async def test_wrong_content_type_is_refused(silo_app, federation) -> None:
    body = search_body(federation)
    reply = await send(silo_app, sign(federation.gateway, body), body, content_type="text/plain")
    assert reply.status_code in (415, 422) and reply.json()["detail"]


async def test_operator_token_is_not_a_search_credential(silo_app, federation) -> None:
    body = search_body(federation)
    reply = await send(silo_app, {"Authorization": f"Bearer {OPERATOR_TOKEN}"}, body)
    assert reply.status_code == 401
