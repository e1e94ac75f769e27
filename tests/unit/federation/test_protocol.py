from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from federation.protocol import Matrix, SearchRequest

pytestmark = pytest.mark.unit


@given(st.integers(1, 8), st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_matrix_round_trip(rows: int, dim: int, seed: int) -> None:
    array = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    decoded = Matrix.model_validate_json(Matrix.from_numpy(array).model_dump_json()).to_numpy()
    np.testing.assert_array_equal(decoded, array)


def vector_json(values: list[float], dim: int | None = None) -> dict[str, object]:
    raw = np.asarray(values, dtype="<f4").tobytes()
    return {"rows": 1, "dimension": dim or len(values), "data": base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"vector": vector_json([0.1, 0.2], dim=3), "k": 3, "fingerprint": "f"}, "needs"),
        ({"vector": vector_json([float("nan"), 0.2]), "k": 3, "fingerprint": "f"}, "finite"),
        ({"vector": vector_json([float("inf"), 0.2]), "k": 3, "fingerprint": "f"}, "finite"),
        ({"vector": {"rows": 1, "dimension": 2, "data": "!!!"}, "k": 3, "fingerprint": "f"}, "base64"),
        ({"vector": vector_json([0.1, 0.2]), "k": 0, "fingerprint": "f"}, "greater than or equal"),
        ({"vector": vector_json([0.1, 0.2]), "k": -5, "fingerprint": "f"}, "greater than or equal"),
        ({"vector": vector_json([0.1, 0.2]), "k": 10**9, "fingerprint": "f"}, "less than or equal"),
        ({"vector": vector_json([0.1, 0.2]), "k": 3, "fingerprint": "f", "extra": 1}, "Extra inputs"),
        ({"vector": {**vector_json([0.1, 0.2, 0.3, 0.4], dim=2), "rows": 2}, "k": 3, "fingerprint": "f"}, "one row"),
    ],
)
def test_bad_search_requests_are_refused_with_a_reason(payload: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        SearchRequest.model_validate(payload)
    assert reason in str(info.value)
