"""One contract for both per-key rate limiters (in one process, in Redis for several); the settings that pick one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from federation.errors import BudgetExhausted, ConfigError, StateStoreUnavailable
from federation.redis_state import RedisState
from federation.secrets import Secret
from gateway.apikeys import RateLimiter, RequestLimiter
from gateway.cli import settings_with_flags
from gateway.redis_stores import RedisRateLimiter
from tests.conftest import RedisServer
from tests.unit.federation.test_signing import Clock

pytestmark = pytest.mark.unit


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Callable[[int, Clock], RequestLimiter]:
    if request.param == "memory":
        return lambda per_minute, clock: RateLimiter(per_minute, clock=clock)
    shared: RedisState = request.getfixturevalue("redis_state")
    return lambda per_minute, clock: RedisRateLimiter(shared, per_minute, clock=clock)


def refused(limiter: RequestLimiter, key: str) -> BudgetExhausted:
    with pytest.raises(BudgetExhausted) as info:
        limiter.take(key)
    assert info.value.status == 429 and info.value.code == "rate_limited"
    return info.value


def test_a_key_gets_its_limit_then_429_until_the_bucket_refills(
    make_limiter: Callable[[int, Clock], RequestLimiter],
) -> None:
    clock = Clock()
    limiter = make_limiter(3, clock)  # 3 a minute: one more every 20 s
    for _ in range(3):
        limiter.take("alice")
    assert refused(limiter, "alice").retry_after_s == pytest.approx(20.0)
    limiter.take("bob")  # every key has its own bucket
    clock.now += 10
    assert refused(limiter, "alice").retry_after_s == pytest.approx(10.0)  # a refusal spends nothing
    clock.now += 10
    limiter.take("alice")
    refused(limiter, "alice")
    clock.now += 3600  # a full bucket holds no more than the limit
    for _ in range(3):
        limiter.take("alice")
    refused(limiter, "alice")


def test_two_gateway_processes_share_one_limit_in_redis(redis_state: RedisState, redis_server: RedisServer) -> None:
    clock = Clock()
    second_state = RedisState(Secret(redis_server.url), namespace="test-fed")
    first, second = RedisRateLimiter(redis_state, 4, clock=clock), RedisRateLimiter(second_state, 4, clock=clock)
    for limiter in (first, second, first, second):
        limiter.take("alice")
    refused(first, "alice")
    refused(second, "alice")
    other = RedisState(Secret(redis_server.url), namespace="other-fed")
    RedisRateLimiter(other, 4, clock=clock).take("alice")  # another federation's alice has her own
    keys = redis_state.client.keys("fedrag:*")
    assert sorted(keys) == ["fedrag:ratelimit:other-fed:alice", "fedrag:ratelimit:test-fed:alice"]
    redis_server.kill()
    with pytest.raises(StateStoreUnavailable) as info:
        first.take("alice")
    assert info.value.status == 503 and info.value.code == "state_store_unavailable"
    second_state.close()
    other.close()


def test_the_state_url_comes_from_a_flag_or_the_environment_and_stays_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    required = {"federation_file": "f.toml", "key_file": "k.pem"}
    assert settings_with_flags(required, {}).state_url is None  # the default: state in the process
    monkeypatch.setenv("FEDRAG_GATEWAY_STATE_URL", "redis://:hunter2@127.0.0.1:6379/0")
    settings = settings_with_flags(required, {})
    assert settings.state_url is not None and settings.state_url.reveal().endswith("@127.0.0.1:6379/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.model_dump_json()
    flagged = settings_with_flags(required, {"state_url": "redis://127.0.0.1:6380/1"})
    assert flagged.state_url is not None and flagged.state_url.reveal() == "redis://127.0.0.1:6380/1"
    with pytest.raises(ConfigError) as info:
        settings_with_flags(required, {"state_url": "http://:hunter2@x/0"})
    assert "state_url" in str(info.value) and "hunter2" not in str(info.value)
