"""The nonce replay cache in Redis, shared by a silo's workers; Redis failures are 503s; the password stays hidden."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from federation.config import SiloSettings
from federation.errors import ConfigError, StateStoreUnavailable
from federation.identity import Identity
from federation.redis_state import RedisReplayCache, RedisState, redacted_url
from federation.secrets import Secret
from federation.signing import NonceCache, ReplayCache, RequestVerifier
from tests.conftest import RedisServer
from tests.unit.federation.test_signing import BODY, Clock, lower, reject, signed

pytestmark = pytest.mark.unit


@pytest.fixture(params=["memory", "redis"])
def make_cache(request: pytest.FixtureRequest) -> Callable[[float], NonceCache]:
    """Each replay cache, built with a time to live: the same contract for both."""
    if request.param == "memory":
        return lambda ttl_s: ReplayCache(ttl_s, 1000)
    shared: RedisState = request.getfixturevalue("redis_state")
    return lambda ttl_s: RedisReplayCache(shared, "silo-a", ttl_s)


def test_a_nonce_is_accepted_once_until_it_expires(make_cache: Callable[[float], NonceCache]) -> None:
    cache = make_cache(0.3)
    assert cache.remember("k", "n1") and cache.remember("k", "n2") and cache.remember("other-key", "n1")
    assert not cache.remember("k", "n1")
    time.sleep(0.4)  # past the window in which it could be replayed
    assert cache.remember("k", "n1")


def verifier(parties: dict[str, Identity], clock: Clock, cache: NonceCache) -> RequestVerifier:
    trusted = {parties["gateway"].key_id: ("gw", parties["gateway"].public)}
    return RequestVerifier(trusted, "silo-a", clock_skew_s=30, replay_cache=cache, clock=clock)


@pytest.fixture
def parties() -> dict[str, Identity]:
    return {"gateway": Identity.generate()}


def test_a_request_replayed_to_another_worker_is_refused(parties: dict[str, Identity], redis_state: RedisState) -> None:
    clock = Clock()
    first, second = (
        verifier(parties, clock, RedisReplayCache(redis_state, "silo-a", 61, clock=clock)) for _ in range(2)
    )
    headers = signed(parties["gateway"], clock)
    assert first.verify("POST", "/v1/search", "", lower(headers), BODY).name == "gw"
    assert reject(second, headers) == "nonce_replayed"
    assert second.remote and not verifier(parties, clock, ReplayCache(61, 10)).remote
    # Another silo sharing the Redis keeps its own nonces.
    assert RedisReplayCache(redis_state, "silo-b", 61, clock=clock).remember(parties["gateway"].key_id, "n" * 20)


def test_a_new_worker_accepts_recent_signatures_but_not_after_redis_lost_its_data(
    parties: dict[str, Identity], redis_state: RedisState
) -> None:
    clock = Clock()
    first = verifier(parties, clock, RedisReplayCache(redis_state, "silo-a", 61, clock=clock))
    first.verify("POST", "/v1/search", "", lower(signed(parties["gateway"], clock)), BODY)
    early = signed(parties["gateway"], clock)
    clock.now += 5
    late_worker = verifier(parties, clock, RedisReplayCache(redis_state, "silo-a", 61, clock=clock))
    late_worker.verify("POST", "/v1/search", "", lower(early), BODY)  # signed before it started: fine, it is shared
    before_loss = signed(parties["gateway"], clock)
    redis_state.client.flushall()  # Redis restarted without persistence: every nonce forgotten
    clock.now += 1
    assert reject(first, before_loss) == "signature_expired"
    first.verify("POST", "/v1/search", "", lower(signed(parties["gateway"], clock)), BODY)


def test_redis_killed_or_hung_refuses_quickly_with_503(redis_server: RedisServer, redis_state: RedisState) -> None:
    cache = RedisReplayCache(redis_state, "silo-a", 61)
    assert cache.remember("k", "n" * 20)
    redis_server.kill()
    with pytest.raises(StateStoreUnavailable) as info:
        cache.remember("k", "m" * 20)
    assert (info.value.status, info.value.code) == (503, "state_store_unavailable")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        hung = RedisState(Secret(f"redis://127.0.0.1:{port}/0"), namespace="test-fed")
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable):
            RedisReplayCache(hung, "silo-a", 61).remember("k", "n" * 20)
        assert time.monotonic() - started < 2.0  # a short timeout, no retries: never a hang
        hung.close()


def test_the_password_appears_in_no_repr_error_or_log(
    redis_server: RedisServer, redis_state: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    password = redis_server.password
    assert password not in repr(redis_state) and f"127.0.0.1:{redis_server.port}" in repr(redis_state)
    assert redacted_url(redis_server.url) == f"redis://***@127.0.0.1:{redis_server.port}/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted_url("unix:///run/redis.sock?password=hunter2") == "unix:///run/redis.sock"
    with pytest.raises(ConfigError) as info:
        RedisState(Secret(f"redis://:{password}@127.0.0.1:no-port/0"), namespace="test-fed")
    assert password not in str(info.value)
    settings = SiloSettings(
        name="a", federation_file="f.toml", key_file="k.pem", operator_token_sha256="0" * 64, state_url=redis_server.url
    )
    assert password not in repr(settings) and password not in settings.model_dump_json()
    assert settings.state_url is not None and settings.state_url.reveal() == redis_server.url
    redis_server.kill()
    with caplog.at_level(logging.DEBUG), pytest.raises(StateStoreUnavailable) as info:
        RedisReplayCache(redis_state, "silo-a", 61).remember("k", "n" * 20)
    assert password not in str(info.value) and password not in info.value.detail
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "state store redis://***@127.0.0.1" in logged and password not in logged


def test_a_state_url_must_be_a_redis_url_and_the_error_does_not_repeat_it() -> None:
    with pytest.raises(ValueError, match="redis://") as info:
        SiloSettings(
            name="a",
            federation_file="f.toml",
            key_file="k.pem",
            operator_token_sha256="0" * 64,
            state_url="http://user:hunter2@example/0",
        )
    assert "hunter2" not in str(info.value)


def test_a_wrong_password_is_a_503_too(redis_server: RedisServer) -> None:
    wrong = RedisState(Secret(f"redis://:wrong@127.0.0.1:{redis_server.port}/0"), namespace="test-fed")
    with pytest.raises(StateStoreUnavailable):
        RedisReplayCache(wrong, "silo-a", 61).remember("k", "n" * 20)
    wrong.close()
