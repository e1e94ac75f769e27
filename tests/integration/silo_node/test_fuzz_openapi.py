"""Fuzz the silo: schemathesis over its OpenAPI, and hypothesis over signed search bodies. No 5xx."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import OPERATOR_TOKEN

pytestmark = pytest.mark.integration
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def silo(federation, encoder):
    from silo_node.app import create_app

    app = create_app(federation.silo_dir(), encoder=encoder)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def test_no_openapi_input_makes_the_silo_fail(silo) -> None:
    app, _ = silo
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"} if operation.path.startswith("/v1/admin") else {}

        @FUZZ
        @given(case=operation.as_strategy(), headers=st.just(headers))
        def check(case, headers) -> None:
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text[:200]))

        check()
    assert not failures, failures


def _vector(dim: int) -> st.SearchStrategy[dict[str, object]]:
    floats = st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=dim, max_size=dim)
    return floats.map(
        lambda xs: {"rows": 1, "dimension": dim, "data": base64.b64encode(np.asarray(xs, "<f4").tobytes()).decode()}
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def test_no_signed_search_body_makes_the_silo_fail(silo, federation) -> None:
    _, client = silo
    fingerprint = federation.membership.embedding.fingerprint
    bodies = st.fixed_dictionaries(
        {
            "vector": _vector(384) | _vector(3) | JSON,
            "k": st.integers(min_value=-(2**70), max_value=2**70) | JSON,
            "fingerprint": st.just(fingerprint) | JSON,
        },
        optional={"request_id": st.text(max_size=80) | JSON, "extra": JSON},
    )
    statuses: list[int] = []

    @FUZZ
    @given(body=bodies)
    def check(body: dict[str, object]) -> None:
        raw = json.dumps(body).encode()
        headers = federation.signer().sign("POST", "/v1/search", "", raw, "alpha")
        response = client.post("/v1/search", content=raw, headers={**headers, "Content-Type": "application/json"})
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text

    check()
    assert 200 in statuses or 422 in statuses  # the fuzzer got past the signature check
