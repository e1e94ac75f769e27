from __future__ import annotations

import pytest

from federation.errors import AuthenticationFailed, Unavailable
from federation.identity import Identity
from federation.signing import ReplayCache, RequestSigner, RequestVerifier

pytestmark = pytest.mark.unit

BODY = b'{"k": 3}'


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parties() -> dict[str, Identity]:
    return {name: Identity.generate() for name in ("gateway", "silo", "stranger")}


def make_verifier(parties: dict[str, Identity], clock: Clock, audience: str = "silo-a") -> RequestVerifier:
    return RequestVerifier(
        {parties["gateway"].key_id: ("gw", parties["gateway"].public)},
        audience,
        known_but_not_allowed={parties["silo"].key_id: "key of silo 'silo-a'"},
        clock_skew_s=30,
        clock=clock,
    )


def signed(
    identity: Identity, clock: Clock, *, audience: str = "silo-a", body: bytes = BODY, query: str = ""
) -> dict[str, str]:
    return RequestSigner(identity, clock=clock).sign("POST", "/v1/search", query, body, audience)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def reject(
    verifier: RequestVerifier,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = "/v1/search",
    query: str = "",
    body: bytes = BODY,
) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(method, path, query, lower(headers), body)
    assert info.value.status == 401
    return info.value.code


def test_valid_request_identifies_the_gateway(parties: dict[str, Identity]) -> None:
    clock = Clock()
    caller = make_verifier(parties, clock).verify(
        "POST", "/v1/search", "", lower(signed(parties["gateway"], clock)), BODY
    )
    assert caller.name == "gw" and caller.key_id == parties["gateway"].key_id


def test_missing_and_malformed_signatures(parties: dict[str, Identity]) -> None:
    clock = Clock()
    verifier = make_verifier(parties, clock)
    good = signed(parties["gateway"], clock)
    assert reject(verifier, {}) == "signature_missing"
    assert reject(verifier, {**good, "Signature": "fedrag=:not base64!:"}) == "signature_malformed"
    assert (
        reject(verifier, {**good, "Signature-Input": good["Signature-Input"].replace('"@query" ', "")})
        == "signature_malformed"
    )
    assert (
        reject(verifier, {**good, "Signature-Input": good["Signature-Input"].replace("ed25519", "hmac-sha256")})
        == "signature_malformed"
    )


def test_unknown_key_and_silo_key_are_refused(parties: dict[str, Identity]) -> None:
    clock = Clock()
    verifier = make_verifier(parties, clock)
    assert reject(verifier, signed(parties["stranger"], clock)) == "key_unknown"
    assert reject(verifier, signed(parties["silo"], clock)) == "key_not_allowed"


def test_expired_and_future_signatures(parties: dict[str, Identity]) -> None:
    clock = Clock()
    clock.now -= 100
    verifier = make_verifier(parties, clock)  # a silo that has been up for 100 s
    clock.now += 100
    old = signed(parties["gateway"], Clock(clock.now - 31))
    future = signed(parties["gateway"], Clock(clock.now + 31))
    assert reject(verifier, old) == "signature_expired"
    assert reject(verifier, future) == "signature_from_future"
    # inside the window both ways is fine
    verifier.verify("POST", "/v1/search", "", lower(signed(parties["gateway"], Clock(clock.now - 29))), BODY)
    verifier.verify("POST", "/v1/search", "", lower(signed(parties["gateway"], Clock(clock.now + 29))), BODY)


def test_replayed_nonce_is_refused(parties: dict[str, Identity]) -> None:
    clock = Clock()
    verifier = make_verifier(parties, clock)
    headers = signed(parties["gateway"], clock)
    verifier.verify("POST", "/v1/search", "", lower(headers), BODY)
    assert reject(verifier, headers) == "nonce_replayed"


def test_tampering_is_detected(parties: dict[str, Identity]) -> None:
    clock = Clock()
    verifier = make_verifier(parties, clock)
    headers = signed(parties["gateway"], clock, query="a=1")
    assert reject(verifier, headers, query="a=1", body=b'{"k": 4}') == "digest_mismatch"
    tampered_digest = {**headers, "Content-Digest": "sha-256=:" + "A" * 43 + "=:"}
    assert reject(verifier, tampered_digest, query="a=1") == "digest_mismatch"
    assert reject(verifier, headers, query="a=2") == "signature_invalid"
    assert reject(verifier, headers, query="a=1", path="/v1/card") == "signature_invalid"
    assert reject(verifier, headers, query="a=1", method="PUT") == "signature_invalid"
    assert reject(verifier, {**headers, "Fedrag-Audience": "silo-b"}, query="a=1") == "signature_invalid"


def test_signature_for_one_silo_is_refused_by_another(parties: dict[str, Identity]) -> None:
    clock = Clock()
    headers = signed(parties["gateway"], clock, audience="silo-a")
    other = make_verifier(parties, clock, audience="silo-b")
    assert reject(other, headers) == "audience_mismatch"


def test_failed_verification_does_not_burn_the_nonce(parties: dict[str, Identity]) -> None:
    clock = Clock()
    verifier = make_verifier(parties, clock)
    headers = signed(parties["gateway"], clock)
    reject(verifier, headers, body=b"{}")  # tampered body first
    verifier.verify("POST", "/v1/search", "", lower(headers), BODY)  # the genuine request still passes


def test_replay_cache_forgets_expired_nonces_and_refuses_when_full() -> None:
    clock = Clock()
    cache = ReplayCache(ttl_s=10, max_entries=2, clock=clock)
    assert cache.remember("k", "n1") and cache.remember("k", "n2")
    assert not cache.remember("k", "n1")
    with pytest.raises(Unavailable):
        cache.remember("k", "n3")
    clock.now += 11
    assert cache.remember("k", "n3") and len(cache) == 1


def test_signer_repr_hides_key(parties: dict[str, Identity]) -> None:
    signer = RequestSigner(parties["gateway"])
    assert "PRIVATE" not in repr(signer) and parties["gateway"].key_id in repr(signer)
    assert "PRIVATE" not in repr(parties["gateway"])


def test_requests_signed_before_a_restart_are_refused(parties: dict[str, Identity]) -> None:
    clock = Clock()
    headers = signed(parties["gateway"], clock)
    clock.now += 5  # the silo restarts with an empty replay cache 5 s later
    restarted = make_verifier(parties, clock)
    assert reject(restarted, headers) == "signature_expired"
    restarted.verify("POST", "/v1/search", "", lower(signed(parties["gateway"], clock)), BODY)
